package kcache_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kcache/kcache"
)

// TestOpenRejectsEmptyRoot: an empty root fails at Open, before any call can
// scatter files into the current directory.
func TestOpenRejectsEmptyRoot(t *testing.T) {
	t.Chdir(t.TempDir())
	if c, err := kcache.Open("", nil); err == nil {
		t.Fatalf("Open(\"\") = %v, want an error", c.Root())
	}
	if ents, _ := os.ReadDir("."); len(ents) != 0 {
		t.Errorf("Open(\"\") created %d entries in the current directory", len(ents))
	}
}

// TestOpenRejectsRegularFile: a root that exists and is not a directory
// fails at Open, and the file is left as it was.
func TestOpenRejectsRegularFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, []byte("not a cache"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := kcache.Open(f, nil)
	if err == nil {
		t.Fatalf("Open(%s) = cache at %s, want an error", f, c.Root())
	}
	if !strings.Contains(err.Error(), f) {
		t.Errorf("error %q does not name %s", err, f)
	}
	if b, _ := os.ReadFile(f); string(b) != "not a cache" {
		t.Errorf("the file was changed: %q", b)
	}
}

// TestOpenMissingRootCreatesNothing: a root that does not exist yet is
// accepted, and Open alone creates nothing.
func TestOpenMissingRootCreatesNothing(t *testing.T) {
	parent := t.TempDir()
	if _, err := kcache.Open(filepath.Join(parent, "cache"), nil); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(parent); len(ents) != 0 {
		t.Errorf("Open created %d entries under %s", len(ents), parent)
	}
}

// TestRelativeRootGivesAbsolutePaths: a relative root is made absolute at
// Open, so the paths an entry reports stay valid after a chdir.
func TestRelativeRootGivesAbsolutePaths(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	c, err := kcache.Open("rr", &kcache.Options{Warn: os.Stderr})
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "rr"); c.Root() != want {
		t.Errorf("Root() = %s, want %s", c.Root(), want)
	}
	src := t.TempDir()
	img := writeFile(t, src, "bzImage", []byte("relative root image"))
	vml := writeFile(t, src, "vmlinux", []byte("not an ELF"))
	if _, err := c.Store(context.Background(), "k", kcache.Artifacts{Image: img, Vmlinux: vml}, tarball); err != nil {
		t.Fatal(err)
	}
	e, err := c.Lookup(context.Background(), "k")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{c.Root(), c.IndexPath(), c.LockPath("k"), c.BlobPath(e.Image.Digest), e.ImagePath, e.VmlinuxPath} {
		if !filepath.IsAbs(p) {
			t.Errorf("%s is not absolute", p)
		}
	}
	t.Chdir(t.TempDir())
	if b, err := os.ReadFile(e.ImagePath); err != nil || string(b) != "relative root image" {
		t.Errorf("after chdir, %s: %q, %v", e.ImagePath, b, err)
	}
}
