// Package migrate reads the kernel cache of the test tool ktstr (one
// directory per entry with a metadata.json) so
// that kcache can import it. It only reads: it yields parsed legacy entries
// and the caller (kcache.(*Cache).Migrate) stores them and owns the locking
// protocol. It never imports the root package.
//
// Reading follows ktstr exactly where users can observe it:
//
//   - ResolveKtstrRoot is ktstr's root cascade (§3.1): KTSTR_CACHE_DIR
//     verbatim, else $XDG_CACHE_HOME/ktstr/kernels, else
//     $HOME/.cache/ktstr/kernels after ktstr's HOME checks.
//   - ReadLegacy walks the root as ktstr's listing does (§5.2): a missing root
//     is empty; names starting with '.', non-directories (after following
//     symlinks) and non-UTF-8 names are skipped.
//   - Each entry is valid or corrupt with ktstr's reason prefixes and
//     error_kind words (§1.7): missing, unreadable, schema_drift, malformed,
//     truncated, image_missing.
//
// metadata.json is parsed strictly (§1.4): the required fields must be
// present with the right JSON type (null in one is schema_drift; the first
// missing one, in ktstr's field order, is named), optional and payload keys
// may be absent (null), unknown keys are ignored, a duplicated key and an
// unknown source.type are schema_drift. Input that ends inside a value
// (empty, whitespace only, "{", `{"source":`) is truncated; a syntax error or
// trailing data after the document is malformed. Unlike serde, which checks
// syntax and shape in one pass, the syntax of the whole document is checked
// first, so a file with both a shape error and later garbage is malformed
// here (ktstr may call it schema_drift). Contents that are not UTF-8 are
// unreadable, as ktstr's read_to_string makes them.
//
// VmlinuxPath is <dir>/vmlinux when has_vmlinux is true and that file exists
// (symlinks followed) as a regular file; otherwise it is "" and, when
// has_vmlinux was true, VmlinuxMissing is set. ktstr trusts the flag and
// never checks; an importer must not invent a file, so it imports such an
// entry without a vmlinux and says so. A vmlinux present while has_vmlinux
// is false is ignored, as ktstr ignores it.
package migrate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"unicode/utf8"
)

// Corruption classes (error_kind), as ktstr names them.
const (
	KindMissing      = "missing"
	KindUnreadable   = "unreadable"
	KindSchemaDrift  = "schema_drift"
	KindMalformed    = "malformed"
	KindTruncated    = "truncated"
	KindParseError   = "parse_error"
	KindImageMissing = "image_missing"
	KindUnknown      = "unknown"
)

// MetadataFile is the descriptor file in every ktstr entry.
const MetadataFile = "metadata.json"

// Source is metadata.json's "source" object. Type is tarball, git or local;
// payload fields are nil when null or absent.
type Source struct {
	Type           string
	GitHash        *string // git, local
	Ref            *string // git
	SourceTreePath *string // local
}

// Metadata is a parsed metadata.json (ktstr's KernelMetadata, §1.2).
type Metadata struct {
	Version                *string
	Source                 Source
	Arch                   string
	ImageName              string
	ConfigHash             *string
	BuiltAt                string
	KtstrKconfigHash       *string
	HasVmlinux             bool
	VmlinuxStripped        bool
	SourceVmlinuxSize      *uint64
	SourceVmlinuxMtimeSecs *int64
}

// Corrupt says why an entry cannot be used: Kind is the error_kind word and
// Reason the full ktstr-style reason (its prefix encodes Kind).
type Corrupt struct {
	Kind   string
	Reason string
}

// LegacyEntry is one directory of a ktstr cache.
type LegacyEntry struct {
	Key string // the directory name
	Dir string // <root>/<key>, joined, not canonicalised
	// Metadata is nil when the metadata did not parse; set (with Corrupt)
	// when only the image is missing.
	Metadata *Metadata
	// ImagePath is <dir>/<image_name> when Corrupt is nil.
	ImagePath string
	// VmlinuxPath is <dir>/vmlinux when has_vmlinux is true and the file
	// exists; "" otherwise.
	VmlinuxPath string
	// VmlinuxMissing: has_vmlinux is true but <dir>/vmlinux is not a file.
	VmlinuxMissing bool
	Corrupt        *Corrupt // nil for a valid entry
}

// LockPath returns ktstr's lock file for key under root:
// <root>/.locks/<key>.lock (§6.1). Only the path; nothing is created.
func LockPath(root, key string) string {
	return filepath.Join(root, ".locks", key+".lock")
}

// StagingPath returns the directory ktstr stages an entry of key in when
// this process writes it: <root>/.tmp-<key>-<pid> (§4.1). ktstr's listing
// never reads it and its orphan sweep (§7) removes it once the process is
// dead. Only the path; nothing is created.
func StagingPath(root, key string) string {
	return filepath.Join(root, fmt.Sprintf(".tmp-%s-%d", key, os.Getpid()))
}

// ErrRoot is matched by every root-resolution error.
var ErrRoot = errors.New("cannot resolve the ktstr cache root")

// ResolveKtstrRoot finds ktstr's kernel cache without touching the
// filesystem (§3.1).
func ResolveKtstrRoot() (string, error) {
	if v, ok := os.LookupEnv("KTSTR_CACHE_DIR"); ok && v != "" {
		if !utf8.ValidString(v) {
			return "", fmt.Errorf("%w: KTSTR_CACHE_DIR is non-UTF-8 (%d bytes: %q); set it to a UTF-8 path or unset it", ErrRoot, len(v), v)
		}
		return v, nil
	}
	if v := os.Getenv("XDG_CACHE_HOME"); v != "" && utf8.ValidString(v) {
		return filepath.Join(v, "ktstr", "kernels"), nil
	}
	home, ok := os.LookupEnv("HOME")
	bypass := "set KTSTR_CACHE_DIR to the ktstr cache directory, or XDG_CACHE_HOME (ktstr's cache is then $XDG_CACHE_HOME/ktstr/kernels), or name the source directory explicitly"
	switch {
	case !ok || !utf8.ValidString(home):
		return "", fmt.Errorf("%w: HOME is unset, so ktstr's default cache $HOME/.cache/ktstr/kernels is unknown; %s", ErrRoot, bypass)
	case home == "":
		return "", fmt.Errorf("%w: HOME is set to the empty string, so ktstr's default cache $HOME/.cache/ktstr/kernels is unknown; %s", ErrRoot, bypass)
	case home == "/":
		return "", fmt.Errorf("%w: HOME is `/`, which would put ktstr's cache at /.cache/ktstr at the filesystem root; %s", ErrRoot, bypass)
	case !strings.HasPrefix(home, "/"):
		return "", fmt.Errorf("%w: HOME is %q, which is not an absolute path; %s", ErrRoot, home, bypass)
	}
	return filepath.Join(home, ".cache", "ktstr", "kernels"), nil
}

// ReadLegacy lists every entry under root, valid ones by key, as ktstr's
// listing finds them (§5.2). A missing root is an empty cache; failing to
// read the root is an error. Corrupt entries are returned with Corrupt set.
// Entries are in key order (ktstr's order is unspecified).
func ReadLegacy(root string) ([]LegacyEntry, error) {
	keys, err := ListKeys(root)
	if err != nil {
		return nil, err
	}
	out := make([]LegacyEntry, 0, len(keys))
	for _, k := range keys {
		out = append(out, ReadEntry(root, k))
	}
	return out, nil
}

// ListKeys returns the entry directory names under root that ktstr's
// listing would read, in byte order.
func ListKeys(root string) ([]string, error) {
	ents, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read ktstr cache %s: %w", root, err)
	}
	var keys []string
	for _, d := range ents {
		name := d.Name()
		if strings.HasPrefix(name, ".") { // .locks, .tmp-*, other bookkeeping
			continue
		}
		fi, err := os.Stat(filepath.Join(root, name)) // follows symlinks
		if err != nil || !fi.IsDir() {
			continue
		}
		if !utf8.ValidString(name) {
			continue
		}
		keys = append(keys, name)
	}
	sort.Strings(keys)
	return keys, nil
}

// ReadEntry reads and classifies the entry <root>/<key>. It does not check
// that the directory exists: a missing one is corrupt (missing), as ktstr's
// metadata read would make it.
func ReadEntry(root, key string) LegacyEntry {
	e := LegacyEntry{Key: key, Dir: filepath.Join(root, key)}
	data, err := os.ReadFile(filepath.Join(e.Dir, MetadataFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		e.Corrupt = &Corrupt{KindMissing, "metadata.json missing"}
		return e
	case err != nil:
		e.Corrupt = &Corrupt{KindUnreadable, "metadata.json unreadable: " + osErrText(err)}
		return e
	}
	m, c := ParseMetadata(data)
	if c != nil {
		e.Corrupt = c
		return e
	}
	e.Metadata = m
	image := filepath.Join(e.Dir, m.ImageName)
	if _, err := os.Stat(image); err != nil { // any failure: ktstr's exists() is false
		e.Corrupt = &Corrupt{KindImageMissing, fmt.Sprintf("image file %s missing from entry directory", m.ImageName)}
		return e
	}
	e.ImagePath = image
	if m.HasVmlinux {
		v := filepath.Join(e.Dir, "vmlinux")
		if fi, err := os.Stat(v); err == nil && fi.Mode().IsRegular() {
			e.VmlinuxPath = v
		} else {
			e.VmlinuxMissing = true
		}
	}
	return e
}

// osErrText is the OS error without Go's "op path:" prefix, like Rust's
// io::Error display.
func osErrText(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// ClassifyReason derives error_kind from a reason string (§1.7).
func ClassifyReason(reason string) string {
	if reason == "metadata.json missing" {
		return KindMissing
	}
	for _, p := range []struct{ prefix, kind string }{
		{"metadata.json unreadable: ", KindUnreadable},
		{"metadata.json schema drift: ", KindSchemaDrift},
		{"metadata.json malformed: ", KindMalformed},
		{"metadata.json truncated: ", KindTruncated},
		{"metadata.json parse error: ", KindParseError},
	} {
		if strings.HasPrefix(reason, p.prefix) {
			return p.kind
		}
	}
	if strings.HasPrefix(reason, "image file ") && strings.Contains(reason, "missing") {
		return KindImageMissing
	}
	return KindUnknown
}

func drift(format string, args ...any) *Corrupt {
	return &Corrupt{KindSchemaDrift, "metadata.json schema drift: " + fmt.Sprintf(format, args...)}
}

// ParseMetadata parses metadata.json strictly. It returns the metadata, or
// the corruption class and reason.
func ParseMetadata(data []byte) (*Metadata, *Corrupt) {
	if !utf8.Valid(data) {
		return nil, &Corrupt{KindUnreadable, "metadata.json unreadable: stream did not contain valid UTF-8"}
	}
	// Syntax first: one complete JSON value, then only whitespace.
	dec := json.NewDecoder(bytes.NewReader(data))
	var doc json.RawMessage
	if err := dec.Decode(&doc); err != nil {
		var se *json.SyntaxError
		switch {
		case errors.Is(err, io.EOF):
			return nil, &Corrupt{KindTruncated, "metadata.json truncated: EOF while parsing a value (the file is empty or only whitespace)"}
		case errors.Is(err, io.ErrUnexpectedEOF):
			return nil, &Corrupt{KindTruncated, fmt.Sprintf("metadata.json truncated: EOF while parsing a value at byte %d", len(data))}
		case errors.As(err, &se):
			return nil, &Corrupt{KindMalformed, fmt.Sprintf("metadata.json malformed: %v at byte %d", se, se.Offset)}
		}
		return nil, &Corrupt{KindParseError, "metadata.json parse error: " + err.Error()}
	}
	if rest := bytes.TrimLeft(data[dec.InputOffset():], " \t\r\n"); len(rest) != 0 {
		return nil, &Corrupt{KindMalformed, fmt.Sprintf("metadata.json malformed: trailing characters at byte %d", len(data)-len(rest))}
	}
	fields, c := objectFields(doc, "struct KernelMetadata")
	if c != nil {
		return nil, c
	}
	m := &Metadata{}
	seen := map[string]bool{}
	for _, f := range fields {
		var err error
		switch f.key {
		case "version":
			err = optional(f, &m.Version)
		case "source":
			if isNull(f.raw) {
				return nil, drift("invalid type: null, expected internally tagged enum KernelSource for `source`")
			}
			var c *Corrupt
			if m.Source, c = parseSource(f.raw); c != nil {
				return nil, c
			}
		case "arch":
			err = required(f, &m.Arch)
		case "image_name":
			err = required(f, &m.ImageName)
		case "config_hash":
			err = optional(f, &m.ConfigHash)
		case "built_at":
			err = required(f, &m.BuiltAt)
		case "ktstr_kconfig_hash":
			err = optional(f, &m.KtstrKconfigHash)
		case "has_vmlinux":
			err = required(f, &m.HasVmlinux)
		case "vmlinux_stripped":
			err = required(f, &m.VmlinuxStripped)
		case "source_vmlinux_size":
			err = optional(f, &m.SourceVmlinuxSize)
		case "source_vmlinux_mtime_secs":
			err = optional(f, &m.SourceVmlinuxMtimeSecs)
		default:
			continue // unknown keys are ignored
		}
		if err != nil {
			return nil, drift("%v", err)
		}
		if seen[f.key] {
			return nil, drift("duplicate field `%s`", f.key)
		}
		seen[f.key] = true
	}
	for _, k := range []string{"source", "arch", "image_name", "built_at", "has_vmlinux", "vmlinux_stripped"} {
		if !seen[k] {
			return nil, drift("missing field `%s`", k)
		}
	}
	return m, nil
}

type field struct {
	key string
	raw json.RawMessage
}

// objectFields splits a syntactically valid JSON value that must be an
// object into its members, in document order (duplicates kept).
func objectFields(doc json.RawMessage, expected string) ([]field, *Corrupt) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	tok, err := dec.Token()
	if err != nil {
		return nil, &Corrupt{KindParseError, "metadata.json parse error: " + err.Error()}
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, drift("invalid type: %s, expected %s", describe(doc), expected)
	}
	var out []field
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, &Corrupt{KindParseError, "metadata.json parse error: " + err.Error()}
		}
		key, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, &Corrupt{KindParseError, "metadata.json parse error: " + err.Error()}
		}
		out = append(out, field{key, raw})
	}
	return out, nil
}

// describe names a JSON value's type the way serde's errors do.
func describe(raw json.RawMessage) string {
	s := bytes.TrimSpace(raw)
	if len(s) == 0 {
		return "nothing"
	}
	switch s[0] {
	case 'n':
		return "null"
	case 't', 'f':
		return "boolean `" + string(s) + "`"
	case '"':
		return "string " + string(s)
	case '[':
		return "sequence"
	case '{':
		return "map"
	}
	return "number " + string(s)
}

func isNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

// required decodes a field that must be present and non-null into *T, with
// no conversions: a JSON string for a string, a boolean for a bool.
func required[T string | bool](f field, dst *T) error {
	var want string
	switch any(dst).(type) {
	case *string:
		want = "a string"
	case *bool:
		want = "a boolean"
	}
	if isNull(f.raw) {
		return fmt.Errorf("invalid type: null, expected %s for `%s`", want, f.key)
	}
	if err := json.Unmarshal(f.raw, dst); err != nil {
		return fmt.Errorf("invalid type: %s, expected %s for `%s`", describe(f.raw), want, f.key)
	}
	return nil
}

// optional decodes a field that may be null into *T (nil when null).
// Numbers must be integers in range: a negative or fractional size is a
// type error, as in serde.
func optional[T string | uint64 | int64](f field, dst **T) error {
	if isNull(f.raw) {
		*dst = nil
		return nil
	}
	var v T
	var want string
	switch any(&v).(type) {
	case *string:
		want = "a string or null"
	case *uint64:
		want = "an unsigned 64-bit integer or null"
	case *int64:
		want = "a signed 64-bit integer or null"
	}
	if err := json.Unmarshal(f.raw, &v); err != nil {
		return fmt.Errorf("invalid type: %s, expected %s for `%s`", describe(f.raw), want, f.key)
	}
	*dst = &v
	return nil
}

// parseSource parses the internally tagged source object (§1.3).
func parseSource(raw json.RawMessage) (Source, *Corrupt) {
	fields, c := objectFields(raw, "internally tagged enum KernelSource for `source`")
	if c != nil {
		return Source{}, c
	}
	var s Source
	var typ *string
	for _, f := range fields {
		if f.key == "type" {
			if typ != nil {
				return Source{}, drift("duplicate field `type` in `source`")
			}
			var t string
			if err := required(f, &t); err != nil {
				return Source{}, drift("%v in `source`", err)
			}
			typ = &t
		}
	}
	if typ == nil {
		return Source{}, drift("missing field `type` in `source`")
	}
	s.Type = *typ
	var payload []string
	switch s.Type {
	case "tarball":
	case "git":
		payload = []string{"git_hash", "ref"}
	case "local":
		payload = []string{"source_tree_path", "git_hash"}
	default:
		return Source{}, drift("unknown variant `%s`, expected one of `tarball`, `git`, `local` in `source`", s.Type)
	}
	seen := map[string]bool{}
	for _, f := range fields {
		var dst **string
		switch {
		case f.key == "git_hash" && len(payload) > 0:
			dst = &s.GitHash
		case f.key == "ref" && s.Type == "git":
			dst = &s.Ref
		case f.key == "source_tree_path" && s.Type == "local":
			dst = &s.SourceTreePath
		default:
			continue // other variants' keys and unknown keys are ignored
		}
		if seen[f.key] {
			return Source{}, drift("duplicate field `%s` in `source`", f.key)
		}
		seen[f.key] = true
		if err := optional(f, dst); err != nil {
			return Source{}, drift("%v in `source`", err)
		}
	}
	return s, nil
}
