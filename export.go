package kcache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

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
	// Linked is always false: export no longer hard-links blobs, because a
	// write through such a link (root ignores the 0444 mode) changed the
	// cache's blob. Kept so that readers of the JSON form still find it.
	Linked bool `json:"linked"`
	// Reflinked is true when every file was cloned (FICLONE: shared
	// extents, copy-on-write, so a write to it never reaches the blob),
	// false when at least one was copied byte by byte.
	Reflinked bool `json:"reflinked"`
}

// ExportFailure is a key that was not exported.
type ExportFailure struct {
	Key   string `json:"key"`
	Error string `json:"error"`
	Err   error  `json:"-"` // the error itself, for errors.Is
}

// ExportOptions say what Export copies where.
type ExportOptions struct {
	// Keys are the entries to export; exactly one of Keys and All is set.
	Keys []string
	// All exports every usable entry (corrupt ones are reported as failed).
	All bool
	// Dir is the destination directory, created if missing; required. A
	// relative Dir is made absolute against the current directory.
	Dir string
	// LockTimeout bounds the wait for ktstr's exclusive lock on an entry
	// in Dir when Dir is a ktstr cache; 0 means Options.StoreLockTimeout.
	LockTimeout time.Duration
}

// Export writes entries in ktstr's per-directory layout under dir, so that
// ktstr (or anything reading its cache) can use them:
//
//	dir/<key>/<image_name>
//	dir/<key>/vmlinux          when the entry has one
//	dir/<key>/metadata.json    ktstr's exact shape (migrate.MarshalMetadata)
//
// With all it exports every usable entry (corrupt ones are reported as
// failed), else the given keys. Blobs are cloned (FICLONE) where the
// filesystem can, else copied; never hard-linked, so that no write to an
// exported file reaches the cache. The files are read-only (0444).
//
// dir must not be the cache root or inside it. Each entry is built in
// dir/.tmp-<key>-<pid> (ktstr's staging name, which its orphan sweep
// recognises) and renamed into place; an existing dir/<key> is replaced
// only when it is a ktstr entry (see export_dest.go: a metadata.json and
// nothing but an entry's files), anything else there is refused. It is
// swapped out atomically (renameat2 RENAME_EXCHANGE), checked again and
// removed file by file, so a reader of dir sees the old entry or the new
// one. When dir
// is a ktstr cache (it has a .locks directory), the swap holds ktstr's
// exclusive lock on .locks/<key>.lock, waiting up to
// Options.StoreLockTimeout for ktstr processes that hold it shared. While
// reading the blobs Export holds the kcache entry's shared lock.
//
// The error is for failures that stop the whole export (dir cannot be
// created, the index cannot be read); per-key failures are in the report.
func (c *Cache) Export(ctx context.Context, opt ExportOptions) (*ExportReport, error) {
	keys, all := opt.Keys, opt.All
	if all == (len(keys) > 0) {
		return nil, invalidf("export: give either keys or all, not both or neither")
	}
	if opt.Dir == "" {
		return nil, invalidf("export: no destination directory given")
	}
	dir, err := filepath.Abs(opt.Dir)
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	timeout := opt.LockTimeout
	if timeout <= 0 {
		timeout = c.opt.StoreLockTimeout
	}
	rep := &ExportReport{Dir: dir, Exported: []ExportedEntry{}, Failed: []ExportFailure{}}
	if all {
		l, err := c.List(ctx, ListOptions{})
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
	if err := c.checkExportDir(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("export: create %s: %w", dir, err)
	}
	// Again now that dir exists: the first check saw only its nearest
	// existing ancestor.
	if err := c.checkExportDir(dir); err != nil {
		return nil, err
	}
	for _, key := range keys {
		ex, err := c.exportOne(ctx, key, dir, timeout)
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

func (c *Cache) exportOne(ctx context.Context, key, dir string, timeout time.Duration) (*ExportedEntry, error) {
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	// Check first without locking, so that exporting a key that was never
	// stored creates no lock file.
	if _, err := c.Describe(ctx, key); err != nil {
		return nil, fmt.Errorf("export %q: %w", key, err)
	}
	l, err := c.AcquireShared(ctx, key, LockOptions{})
	if err != nil {
		return nil, fmt.Errorf("export %q: %w", key, err)
	}
	defer l.Release()
	e, err := c.Describe(ctx, key) // again under the lock: the entry a store may have replaced
	if err != nil {
		return nil, fmt.Errorf("export %q: %w", key, err)
	}
	meta, err := migrate.MarshalMetadata(migrate.MetadataOf(&e.Record))
	if err != nil {
		return nil, fmt.Errorf("export %q: %w", key, err)
	}

	staging := migrate.StagingPath(dir, key)
	if _, err := os.Lstat(staging); err == nil {
		// A leftover of an export by a dead process with our pid: remove
		// it only if it is entry-shaped.
		if err := removeKtstrEntry(staging); err != nil {
			return nil, fmt.Errorf("export %q: stale staging directory: %w", key, err)
		}
	}
	if err := os.Mkdir(staging, 0o755); err != nil {
		return nil, fmt.Errorf("export %q: %w", key, err)
	}
	ours := []string{e.ImageName, "vmlinux", "metadata.json"}
	staged := true // staging holds what we built (else the swapped-out entry)
	defer func() {
		if !staged {
			return
		}
		if err := removeNames(staging, ours); err != nil {
			c.warnf("export %q: %v", key, err)
		}
	}()
	reflinked, err := c.cloneOrCopy(e.ImagePath, filepath.Join(staging, e.ImageName))
	if err != nil {
		return nil, fmt.Errorf("export %q: image: %w", key, err)
	}
	if e.VmlinuxPath != "" {
		vr, err := c.cloneOrCopy(e.VmlinuxPath, filepath.Join(staging, "vmlinux"))
		if err != nil {
			return nil, fmt.Errorf("export %q: vmlinux: %w", key, err)
		}
		reflinked = reflinked && vr
	}
	if err := fsync.WriteNew(filepath.Join(staging, "metadata.json"), bytes.NewReader(meta), 0o644); err != nil {
		return nil, fmt.Errorf("export %q: %w", key, err)
	}
	if err := fsync.Dir(staging); err != nil {
		return nil, fmt.Errorf("export %q: %w", key, err)
	}

	final := filepath.Join(dir, key)
	swapped, err := installExported(ctx, staging, final, dir, key, timeout)
	if err != nil {
		return nil, fmt.Errorf("export %q: %w", key, err)
	}
	staged = false // renamed into place: staging is gone, or holds the old entry
	if swapped {
		if err := removeKtstrEntry(staging); err != nil {
			// Something other than an entry was swapped out: it changed
			// between the check and the exchange. Put it back; never
			// delete it.
			if xerr := unix.Renameat2(unix.AT_FDCWD, staging, unix.AT_FDCWD, final, unix.RENAME_EXCHANGE); xerr != nil {
				return nil, fmt.Errorf("export %q: %s changed while being replaced (%v); what was there is now in %s, left untouched: %w", key, final, err, staging, xerr)
			}
			staged = true
			return nil, fmt.Errorf("export %q: %s changed while being replaced; it was put back untouched: %w", key, final, err)
		}
	}
	return &ExportedEntry{Key: key, Path: final, Reflinked: reflinked}, nil
}

// installExported renames staging to final, or exchanges them when final
// is a ktstr entry (the old entry then lies in staging for the caller to
// check and remove; swapped says so). Anything else at final is refused. In
// a ktstr cache it holds ktstr's exclusive entry lock while doing so.
func installExported(ctx context.Context, staging, final, dir, key string, timeout time.Duration) (swapped bool, err error) {
	if fi, err := os.Stat(filepath.Join(dir, ".locks")); err == nil && fi.IsDir() {
		// ktstr creates lock files lazily and never removes them; creating
		// one here closes the window where a reader creates it after a
		// mere existence check.
		l, err := lock.Acquire(ctx, migrate.LockPath(dir, key), lock.Exclusive, timeout,
			fmt.Sprintf("ktstr cache entry %q in %s", key, dir))
		if err != nil {
			return false, err
		}
		defer l.Release()
	}
	// NOREPLACE: a plain rename would replace an empty directory someone
	// made at final meanwhile.
	err = unix.Renameat2(unix.AT_FDCWD, staging, unix.AT_FDCWD, final, unix.RENAME_NOREPLACE)
	if err == nil {
		return false, nil
	}
	if !errors.Is(err, unix.EEXIST) {
		return false, fmt.Errorf("install %s: %w", final, err)
	}
	// Checked right before the swap; the window until the exchange is
	// covered by the caller's check of what the exchange swapped out.
	if _, err := ktstrEntryFiles(final); err != nil {
		return false, err
	}
	if err := unix.Renameat2(unix.AT_FDCWD, staging, unix.AT_FDCWD, final, unix.RENAME_EXCHANGE); err != nil {
		return false, fmt.Errorf("replace %s atomically (renameat2 RENAME_EXCHANGE): %w", final, err)
	}
	return true, nil
}

// cloneOrCopy writes a read-only (0444) copy of the blob file src (opened
// below the root, following no symlink) at dst: a clone
// (FICLONE, sharing extents copy-on-write) where the filesystem can, else
// a byte copy. Never a hard link: a write through a link would change the
// blob itself. It reports whether it cloned.
func (c *Cache) cloneOrCopy(src, dst string) (cloned bool, err error) {
	in, err := c.fs.Open(src)
	if err != nil {
		return false, err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return false, err
	}
	defer out.Close()
	if unix.IoctlFileClone(int(out.Fd()), int(in.Fd())) == nil {
		cloned = true
	} else if _, err := io.Copy(out, in); err != nil {
		return false, fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	if err := out.Chmod(0o444); err != nil {
		return false, err
	}
	if err := out.Sync(); err != nil {
		return false, fmt.Errorf("fsync %s: %w", dst, err)
	}
	return cloned, out.Close()
}
