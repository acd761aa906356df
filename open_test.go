package kcache_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kcache/kcache"
)

// mustOpen is kcache.Open for tests, whose roots are temporary directories:
// an error there is a bug in the test, so it panics with it.
func mustOpen(root string, opt *kcache.Options) *kcache.Cache {
	c, err := kcache.Open(root, opt)
	if err != nil {
		panic(err)
	}
	return c
}

// TestOpenRejectsEmptyAndNonDirectoryRoots: Open fails at once on an empty
// root and on a root that is a regular file, and creates nothing.
func TestOpenRejectsEmptyAndNonDirectoryRoots(t *testing.T) {
	if c, err := kcache.Open("", nil); err == nil {
		t.Fatalf("Open(\"\") = %v, nil; want an error", c.Root())
	}
	file := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(file, []byte("someone's file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := kcache.Open(file, nil)
	if err == nil || !strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("Open(<a regular file>) = %v; want an error naming it as not a directory", err)
	}
	if data, _ := os.ReadFile(file); string(data) != "someone's file\n" {
		t.Errorf("Open changed the file: %q", data)
	}
	// A root that does not exist yet is fine, and Open creates nothing.
	missing := filepath.Join(t.TempDir(), "later")
	if _, err := kcache.Open(missing, nil); err != nil {
		t.Fatalf("Open(<missing dir>) = %v", err)
	}
	if _, err := os.Lstat(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open created %s (lstat: %v)", missing, err)
	}
}

// TestOpenRelativeRootGivesAbsolutePaths: a relative root is made absolute
// once, so Root, IndexPath, LockPath, BlobPath and a looked-up entry's paths
// are absolute and stay valid after a chdir.
func TestOpenRelativeRootGivesAbsolutePaths(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	c, err := kcache.Open("rr", nil)
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(dir, "rr")
	if c.Root() != want {
		t.Errorf("Root() = %q; want %q", c.Root(), want)
	}
	for _, p := range []string{c.IndexPath(), c.LockPath("k"), c.BlobPath(strings.Repeat("a", 64))} {
		if !filepath.IsAbs(p) || !strings.HasPrefix(p, want+"/") {
			t.Errorf("path %q is not absolute under %s", p, want)
		}
	}
	img := filepath.Join(dir, "bzImage")
	if err := os.WriteFile(img, []byte("image bytes"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Store(t.Context(), "k", kcache.Artifacts{Image: img}, kcache.Metadata{Arch: "x86_64", ImageName: "bzImage", Source: kcache.Source{Type: "tarball"}}); err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir())
	e, err := c.Lookup(context.Background(), "k")
	if err != nil {
		t.Fatal(err)
	}
	if !filepath.IsAbs(e.ImagePath) {
		t.Fatalf("ImagePath %q is not absolute", e.ImagePath)
	}
	if data, err := os.ReadFile(e.ImagePath); err != nil || string(data) != "image bytes" {
		t.Errorf("read %s after a chdir: %q, %v", e.ImagePath, data, err)
	}
}

// warnLogger writes each log record's message on a line of its own, as
// the CLI prints warnings, so tests can look for them in w.
func warnLogger(w io.Writer) *slog.Logger {
	return slog.New(lineHandler{w})
}

type lineHandler struct{ w io.Writer }

func (h lineHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h lineHandler) Handle(_ context.Context, r slog.Record) error {
	_, err := fmt.Fprintf(h.w, "kcache: warning: %s\n", r.Message)
	return err
}
func (h lineHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h lineHandler) WithGroup(string) slog.Handler      { return h }
