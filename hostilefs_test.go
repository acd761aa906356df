package kcache_test

// A cache root with hostile contents: symlinks planted where kcache keeps
// blobs, staging directories and lock files, pointing outside the root, are
// never followed for writing or deletion; a regular file where a directory
// belongs is a clear error naming the path; files get the documented modes.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kcache/kcache"
)

var hostileMeta = kcache.Metadata{Arch: "x86_64", ImageName: "bzImage", Source: kcache.Source{Type: "tarball"}}

func hostileImage(t *testing.T, content string) (path, digest string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "bzImage")
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(content))
	return path, hex.EncodeToString(sum[:])
}

// outsideState records a path outside the cache: whether it exists, and its
// content and mtime when it is a file.
type outsideState struct {
	exists  bool
	content []byte
	mtime   time.Time
}

func outsideOf(t *testing.T, p string) outsideState {
	t.Helper()
	fi, err := os.Lstat(p)
	if errors.Is(err, os.ErrNotExist) {
		return outsideState{}
	}
	if err != nil {
		t.Fatal(err)
	}
	s := outsideState{exists: true, mtime: fi.ModTime()}
	if fi.Mode().IsRegular() {
		if s.content, err = os.ReadFile(p); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func (s outsideState) same(o outsideState) bool {
	return s.exists == o.exists && bytes.Equal(s.content, o.content) && s.mtime.Equal(o.mtime)
}

func hostileCache(root string) *kcache.Cache {
	return mustOpen(root, &kcache.Options{IndexTimeout: 5 * time.Second, StoreLockTimeout: 2 * time.Second})
}

// Symlinks at .locks/<key>.lock, .tmp/<id>, .tmp/<id>.lock and
// blobs/sha256/<xx>/<digest> pointing outside the root: after store, rm, gc
// and sweep every outside target is unchanged (existence, content, mtime).
func TestHostileSymlinks(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	c := hostileCache(root)
	ctx := context.Background()
	vmlinux := filepath.Join("testdata", "sample", "vmlinux")
	seed, _ := hostileImage(t, "seed image")
	if _, err := c.Store(ctx, "seed", kcache.Artifacts{Image: seed, Vmlinux: vmlinux}, hostileMeta); err != nil {
		t.Fatal(err)
	}

	// Outside targets.
	missingLockTarget := filepath.Join(outside, "created-by-lock")
	existingLockTarget := filepath.Join(outside, "existing-lock-target")
	stagingTargetDir := filepath.Join(outside, "staging-dir")
	stagingLockTarget := filepath.Join(outside, "staging-lock")
	blobTarget := filepath.Join(outside, "blob-target")
	img, digest := hostileImage(t, "the image whose blob path is a planted symlink")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(existingLockTarget, []byte("precious"), 0o600))
	must(os.MkdirAll(stagingTargetDir, 0o755))
	must(os.WriteFile(filepath.Join(stagingTargetDir, "file"), []byte("precious"), 0o644))
	must(os.WriteFile(stagingLockTarget, []byte("precious"), 0o644))
	// Same size as the image, other bytes: a store that trusted a stat
	// through the link would "deduplicate" against it.
	must(os.WriteFile(blobTarget, bytes.Repeat([]byte("x"), len("the image whose blob path is a planted symlink")), 0o644))
	old := time.Now().Add(-48 * time.Hour)
	for _, p := range []string{existingLockTarget, stagingTargetDir, stagingLockTarget, blobTarget} {
		must(os.Chtimes(p, old, old))
	}

	// Planted links.
	must(os.Symlink(missingLockTarget, c.LockPath("victim-missing")))
	must(os.Symlink(existingLockTarget, c.LockPath("victim-existing")))
	tmp := filepath.Join(root, ".tmp")
	must(os.MkdirAll(tmp, 0o755))
	must(os.Symlink(stagingTargetDir, filepath.Join(tmp, "999999-deadbeef0000")))
	must(os.Symlink(stagingLockTarget, filepath.Join(tmp, "999999-deadbeef0000.lock")))
	must(os.Symlink(stagingTargetDir, filepath.Join(tmp, "999998-deadbeef0001")))
	blob := c.BlobPath(digest)
	must(os.MkdirAll(filepath.Dir(blob), 0o755))
	must(os.Symlink(blobTarget, blob))

	targets := []string{missingLockTarget, existingLockTarget, stagingTargetDir, filepath.Join(stagingTargetDir, "file"), stagingLockTarget, blobTarget}
	before := map[string]outsideState{}
	for _, p := range targets {
		before[p] = outsideOf(t, p)
	}

	// Operations on the keys whose lock files are links: refused, naming
	// the lock file.
	for _, key := range []string{"victim-missing", "victim-existing"} {
		_, err := c.Store(ctx, key, kcache.Artifacts{Image: seed, Vmlinux: vmlinux}, hostileMeta)
		if err == nil || !strings.Contains(err.Error(), "symlink") || !strings.Contains(err.Error(), c.LockPath(key)) {
			t.Errorf("store %s with a symlinked lock file: %v (want a refusal naming %s)", key, err, c.LockPath(key))
		}
		if err := c.Remove(ctx, key, kcache.RemoveOptions{}); err == nil {
			t.Errorf("rm %s: no error", key)
		}
		if l, err := c.AcquireShared(ctx, key, kcache.LockOptions{Timeout: time.Second}); err == nil {
			l.Release()
			t.Errorf("AcquireShared %s followed a symlinked lock file", key)
		}
	}
	// A store whose blob path is a planted link: the blob must be a real
	// file with the right bytes afterwards.
	e, err := c.Store(ctx, "blobkey", kcache.Artifacts{Image: img, Vmlinux: vmlinux}, hostileMeta)
	if err != nil {
		t.Fatalf("store over a symlinked blob path: %v", err)
	}
	if fi, err := os.Lstat(e.ImagePath); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("blob %s after the store: %v, %v (want a regular file)", e.ImagePath, fi.Mode(), err)
	}
	if data, _ := os.ReadFile(e.ImagePath); !bytes.Equal(data, []byte("the image whose blob path is a planted symlink")) {
		t.Errorf("the entry's image reads %q", data)
	}
	// rm, gc with a zero-ish grace, and a sweep.
	if err := c.Remove(ctx, "blobkey", kcache.RemoveOptions{}); err != nil {
		t.Errorf("rm blobkey: %v", err)
	}
	must(os.Symlink(blobTarget, blob)) // plant again for gc and sweep
	keep := 0
	if _, err := c.GC(ctx, kcache.GCOptions{Keep: &keep, NoGrace: true}); err != nil {
		t.Errorf("gc: %v", err)
	}
	if _, err := c.Sweep(ctx, kcache.SweepOptions{NoGrace: true}); err != nil {
		t.Errorf("sweep: %v", err)
	}
	if _, err := c.Doctor(ctx, kcache.DoctorOptions{}); err != nil {
		t.Errorf("doctor: %v", err)
	}
	for _, p := range targets {
		if after := outsideOf(t, p); !after.same(before[p]) {
			t.Errorf("outside target %s changed: before %+v, after %+v", p, before[p], after)
		}
	}
}

// A regular file where kcache expects a directory gives an error naming the
// path, never a panic.
func TestHostileFileForDir(t *testing.T) {
	vmlinux := filepath.Join("testdata", "sample", "vmlinux")
	for _, name := range []string{"blobs", filepath.Join("blobs", "sha256"), ".tmp", ".locks"} {
		t.Run(strings.ReplaceAll(name, "/", "_"), func(t *testing.T) {
			root := t.TempDir()
			c := hostileCache(root)
			img, _ := hostileImage(t, "image "+name)
			if _, err := c.Store(context.Background(), "first", kcache.Artifacts{Image: img, Vmlinux: vmlinux}, hostileMeta); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(root, name)
			if err := os.RemoveAll(p); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte("not a directory"), 0o644); err != nil {
				t.Fatal(err)
			}
			img2, _ := hostileImage(t, "second image "+name)
			_, err := c.Store(context.Background(), "second", kcache.Artifacts{Image: img2, Vmlinux: vmlinux}, hostileMeta)
			if err == nil || !strings.Contains(err.Error(), p) {
				t.Errorf("store with %s a file: %v (want an error naming %s)", name, err, p)
			}
			t.Logf("store: %v", err)
			keep := 0
			if _, err := c.GC(context.Background(), kcache.GCOptions{Keep: &keep, NoGrace: true}); err != nil {
				t.Logf("gc: %v", err)
				if !strings.Contains(err.Error(), p) {
					t.Errorf("gc with %s a file: %v (want an error naming %s)", name, err, p)
				}
			}
			if _, err := c.List(context.Background(), kcache.ListOptions{}); err != nil {
				t.Logf("list: %v", err)
			}
		})
	}
}

// Modes: blobs 0444, directories at most 0755 (staging 0700), index.db
// 0644, lock files 0666 minus the umask (shared between users).
func TestHostileFileModes(t *testing.T) {
	umask := syscall.Umask(0)
	syscall.Umask(umask)
	root := t.TempDir()
	c := hostileCache(root)
	img, _ := hostileImage(t, "modes")
	e, err := c.Store(context.Background(), "modes", kcache.Artifacts{Image: img, Vmlinux: filepath.Join("testdata", "sample", "vmlinux")}, hostileMeta)
	if err != nil {
		t.Fatal(err)
	}
	mode := func(p string) os.FileMode {
		t.Helper()
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Mode()
	}
	for _, p := range []string{e.ImagePath, e.VmlinuxPath} {
		if m := mode(p); m != 0o444 {
			t.Errorf("blob %s: mode %v, want -r--r--r--", p, m)
		}
	}
	if m := mode(c.IndexPath()); m.Perm() != 0o644&^os.FileMode(umask) {
		t.Errorf("index.db: mode %v, want %v", m, 0o644&^os.FileMode(umask))
	}
	if m := mode(c.LockPath("modes")); m.Perm() != 0o666&^os.FileMode(umask) {
		t.Errorf("lock file: mode %v, want %v", m, 0o666&^os.FileMode(umask))
	}
	err = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		if m := mode(p); m.Perm()&^0o755 != 0 {
			t.Errorf("directory %s: mode %v, wider than 0755", p, m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("umask %03o: blobs 0444, index.db %v, lock files %v", umask, mode(c.IndexPath()).Perm(), mode(c.LockPath("modes")).Perm())
}

// Removing a stored entry whose lock file was replaced by a symlink is
// refused with an error that names the lock file, and names the key once.
func TestRemoveSymlinkedLockFile(t *testing.T) {
	c, _ := newCache(t)
	storeImage(t, c, "k", []byte("image of k"), nil)
	target := filepath.Join(t.TempDir(), "elsewhere")
	if err := os.Remove(c.LockPath("k")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, c.LockPath("k")); err != nil {
		t.Fatal(err)
	}
	err := c.Remove(context.Background(), "k", kcache.RemoveOptions{})
	if err == nil || !strings.Contains(err.Error(), "symlink") || !strings.Contains(err.Error(), c.LockPath("k")) {
		t.Fatalf("rm with a symlinked lock file: %v (want a refusal naming %s)", err, c.LockPath("k"))
	}
	if n := strings.Count(err.Error(), `remove "k"`); n != 1 {
		t.Errorf("rm error says `remove \"k\"` %d times, want once: %v", n, err)
	}
	if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("rm created the symlink's target: %v", err)
	}
	if _, err := c.Lookup(context.Background(), "k"); err != nil {
		t.Errorf("entry after the refused rm: %v", err)
	}
}
