package kcache

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/kcache/kcache/internal/fsync"
)

// markerName is the file that says a directory is a kcache cache root. It
// is written beside index.db whenever the index is opened for writing and
// the marker is missing — so by the first write that creates a cache, and
// by the first write of this kcache to a cache made before markers existed —
// and never removed. It outlives a lost or deleted index.db, which is when
// doctor needs it: doctor moves files into the quarantine (and rebuilds
// without a manifest to show for it) only in a root that has index.db or
// this marker, so that a mistyped --root is refused, not rearranged.
const markerName = ".kcache-root"

// markerContent explains the file to whoever finds it.
const markerContent = "This directory is a kcache cache root. kcache's repairs rely on this file; do not remove it.\n"

func (c *Cache) markerPath() string { return filepath.Join(c.root, markerName) }

// ensureMarker writes the root marker if it is not there yet. Failures are
// warnings: the marker matters only to a later doctor, and index.db proves
// the root is kcache's as long as it exists.
func (c *Cache) ensureMarker() {
	if c.markerOK.Load() {
		return
	}
	p := c.markerPath()
	if _, err := os.Lstat(p); err == nil {
		c.markerOK.Store(true)
		return
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o444)
	if errors.Is(err, fs.ErrExist) {
		c.markerOK.Store(true)
		return
	}
	if err != nil {
		c.warnf("create cache root marker %s: %v", p, err)
		return
	}
	_, err = f.WriteString(markerContent)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fsync.Dir(c.root)
	}
	if err != nil {
		c.warnf("create cache root marker %s: %v", p, err)
		return
	}
	c.markerOK.Store(true)
}

// ownedRoot reports whether the root is kcache's: it has a regular index.db
// or the marker (symlinks count for neither).
func (c *Cache) ownedRoot() bool {
	for _, p := range []string{c.IndexPath(), c.markerPath()} {
		if fi, err := os.Lstat(p); err == nil && fi.Mode().IsRegular() {
			return true
		}
	}
	return false
}

// preIndexNames may be in a root before its index exists: any command's
// entry lock creates .locks.
var preIndexNames = map[string]bool{".locks": true}

// checkDoctorRoot refuses to repair a directory that is not a kcache root
// (ownedRoot): its files are not kcache's to move. A missing or empty root,
// or one holding only lock files, is nothing to repair (empty is true). A
// rebuild may also run in an unmarked root whose blob directory holds a
// kcache manifest (a cache made before markers, whose index.db was lost).
func (c *Cache) checkDoctorRoot(rebuild bool) (empty bool, err error) {
	if c.ownedRoot() {
		return false, nil
	}
	ents, err := os.ReadDir(c.root)
	if errors.Is(err, fs.ErrNotExist) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("doctor: read %s: %w", c.root, err)
	}
	empty = true
	for _, e := range ents {
		empty = empty && preIndexNames[e.Name()]
	}
	if empty {
		return true, nil
	}
	if rebuild && c.hasManifest() {
		return false, nil
	}
	return false, fmt.Errorf("doctor: %s is not a kcache cache root (it has neither index.db nor %s, nor a manifest blob to rebuild from), so nothing in it was changed or moved", c.root, markerName)
}

// errFound stops a walk early.
var errFound = errors.New("found")

// hasManifest reports whether the blob directory holds at least one
// manifest that hashes to its name and decodes: evidence that kcache wrote
// it, so that a rebuild may plant an index here.
func (c *Cache) hasManifest() bool {
	err := c.blobs.Walk(func(d string, size int64) error {
		if size > maxManifestSize {
			return nil
		}
		if rec, _, _ := c.readManifestBlob(d, size); rec != nil {
			return errFound
		}
		return nil
	}, nil)
	return errors.Is(err, errFound)
}
