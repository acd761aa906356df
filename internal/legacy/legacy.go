// Package legacy is ktstr's per-directory kernel cache layout, kept only as
// the baseline that kcache's benchmarks (bench_test.go, BENCHMARKS.md) are
// measured against. It is not used by kcache and is not the migrate reader.
//
// It was written from a description of ktstr's behaviour (data model,
// validation, store, lookup and list, lock placement, orphan sweep), not
// copied from ktstr. One entry is a
// directory <root>/<key>/ holding the boot image, an optional vmlinux and a
// pretty-printed metadata.json. Deliberate differences from ktstr, all to make
// the comparison fair or the code short:
//
//   - Store fsyncs every file it writes, the staging directory and the root
//     after the rename (ktstr fsyncs nothing; §4.2 allows it). kcache fsyncs,
//     so a baseline without fsyncs would compare durability, not layouts.
//   - vmlinux is copied raw (no strip pipeline); kcache's Store copies raw too.
//   - The entry lock is a blocking flock, not a 60 s poll; nothing contends
//     in the benchmarks. Read-side shape checks are reduced to the required
//     string fields; corrupt entries are classified only coarsely.
package legacy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/kcache/kcache/internal/fsync"
	"github.com/kcache/kcache/migrate"
	"golang.org/x/sys/unix"
)

// ErrNotFound: no usable entry under the key (ktstr folds every lookup
// failure into "not found", §5.1).
var ErrNotFound = errors.New("legacy: not found")

// Source is metadata.json's "source" object; JSON always carries every
// payload key of its variant, null when unset (§1.3).
type Source struct {
	Type           string  // tarball, git, local
	GitHash        *string // git, local
	Ref            *string // git
	SourceTreePath *string // local
}

// MarshalJSON writes the variant's keys in ktstr's order
// (migrate.Source's writer).
func (s Source) MarshalJSON() ([]byte, error) { return migrate.Source(s).MarshalJSON() }

// UnmarshalJSON reads any variant; absent payload keys stay nil.
func (s *Source) UnmarshalJSON(b []byte) error {
	var w struct {
		Type           string  `json:"type"`
		GitHash        *string `json:"git_hash"`
		Ref            *string `json:"ref"`
		SourceTreePath *string `json:"source_tree_path"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	switch w.Type {
	case "tarball", "git", "local":
	default:
		return fmt.Errorf("unknown source type %q", w.Type)
	}
	*s = Source{w.Type, w.GitHash, w.Ref, w.SourceTreePath}
	return nil
}

// Metadata is metadata.json, fields in the order ktstr writes them (§1.2).
// Its tags are for reading: Lookup and List parse with json.Unmarshal, as
// lax and as fast as ktstr's serde reader, not with migrate's strict parser,
// so the baseline is not slowed by checks ktstr does not make. Writing goes
// through MarshalMetadata.
type Metadata struct {
	Version                *string `json:"version"`
	Source                 Source  `json:"source"`
	Arch                   string  `json:"arch"`
	ImageName              string  `json:"image_name"`
	ConfigHash             *string `json:"config_hash"`
	BuiltAt                string  `json:"built_at"`
	KtstrKconfigHash       *string `json:"ktstr_kconfig_hash"`
	HasVmlinux             bool    `json:"has_vmlinux"`
	VmlinuxStripped        bool    `json:"vmlinux_stripped"`
	SourceVmlinuxSize      *uint64 `json:"source_vmlinux_size"`
	SourceVmlinuxMtimeSecs *int64  `json:"source_vmlinux_mtime_secs"`
}

// MarshalMetadata returns m as ktstr writes metadata.json
// (migrate.MarshalMetadata, the one writer of that format).
func MarshalMetadata(m Metadata) ([]byte, error) {
	return migrate.MarshalMetadata(&migrate.Metadata{
		Version: m.Version, Source: migrate.Source(m.Source), Arch: m.Arch,
		ImageName: m.ImageName, ConfigHash: m.ConfigHash, BuiltAt: m.BuiltAt,
		KtstrKconfigHash: m.KtstrKconfigHash, HasVmlinux: m.HasVmlinux,
		VmlinuxStripped: m.VmlinuxStripped, SourceVmlinuxSize: m.SourceVmlinuxSize,
		SourceVmlinuxMtimeSecs: m.SourceVmlinuxMtimeSecs,
	})
}

// Entry is a usable cache entry; Path is <root>/<key>.
type Entry struct {
	Key, Path string
	Meta      Metadata
}

// ImagePath is the boot image inside the entry.
func (e *Entry) ImagePath() string { return filepath.Join(e.Path, e.Meta.ImageName) }

// Listed is a List row: Entry, or a Corrupt reason.
type Listed struct {
	Key     string
	Entry   *Entry
	Corrupt string
}

func validateKey(key string) error {
	switch {
	case strings.TrimSpace(key) == "", strings.ContainsAny(key, `/\`), key == ".", key == "..",
		strings.Contains(key, ".."), strings.ContainsRune(key, 0), strings.HasPrefix(key, ".tmp-"):
		return fmt.Errorf("invalid cache key %q", key)
	}
	return nil
}

// Store copies image (and vmlinux when not "") into <root>/<key>, replacing
// any entry there atomically (§4.1).
func Store(root, key, imagePath, vmlinuxPath string, meta Metadata) (*Entry, error) {
	if err := validateKey(key); err != nil {
		return nil, err
	}
	if n := meta.ImageName; n == "" || strings.ContainsAny(n, "/\\\x00") || strings.Contains(n, "..") {
		return nil, fmt.Errorf("invalid image name %q", n)
	}
	if err := os.MkdirAll(filepath.Join(root, ".locks"), 0o755); err != nil {
		return nil, err
	}
	lk, err := os.OpenFile(migrate.LockPath(root, key), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, err
	}
	defer lk.Close() // closing the descriptor drops the flock
	if err := unix.Flock(int(lk.Fd()), unix.LOCK_EX); err != nil {
		return nil, fmt.Errorf("flock %s: %w", lk.Name(), err)
	}
	staging := migrate.StagingPath(root, key)
	if err := os.RemoveAll(staging); err != nil {
		return nil, err
	}
	sweepOrphans(root)
	if err := os.MkdirAll(staging, 0o755); err != nil {
		return nil, err
	}
	defer os.RemoveAll(staging)
	if err := copyFile(imagePath, filepath.Join(staging, meta.ImageName)); err != nil {
		return nil, fmt.Errorf("copy kernel image to cache: %w", err)
	}
	meta.HasVmlinux, meta.VmlinuxStripped = vmlinuxPath != "", false
	if vmlinuxPath != "" {
		if err := copyFile(vmlinuxPath, filepath.Join(staging, "vmlinux")); err != nil {
			return nil, fmt.Errorf("copy vmlinux to cache: %w", err)
		}
	}
	data, err := MarshalMetadata(meta)
	if err != nil {
		return nil, err
	}
	if err := fsync.WriteNew(filepath.Join(staging, "metadata.json"), bytes.NewReader(data), 0o644); err != nil {
		return nil, err
	}
	if err := fsync.Dir(staging); err != nil {
		return nil, err
	}
	final := filepath.Join(root, key)
	if err := os.Rename(staging, final); err != nil {
		if !errors.Is(err, unix.ENOTEMPTY) && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("atomic rename cache entry: %w", err)
		}
		// The old entry lands in staging; the deferred RemoveAll deletes it.
		if err := unix.Renameat2(unix.AT_FDCWD, staging, unix.AT_FDCWD, final, unix.RENAME_EXCHANGE); err != nil {
			return nil, fmt.Errorf("exchange %s and %s: %w", staging, final, err)
		}
	}
	if err := fsync.Dir(root); err != nil {
		return nil, err
	}
	return &Entry{Key: key, Path: final, Meta: meta}, nil
}

// sweepOrphans removes .tmp-<key>-<pid> directories of dead processes (§7).
func sweepOrphans(root string) {
	ents, _ := os.ReadDir(root)
	for _, e := range ents {
		name := e.Name()
		i := strings.LastIndexByte(name, '-')
		if !strings.HasPrefix(name, ".tmp-") || i < 0 {
			continue
		}
		pid, err := strconv.ParseInt(name[i+1:], 10, 32)
		if err != nil || pid <= 0 || unix.Kill(int(pid), 0) != unix.ESRCH {
			continue
		}
		if fi, err := os.Lstat(filepath.Join(root, name)); err == nil && fi.IsDir() {
			_ = os.RemoveAll(filepath.Join(root, name))
		}
	}
}

// Lookup reads <root>/<key>/metadata.json and checks the image is there (§5.1).
func Lookup(root, key string) (*Entry, error) {
	if validateKey(key) != nil {
		return nil, ErrNotFound
	}
	e, reason := readEntry(root, key)
	if reason != "" {
		return nil, fmt.Errorf("%w: %s: %s", ErrNotFound, key, reason)
	}
	return e, nil
}

func readEntry(root, key string) (*Entry, string) {
	dir := filepath.Join(root, key)
	data, err := os.ReadFile(filepath.Join(dir, "metadata.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, "metadata.json missing"
	} else if err != nil {
		return nil, "metadata.json unreadable: " + err.Error()
	}
	e := &Entry{Key: key, Path: dir}
	if err := json.Unmarshal(data, &e.Meta); err != nil {
		return nil, "metadata.json malformed: " + err.Error()
	}
	if e.Meta.Source.Type == "" || e.Meta.Arch == "" || e.Meta.ImageName == "" || e.Meta.BuiltAt == "" {
		return nil, "metadata.json schema drift: a required field is missing"
	}
	if _, err := os.Stat(e.ImagePath()); err != nil {
		return nil, fmt.Sprintf("image file %s missing from entry directory", e.Meta.ImageName)
	}
	return e, ""
}

// List returns every entry under root: usable ones newest built_at first
// (ties by key), then corrupt ones (§5.2). A missing root lists as empty.
func List(root string) ([]Listed, error) {
	ents, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	var out []Listed
	for _, d := range ents {
		name := d.Name()
		if strings.HasPrefix(name, ".") {
			continue
		}
		if !d.IsDir() { // follow a symlink to a directory
			if fi, err := os.Stat(filepath.Join(root, name)); err != nil || !fi.IsDir() {
				continue
			}
		}
		e, reason := readEntry(root, name)
		out = append(out, Listed{Key: name, Entry: e, Corrupt: reason})
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if (a.Entry == nil) != (b.Entry == nil) {
			return a.Entry != nil
		}
		if a.Entry != nil && a.Entry.Meta.BuiltAt != b.Entry.Meta.BuiltAt {
			return a.Entry.Meta.BuiltAt > b.Entry.Meta.BuiltAt
		}
		return a.Key < b.Key
	})
	return out, nil
}

// copyFile copies src to a new dst with src's permission bits, fsynced.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	return fsync.WriteNew(dst, in, fi.Mode().Perm())
}
