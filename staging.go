package kcache

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/kcache/kcache/internal/beneath"
	"github.com/kcache/kcache/lock"
)

// staging is a writer's private directory under <root>/.tmp. Its lock file
// <id>.lock sits beside it, is created and locked before the directory
// exists and removed after the directory is gone, so a directory whose lock
// can be taken belongs to a writer that died.
type staging struct {
	dir  string
	lock *lock.Lock
	fs   *beneath.Root
}

func (c *Cache) tmpDir() string { return filepath.Join(c.root, ".tmp") }

func (c *Cache) newStaging(ctx context.Context) (*staging, error) {
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, fmt.Errorf("staging name: %w", err)
	}
	id := fmt.Sprintf("%d-%s", os.Getpid(), hex.EncodeToString(rnd[:]))
	dir := filepath.Join(c.tmpDir(), id)
	l, err := lock.AcquireFreshWith(c.openLockFile, c.fs.Lstat, dir+".lock", "staging directory "+dir)
	if err != nil {
		return nil, err
	}
	if err := c.fs.Mkdir(dir, 0o700); err != nil {
		_ = c.fs.Remove(dir + ".lock")
		_ = l.Release()
		return nil, fmt.Errorf("create staging directory: %w", err)
	}
	return &staging{dir: dir, lock: l, fs: c.fs}, nil
}

// remove deletes the staging directory, then its lock file, then unlocks.
func (s *staging) remove() error {
	err := s.fs.RemoveAll(s.dir)
	if err == nil {
		err = s.fs.Remove(s.dir + ".lock")
	}
	_ = s.lock.Release()
	if err != nil {
		return fmt.Errorf("remove staging directory %s: %w", s.dir, err)
	}
	return nil
}

// sweepStaging removes staging directories of writers that died: those whose
// lock file can be locked, or that have no lock file at all (a writer creates
// the lock file first and removes it last). It reports what it removed.
func (c *Cache) sweepStaging(ctx context.Context, dryRun bool) (removed []string, err error) {
	ents, err := c.fs.ReadDir(c.tmpDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if errors.Is(err, beneath.ErrSymlink) {
		// Never swept through: doctor reports it.
		c.warnf("sweep: %v; left alone", err)
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("sweep %s: %w", c.tmpDir(), err)
	}
	names := map[string]bool{}
	for _, e := range ents {
		names[e.Name()] = true
	}
	for _, e := range ents {
		name := e.Name()
		path := filepath.Join(c.tmpDir(), name)
		if e.Type()&fs.ModeSymlink != 0 {
			// kcache never creates symlinks here: never follow one
			// (lock, delete through it), leave it to whoever planted it.
			c.warnf("sweep: %s is a symlink, not a staging directory or lock; left alone", path)
			continue
		}
		if id, ok := strings.CutSuffix(name, ".lock"); ok {
			if c.sweepDeadWriter(ctx, path, id, dryRun) {
				removed = append(removed, id)
			}
			continue
		}
		if e.IsDir() && !names[name+".lock"] {
			if dryRun {
				removed = append(removed, name)
			} else if err := c.fs.RemoveAll(path); err == nil {
				removed = append(removed, name)
			}
		}
	}
	return removed, nil
}

// sweepDeadWriter removes staging directory id and then its lock file path,
// when it can lock that file (the writer is dead); a dry run only looks. It
// reports whether there was a directory to remove (and it was, or would be,
// removed).
func (c *Cache) sweepDeadWriter(ctx context.Context, path, id string, dryRun bool) bool {
	l, err := lock.AcquireWith(ctx, c.openLockFile, true, path, lock.Exclusive, 0, "staging lock")
	if err != nil {
		return false // alive, or not ours to judge
	}
	defer l.Release()
	dir := filepath.Join(c.tmpDir(), id)
	fi, err := c.fs.Lstat(dir)
	hasDir := err == nil && fi.IsDir()
	if dryRun {
		return hasDir
	}
	if hasDir {
		if err := c.fs.RemoveAll(dir); err != nil {
			return false // the lock file stays: the next sweep tries again
		}
	}
	_ = c.fs.Remove(path)
	return hasDir
}
