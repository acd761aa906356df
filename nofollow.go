package kcache

import (
	"fmt"
	"os"
	"path/filepath"
)

// openLockFile is the lock.Opener of every lock under the root: the lock
// file and its directory (.locks, .tmp) are reached without following a
// symlink, so a planted one cannot make a lock create or lock a file
// outside the cache.
func (c *Cache) openLockFile(path string, flag int, perm os.FileMode) (*os.File, error) {
	if flag&os.O_CREATE != 0 {
		if err := c.fs.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, fmt.Errorf("create lock directory: %w", err)
		}
	}
	return c.fs.OpenFile(path, flag, perm)
}

// checkIndexPath refuses an index.db that is a symlink (or a root whose
// path to it crosses one below the root). bbolt opens its file by path and
// cannot take a descriptor, so the best available is this check right
// before each open (and index.Open's own lstat): a symlink planted between
// the two would need write access to the root, which can do worse anyway.
// Without it a dangling symlink at index.db would make bbolt create an
// index file at its target, outside the cache.
func (c *Cache) checkIndexPath() error {
	if err := c.fs.Check(c.IndexPath()); err != nil {
		return fmt.Errorf("index %s: %w", c.IndexPath(), err)
	}
	return nil
}

// SymlinkFound is a symlink under the cache root. kcache never creates one
// there and follows none: Doctor reports each and leaves it for its owner
// to remove (what it points to may be someone's work).
type SymlinkFound struct {
	Path   string `json:"path"`
	Target string `json:"target"` // what it points to ("" if unreadable)
}

// structuralNames are the root's entries that kcache creates as directories
// (or index.db, a file) and writes through: a symlink at one of them makes
// Doctor stop before repairing anything (Doctor would write through it).
var structuralNames = []string{"index.db", "blobs", ".locks", ".tmp", "quarantine", statsDirName}

// findSymlinks lists the symlinks at kcache's own names under the root:
// the root's entries, blobs/sha256 and its <2 hex> directories, and
// anything in .tmp, .locks and .stats. structural reports whether one of
// them is a directory (or index.db) that commands write through. Symlinks
// at blob files are found by the blob walk (blobstore.WalkSymlinks).
func (c *Cache) findSymlinks() (found []SymlinkFound, structural bool) {
	found = []SymlinkFound{}
	add := func(p string) {
		t, _ := os.Readlink(p)
		found = append(found, SymlinkFound{Path: p, Target: t})
	}
	isLink := func(p string) bool {
		fi, err := c.fs.Lstat(p)
		return err == nil && fi.Mode()&os.ModeSymlink != 0
	}
	for _, name := range structuralNames {
		if p := filepath.Join(c.root, name); isLink(p) {
			add(p)
			structural = true
		}
	}
	sha := filepath.Join(c.root, "blobs", "sha256")
	if isLink(sha) {
		add(sha)
		structural = true
	} else if ents, err := c.fs.ReadDir(sha); err == nil {
		for _, e := range ents {
			if e.Type()&os.ModeSymlink != 0 {
				add(filepath.Join(sha, e.Name()))
				structural = true
			}
		}
	}
	for _, name := range []string{".tmp", ".locks", statsDirName} {
		dir := filepath.Join(c.root, name)
		ents, err := c.fs.ReadDir(dir)
		if err != nil {
			continue // missing, or itself a symlink (reported above)
		}
		for _, e := range ents {
			if e.Type()&os.ModeSymlink != 0 {
				add(filepath.Join(dir, e.Name()))
			}
		}
	}
	return found, structural
}
