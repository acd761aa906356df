package kcache_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/kcache/kcache"
	"github.com/kcache/kcache/lock"
)

// procRoleHold holds key with Hold, prints "ready <image path>" and keeps
// the hold until stdin closes, then releases it.
func procRoleHold(root, key string) error {
	h, err := procHelperCache(root).Hold(context.Background(), key, kcache.HoldOptions{})
	if err != nil {
		return err
	}
	fmt.Println("ready " + h.Entry.ImagePath)
	_, _ = io.Copy(io.Discard, os.Stdin)
	return h.Release()
}

// TestHoldMissCreatesNothing: Hold of a key that has no entry fails with
// ErrNotFound and creates nothing: not the root of a cache that does not
// exist yet, not a lock file in one that does.
func TestHoldMissCreatesNothing(t *testing.T) {
	parent := t.TempDir()
	c := mustOpen(filepath.Join(parent, "cache"), &kcache.Options{Warn: io.Discard})
	if h, err := c.Hold(context.Background(), "absent", kcache.HoldOptions{}); !errors.Is(err, kcache.ErrNotFound) {
		t.Fatalf("Hold on a missing cache = %v, %v; want ErrNotFound", h, err)
	}
	if ents, _ := os.ReadDir(parent); len(ents) != 0 {
		t.Errorf("Hold on a miss created %d entries under the root's parent", len(ents))
	}

	c, root := newCache(t)
	img := writeFile(t, t.TempDir(), "bzImage", []byte("image"))
	if _, err := c.Store(context.Background(), "k", kcache.Artifacts{Image: img}, tarball); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Hold(context.Background(), "absent", kcache.HoldOptions{}); !errors.Is(err, kcache.ErrNotFound) {
		t.Fatalf("Hold of an absent key = %v, want ErrNotFound", err)
	}
	if _, err := os.Lstat(filepath.Join(root, ".locks", "absent.lock")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Hold on a miss created a lock file: %v", err)
	}
}

// TestHoldCountsOneHitAndReleasesIdempotently: a Hold counts exactly one
// hit (a miss counts one miss), and Release may be called again.
func TestHoldCountsOneHitAndReleasesIdempotently(t *testing.T) {
	c, _ := newCache(t)
	ctx := context.Background()
	img := writeFile(t, t.TempDir(), "bzImage", []byte("image"))
	if _, err := c.Store(ctx, "k", kcache.Artifacts{Image: img}, tarball); err != nil {
		t.Fatal(err)
	}
	h, err := c.Hold(ctx, "k", kcache.HoldOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(h.Entry.ImagePath); err != nil || string(b) != "image" {
		t.Errorf("held image %s: %q, %v", h.Entry.ImagePath, b, err)
	}
	if h.Entry.LastUsed == "" {
		t.Error("Hold did not record last_used")
	}
	if h.File() == nil {
		t.Error("a live hold has no lock file")
	}
	for i := range 2 {
		if err := h.Release(); err != nil {
			t.Errorf("Release #%d: %v", i+1, err)
		}
	}
	if h.File() != nil {
		t.Error("File after Release is not nil")
	}
	_, _ = c.Hold(ctx, "absent", kcache.HoldOptions{})
	st, err := c.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Hits != 1 || st.Misses != 1 {
		t.Errorf("hits %d, misses %d after one Hold and one miss; want 1 and 1", st.Hits, st.Misses)
	}
	// Released: an exclusive lock is free again.
	l, err := c.AcquireExclusive(ctx, "k", kcache.LockOptions{NoWait: true})
	if err != nil {
		t.Fatalf("after Release the entry is still locked: %v", err)
	}
	_ = l.Release()
}

// TestHoldMakesRemoveFailInUse: while another process holds an entry,
// Remove fails with ErrInUse naming that process, and the held blob stays;
// after Release the Remove succeeds.
func TestHoldMakesRemoveFailInUse(t *testing.T) {
	c, root := newCache(t)
	ctx := context.Background()
	img := writeFile(t, t.TempDir(), "bzImage", []byte("held image"))
	if _, err := c.Store(ctx, "k", kcache.Artifacts{Image: img}, tarball); err != nil {
		t.Fatal(err)
	}
	p := procStartHelper(t, "hold", root, "k")
	path := p.expectLine("ready ")[len("ready "):]
	err := c.Remove(ctx, "k", kcache.RemoveOptions{})
	if !errors.Is(err, kcache.ErrInUse) {
		t.Fatalf("Remove of a held entry = %v, want ErrInUse", err)
	}
	var ce *lock.ContendedError
	if !errors.As(err, &ce) || !slices.ContainsFunc(ce.Holders, func(h lock.Holder) bool { return h.PID == p.pid() }) {
		t.Errorf("Remove's error %v does not name the holder pid %d", err, p.pid())
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "held image" {
		t.Errorf("held image %s after the refused Remove: %q, %v", path, b, err)
	}
	p.stdin.Close()
	p.mustSucceed()
	if err := c.Remove(ctx, "k", kcache.RemoveOptions{}); err != nil {
		t.Fatalf("Remove after Release: %v", err)
	}
}

// TestHoldMakesReplacingStoreWait: a Store replacing a held entry waits
// until the holder releases it; the holder's paths keep the old content
// meanwhile.
func TestHoldMakesReplacingStoreWait(t *testing.T) {
	_, root := newCache(t)
	c := mustOpen(root, &kcache.Options{Warn: io.Discard, StoreLockTimeout: time.Minute})
	ctx := context.Background()
	src := t.TempDir()
	old := writeFile(t, src, "old", []byte("old image"))
	if _, err := c.Store(ctx, "k", kcache.Artifacts{Image: old}, tarball); err != nil {
		t.Fatal(err)
	}
	p := procStartHelper(t, "hold", root, "k")
	path := p.expectLine("ready ")[len("ready "):]
	newImg := writeFile(t, src, "new", []byte("new image"))
	stored := make(chan error, 1)
	go func() {
		_, err := c.Store(ctx, "k", kcache.Artifacts{Image: newImg}, tarball)
		stored <- err
	}()
	select {
	case err := <-stored:
		t.Fatalf("Store returned (%v) while the entry was held", err)
	case <-time.After(time.Second):
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "old image" {
		t.Errorf("held image %s changed under the hold: %q, %v", path, b, err)
	}
	p.stdin.Close()
	p.mustSucceed()
	select {
	case err := <-stored:
		if err != nil {
			t.Fatalf("Store after Release: %v", err)
		}
	case <-time.After(procHangGuard):
		t.Fatal("Store still waiting after Release")
	}
	e, err := c.Describe(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(e.ImagePath); err != nil || string(b) != "new image" {
		t.Errorf("after the replacing Store: %q, %v", b, err)
	}
}
