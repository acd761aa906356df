package kcache

import (
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/kcache/kcache/index"
	"github.com/kcache/kcache/internal/beneath"
)

// Source says where a kernel's source came from (tarball, git or local).
type Source = index.Source

// Metadata is what the caller of Store says about a kernel; it matches the
// fields of ktstr's metadata.json that the caller (not the cache) decides.
type Metadata struct {
	Version                *string // kernel version, tarball builds
	Source                 Source
	Arch                   string  // x86_64, aarch64, ...
	ImageName              string  // bzImage, Image, ...
	ConfigHash             *string // CRC-32 of the final .config, 8 lowercase hex
	BuiltAt                string  // RFC 3339; stored as YYYY-MM-DDTHH:MM:SSZ
	KconfigHash            *string // CRC-32 of the kconfig fragment, 8 lowercase hex
	SourceVmlinuxSize      *uint64
	SourceVmlinuxMtimeSecs *int64
	// ConfigHZ is CONFIG_HZ from the build's .config, recorded when the
	// vmlinux has no embedded config (IKCONFIG wins when it has one).
	ConfigHZ *uint64
}

// normalizeBuiltAt turns an RFC 3339 time into the fixed 20-byte UTC form
// (YYYY-MM-DDTHH:MM:SSZ) that sorts as text.
func normalizeBuiltAt(s string) (string, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return "", invalidf("built_at %q is not an RFC 3339 time (e.g. 2026-04-18T10:00:00Z): %w", s, err)
	}
	return t.UTC().Format("2006-01-02T15:04:05Z"), nil
}

// check validates the metadata and fills defaults, returning a copy.
func (m Metadata) check(now time.Time) (Metadata, error) {
	if err := ValidateImageName(m.ImageName); err != nil {
		return m, err
	}
	if m.Arch == "" {
		return m, invalidf("metadata: arch is required")
	}
	switch m.Source.Type {
	case "tarball":
		if m.Source.GitHash != nil || m.Source.Ref != nil || m.Source.SourceTreePath != nil {
			return m, invalidf("metadata: a tarball source has no git hash, ref or source tree")
		}
	case "git":
		if m.Source.SourceTreePath != nil {
			return m, invalidf("metadata: a git source has no source tree path (use source type local)")
		}
	case "local":
		if m.Source.Ref != nil {
			return m, invalidf("metadata: a local source has no ref (use source type git)")
		}
	default:
		return m, invalidf("metadata: source type %q is not one of tarball, git, local", m.Source.Type)
	}
	for name, h := range map[string]*string{"config_hash": m.ConfigHash, "kconfig_hash": m.KconfigHash} {
		if h != nil && !validHash8(*h) {
			return m, invalidf("metadata: %s %q is not 8 lowercase hex digits (a CRC-32)", name, *h)
		}
	}
	if (m.SourceVmlinuxSize == nil) != (m.SourceVmlinuxMtimeSecs == nil) {
		return m, invalidf("metadata: source vmlinux size and mtime are set together or not at all")
	}
	if m.BuiltAt == "" {
		m.BuiltAt = now.UTC().Format("2006-01-02T15:04:05Z")
	} else {
		at, err := normalizeBuiltAt(m.BuiltAt)
		if err != nil {
			return m, err
		}
		m.BuiltAt = at
	}
	return m, nil
}

// Entry is a usable cache entry: its record and where its blobs are.
type Entry struct {
	index.Record
	ImagePath   string // the boot image
	VmlinuxPath string // the vmlinux, "" when the entry has none
	Pinned      bool
	PinReason   string // what `kcache pin --reason` said
}

// Kconfig status words, as ktstr's list shows them.
const (
	KconfigMatches   = "matches"
	KconfigStale     = "stale"
	KconfigUntracked = "untracked"
)

// KconfigStatus compares the entry's kconfig hash with current: "" when
// current is "" (nothing to compare with), else matches, stale or untracked
// (the entry recorded no hash; not treated as stale).
func (e *Entry) KconfigStatus(current string) string {
	switch {
	case current == "":
		return ""
	case e.KconfigHash == nil:
		return KconfigUntracked
	case *e.KconfigHash == current:
		return KconfigMatches
	}
	return KconfigStale
}

// entryFrom fills in blob paths and checks that the blobs are there with the
// recorded sizes; a missing or wrong-size blob makes the entry corrupt.
func (c *Cache) entryFrom(rec *index.Record, pin *index.Pin) (*Entry, error) {
	return c.entryFromStat(rec, pin, c.blobs.Stat)
}

// entryFromStat is entryFrom with another way to stat a blob (ListEach's
// directory-relative one); stat must behave as blobstore's Stat.
func (c *Cache) entryFromStat(rec *index.Record, pin *index.Pin, stat func(string) (int64, error)) (*Entry, error) {
	e := &Entry{Record: *rec}
	if rec.Vmlinux != nil {
		e.ImagePath, e.VmlinuxPath = c.blobs.Path2(rec.Image.Digest, rec.Vmlinux.Digest)
	} else {
		e.ImagePath = c.blobs.Path(rec.Image.Digest)
	}
	if pin != nil {
		e.Pinned, e.PinReason = true, pin.Reason
	}
	if m := rec.Corrupt; m != nil {
		return nil, &CorruptError{Key: rec.Key, Kind: m.Kind, Reason: m.Reason + " (found " + m.At + ")"}
	}
	if err := checkBlob(stat, rec.Key, "image", rec.ImageName, rec.Image); err != nil {
		return nil, err
	}
	if rec.Vmlinux != nil {
		if err := checkBlob(stat, rec.Key, "vmlinux", "vmlinux", *rec.Vmlinux); err != nil {
			return nil, err
		}
	}
	return e, nil
}

func checkBlob(stat func(string) (int64, error), key, role, name string, b index.Blob) error {
	size, err := stat(b.Digest)
	switch {
	case errors.Is(err, fs.ErrNotExist): // errors.Is: a symlinked blob counts as missing too
		why := ""
		if errors.Is(err, beneath.ErrSymlink) {
			why = "; the blob path is a symlink, which is never followed"
		}
		return &CorruptError{Key: key, Kind: role + "_missing",
			Reason: fmt.Sprintf("%s file %s missing from the blob store (sha256 %s)%s", role, name, b.Digest, why)}
	case err != nil:
		return &CorruptError{Key: key, Kind: role + "_unreadable",
			Reason: fmt.Sprintf("%s file %s: %v", role, name, err)}
	case size != b.Size:
		return &CorruptError{Key: key, Kind: role + "_size_mismatch",
			Reason: fmt.Sprintf("%s file %s is %d bytes, the index recorded %d (sha256 %s)", role, name, size, b.Size, b.Digest)}
	}
	return nil
}

// corruptFromDecode turns an undecodable index record into a CorruptError.
func corruptFromDecode(key string, err *index.DecodeError) *CorruptError {
	return &CorruptError{Key: key, Kind: err.Kind, Reason: "index record " + err.Detail}
}
