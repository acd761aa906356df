package kcache_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/kcache/kcache"
)

// sparseFile creates a sparse file of size bytes (reads as zeros).
func sparseFile(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "bzImage")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestStoreCancelledMidCopyLeavesNoStaging: a Store whose context expires
// while it copies a 200 MB image returns an error matching
// context.DeadlineExceeded and removes its staging directory. The deadline
// is a quarter of what an uncancelled store of the same image takes here,
// so that it falls inside the copy on fast and slow machines alike.
func TestStoreCancelledMidCopyLeavesNoStaging(t *testing.T) {
	img := sparseFile(t, 200<<20)
	ref, _ := newCache(t)
	start := time.Now()
	if _, err := ref.Store(context.Background(), "k", kcache.Artifacts{Image: img}, tarball); err != nil {
		t.Fatal(err)
	}
	full := time.Since(start)

	c, root := newCache(t)
	ctx, cancel := context.WithTimeout(context.Background(), full/4)
	defer cancel()
	_, err := c.Store(ctx, "k", kcache.Artifacts{Image: img}, tarball)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Store with a %s deadline (a full store takes %s) = %v, want DeadlineExceeded", full/4, full, err)
	}
	t.Logf("full store %s; cancelled store: %v", full, err)
	ents, err := os.ReadDir(filepath.Join(root, ".tmp"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("left in .tmp: %s", e.Name())
	}
	if _, err := c.Lookup(context.Background(), "k"); !errors.Is(err, kcache.ErrNotFound) {
		t.Errorf("Lookup after the cancelled store = %v, want ErrNotFound", err)
	}
}

// TestIndexWaitHonoursContext: a call blocked on an index file another
// process holds returns the context's error when the context ends, long
// before Options.IndexTimeout.
func TestIndexWaitHonoursContext(t *testing.T) {
	c, root := newCache(t)
	img := writeFile(t, t.TempDir(), "bzImage", []byte("image"))
	if _, err := c.Store(context.Background(), "k", kcache.Artifacts{Image: img}, tarball); err != nil {
		t.Fatal(err)
	}
	// bbolt's flock is per open file, so this handle excludes the cache's
	// own opens just as another process would.
	db, err := bolt.Open(filepath.Join(root, "index.db"), 0o644, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	slow := mustOpen(root, &kcache.Options{IndexTimeout: time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = slow.Lookup(ctx, "k")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lookup on a held index = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("Lookup returned after %s, not at the context's deadline", d)
	}
}

// TestLockWaitHonoursContext: Store waiting for an entry lock held shared
// returns the context's error, not a lock timeout, when the context ends.
func TestLockWaitHonoursContext(t *testing.T) {
	c, _ := newCache(t)
	img := writeFile(t, t.TempDir(), "bzImage", []byte("image"))
	if _, err := c.Store(context.Background(), "k", kcache.Artifacts{Image: img}, tarball); err != nil {
		t.Fatal(err)
	}
	l, err := c.AcquireShared(context.Background(), "k", kcache.LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = c.Store(ctx, "k", kcache.Artifacts{Image: img}, tarball)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Store on a held entry = %v, want DeadlineExceeded", err)
	}
}
