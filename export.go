package kcache

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/kcache/kcache/index"
	"github.com/kcache/kcache/internal/fsync"
	"github.com/kcache/kcache/lock"
	"github.com/kcache/kcache/migrate"
	"golang.org/x/sys/unix"
)

// ExportReport is what Export did. Its JSON form is `kcache export --json`.
type ExportReport struct {
	Dir      string          `json:"dir"`
	Exported []ExportedEntry `json:"exported"`
	Failed   []ExportFailure `json:"failed"`
}

// ExportedEntry is one entry written into the export directory.
type ExportedEntry struct {
	Key  string `json:"key"`
	Path string `json:"path"` // DIR/<key>
	// Linked is true when every blob was hard-linked into the entry
	// directory, false when at least one was copied (another filesystem).
	Linked bool `json:"linked"`
}

// ExportFailure is a key that was not exported.
type ExportFailure struct {
	Key   string `json:"key"`
	Error string `json:"error"`
	Err   error  `json:"-"` // the error itself, for errors.Is
}

// Export writes entries in ktstr's per-directory layout under dir, so that
// ktstr (or anything reading its cache) can use them:
//
//	dir/<key>/<image_name>
//	dir/<key>/vmlinux          when the entry has one
//	dir/<key>/metadata.json    ktstr's exact shape (see MarshalKtstrMetadata)
//
// With all it exports every usable entry (corrupt ones are reported as
// failed), else the given keys. Blobs are hard-linked when dir is on the
// cache's filesystem and copied otherwise; a link shares the blob's
// read-only mode (0444), which ktstr does not mind.
//
// Each entry is built in dir/.tmp-<key>-<pid> (ktstr's staging name, which
// its orphan sweep recognises) and renamed into place; an existing
// dir/<key> is swapped out atomically (renameat2 RENAME_EXCHANGE) and then
// removed, so a reader of dir sees the old entry or the new one. When dir
// is a ktstr cache (it has a .locks directory), the swap holds ktstr's
// exclusive lock on .locks/<key>.lock, waiting up to
// Options.StoreLockTimeout for ktstr processes that hold it shared. While
// reading the blobs Export holds the kcache entry's shared lock.
//
// The error is for failures that stop the whole export (dir cannot be
// created, the index cannot be read); per-key failures are in the report.
func (c *Cache) Export(keys []string, all bool, dir string) (*ExportReport, error) {
	rep := &ExportReport{Dir: dir, Exported: []ExportedEntry{}, Failed: []ExportFailure{}}
	if all == (len(keys) > 0) {
		return nil, invalidf("export: give either keys or all, not both or neither")
	}
	if dir == "" {
		return nil, invalidf("export: no destination directory given")
	}
	if all {
		l, err := c.List(ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("export: %w", err)
		}
		keys = nil
		for _, le := range l.Entries {
			if le.Corrupt != nil {
				rep.Failed = append(rep.Failed, ExportFailure{Key: le.Key, Error: le.Corrupt.Error(), Err: le.Corrupt})
				continue
			}
			keys = append(keys, le.Key)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("export: create %s: %w", dir, err)
	}
	for _, key := range keys {
		ex, err := c.exportOne(key, dir)
		if err != nil {
			rep.Failed = append(rep.Failed, ExportFailure{Key: key, Error: err.Error(), Err: err})
			continue
		}
		rep.Exported = append(rep.Exported, *ex)
	}
	if len(rep.Exported) > 0 {
		if err := fsync.Dir(dir); err != nil {
			return rep, fmt.Errorf("export: %w", err)
		}
	}
	return rep, nil
}

func (c *Cache) exportOne(key, dir string) (*ExportedEntry, error) {
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	// Check first without locking, so that exporting a key that was never
	// stored creates no lock file.
	if _, err := c.Describe(key); err != nil {
		return nil, fmt.Errorf("export %q: %w", key, err)
	}
	l, err := c.AcquireShared(key, 0)
	if err != nil {
		return nil, fmt.Errorf("export %q: %w", key, err)
	}
	defer l.Release()
	e, err := c.Describe(key) // again under the lock: the entry a store may have replaced
	if err != nil {
		return nil, fmt.Errorf("export %q: %w", key, err)
	}
	meta, err := MarshalKtstrMetadata(&e.Record)
	if err != nil {
		return nil, fmt.Errorf("export %q: %w", key, err)
	}

	staging := migrate.StagingPath(dir, key)
	if err := os.RemoveAll(staging); err != nil {
		return nil, fmt.Errorf("export %q: %w", key, err)
	}
	if err := os.Mkdir(staging, 0o755); err != nil {
		return nil, fmt.Errorf("export %q: %w", key, err)
	}
	defer os.RemoveAll(staging) // after a successful swap it holds the old entry
	linked, err := linkOrCopy(e.ImagePath, filepath.Join(staging, e.ImageName))
	if err != nil {
		return nil, fmt.Errorf("export %q: image: %w", key, err)
	}
	if e.VmlinuxPath != "" {
		vl, err := linkOrCopy(e.VmlinuxPath, filepath.Join(staging, "vmlinux"))
		if err != nil {
			return nil, fmt.Errorf("export %q: vmlinux: %w", key, err)
		}
		linked = linked && vl
	}
	if err := fsync.WriteNew(filepath.Join(staging, "metadata.json"), bytes.NewReader(meta), 0o644); err != nil {
		return nil, fmt.Errorf("export %q: %w", key, err)
	}
	if err := fsync.Dir(staging); err != nil {
		return nil, fmt.Errorf("export %q: %w", key, err)
	}

	final := filepath.Join(dir, key)
	if err := installExported(staging, final, dir, key, c.opt.StoreLockTimeout); err != nil {
		return nil, fmt.Errorf("export %q: %w", key, err)
	}
	return &ExportedEntry{Key: key, Path: final, Linked: linked}, nil
}

// installExported renames staging to final, or exchanges them when final
// exists (the old entry then lies in staging for the caller to remove). In
// a ktstr cache it holds ktstr's exclusive entry lock while doing so.
func installExported(staging, final, dir, key string, timeout time.Duration) error {
	if fi, err := os.Stat(filepath.Join(dir, ".locks")); err == nil && fi.IsDir() {
		// ktstr creates lock files lazily and never removes them; creating
		// one here closes the window where a reader creates it after a
		// mere existence check.
		l, err := lock.Acquire(bg, migrate.LockPath(dir, key), lock.Exclusive, timeout,
			fmt.Sprintf("ktstr cache entry %q in %s", key, dir))
		if err != nil {
			return err
		}
		defer l.Release()
	}
	err := os.Rename(staging, final)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.ENOTEMPTY) && !errors.Is(err, unix.EEXIST) && !errors.Is(err, unix.ENOTDIR) && !errors.Is(err, unix.EISDIR) {
		return fmt.Errorf("install %s: %w", final, err)
	}
	if err := unix.Renameat2(unix.AT_FDCWD, staging, unix.AT_FDCWD, final, unix.RENAME_EXCHANGE); err != nil {
		return fmt.Errorf("replace %s atomically (renameat2 RENAME_EXCHANGE): %w", final, err)
	}
	return nil
}

// linkOrCopy hard-links src to dst, or copies it (with src's permissions)
// when linking fails: another filesystem (EXDEV), no link support, a link
// limit. It reports whether it linked.
func linkOrCopy(src, dst string) (linked bool, err error) {
	if os.Link(src, dst) == nil {
		return true, nil
	}
	in, err := os.Open(src)
	if err != nil {
		return false, err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return false, err
	}
	if err := fsync.WriteNew(dst, in, fi.Mode().Perm()|0o200); err != nil {
		return false, fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	return false, os.Chmod(dst, fi.Mode().Perm())
}

// MarshalKtstrMetadata returns rec as ktstr writes metadata.json (see
// migrate.MarshalMetadata). kcache's kconfig_hash is ktstr's
// ktstr_kconfig_hash; the fields kcache adds (digests, build ID, stored_at,
// ...) have no place in it and are left out.
func MarshalKtstrMetadata(rec *index.Record) ([]byte, error) {
	return migrate.MarshalMetadata(&migrate.Metadata{
		Version: rec.Version, Source: migrate.Source(rec.Source), Arch: rec.Arch,
		ImageName: rec.ImageName, ConfigHash: rec.ConfigHash, BuiltAt: rec.BuiltAt,
		KtstrKconfigHash: rec.KconfigHash, HasVmlinux: rec.HasVmlinux,
		VmlinuxStripped:   rec.HasVmlinux && rec.VmlinuxStripped,
		SourceVmlinuxSize: rec.SourceVmlinuxSize, SourceVmlinuxMtimeSecs: rec.SourceVmlinuxMtimeSecs,
	})
}
