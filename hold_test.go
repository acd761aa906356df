package kcache_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kcache/kcache"
)

func holdStore(t *testing.T, c *kcache.Cache, key, content string) {
	t.Helper()
	img := filepath.Join(t.TempDir(), "bzImage")
	if err := os.WriteFile(img, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Store(t.Context(), key, kcache.Artifacts{Image: img}, kcache.Metadata{Arch: "x86_64", ImageName: "bzImage", Source: kcache.Source{Type: "tarball"}}); err != nil {
		t.Fatal(err)
	}
}

// TestHoldMissCreatesNothing: Hold on a key that has no entry fails with
// ErrNotFound and creates nothing at all — not the root, nor anything
// beside it in its parent.
func TestHoldMissCreatesNothing(t *testing.T) {
	parent := t.TempDir()
	c := mustOpen(filepath.Join(parent, "cache"), nil)
	if _, err := c.Hold(t.Context(), "never-stored", kcache.HoldOptions{}); !errors.Is(err, kcache.ErrNotFound) {
		t.Fatalf("Hold of a missing key = %v; want ErrNotFound", err)
	}
	if ents, _ := os.ReadDir(parent); len(ents) != 0 {
		t.Errorf("Hold on a miss created %v in %s", ents, parent)
	}
}

// TestHoldBlocksRemoveAndStore: while an entry is held, Remove fails with
// ErrInUse naming this process as the holder, and a replacing Store waits
// until Release; the held paths keep the held bytes throughout.
func TestHoldBlocksRemoveAndStore(t *testing.T) {
	c := mustOpen(filepath.Join(t.TempDir(), "cache"), &kcache.Options{StoreLockTimeout: 20 * time.Second})
	holdStore(t, c, "k", "generation 1")
	h, err := c.Hold(t.Context(), "k", kcache.HoldOptions{})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Remove(context.Background(), "k", kcache.RemoveOptions{})
	if !errors.Is(err, kcache.ErrInUse) || !strings.Contains(err.Error(), "pid="+strconv.Itoa(os.Getpid())) {
		t.Fatalf("Remove of a held entry = %v; want ErrInUse naming pid %d", err, os.Getpid())
	}
	stored := make(chan error, 1)
	go func() {
		img := filepath.Join(t.TempDir(), "bzImage")
		if err := os.WriteFile(img, []byte("generation 2"), 0o644); err != nil {
			stored <- err
			return
		}
		_, err := c.Store(context.Background(), "k", kcache.Artifacts{Image: img}, kcache.Metadata{Arch: "x86_64", ImageName: "bzImage", Source: kcache.Source{Type: "tarball"}})
		stored <- err
	}()
	select {
	case err := <-stored:
		t.Fatalf("a replacing Store finished while the entry was held (err %v)", err)
	case <-time.After(500 * time.Millisecond):
	}
	if data, err := os.ReadFile(h.Entry.ImagePath); err != nil || string(data) != "generation 1" {
		t.Errorf("held image = %q, %v; want generation 1", data, err)
	}
	if err := h.Release(); err != nil {
		t.Fatal(err)
	}
	if err := h.Release(); err != nil {
		t.Errorf("second Release = %v; want nil (idempotent)", err)
	}
	if err := <-stored; err != nil {
		t.Fatalf("Store after Release: %v", err)
	}
	h2, err := c.Hold(t.Context(), "k", kcache.HoldOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer h2.Release()
	if data, err := os.ReadFile(h2.Entry.ImagePath); err != nil || string(data) != "generation 2" {
		t.Errorf("image after the replacement = %q, %v; want generation 2", data, err)
	}
}

// TestHoldWaitHonoursContext: Hold waiting for a writer's exclusive lock
// gives up when ctx ends, with ctx's error.
func TestHoldWaitHonoursContext(t *testing.T) {
	c := mustOpen(filepath.Join(t.TempDir(), "cache"), nil)
	holdStore(t, c, "k", "bytes")
	x, err := c.AcquireExclusive(context.Background(), "k", kcache.LockOptions{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Release()
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if _, err := c.Hold(ctx, "k", kcache.HoldOptions{Timeout: time.Minute}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Hold while a writer holds the key, ctx 200 ms = %v; want DeadlineExceeded", err)
	}
}
