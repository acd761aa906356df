package kcache_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kcache/kcache"
)

// TestNilLoggerIsQuiet: a cache opened without a Logger prints nothing on
// the process's stderr, even for events that warn (a vmlinux that cannot be
// stripped is stored whole, and every lookup of it warns); with a Logger,
// the same events reach it, and the entry says the same in a field.
func TestNilLoggerIsQuiet(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "bzImage")
	notELF := filepath.Join(dir, "vmlinux")
	for p, data := range map[string]string{img: "image bytes", notELF: "not an ELF file at all"} {
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	meta := kcache.Metadata{Arch: "x86_64", ImageName: "bzImage", Source: kcache.Source{Type: "tarball"}}
	run := func(c *kcache.Cache) *kcache.Entry {
		if _, err := c.Store(t.Context(), "k", kcache.Artifacts{Image: img, Vmlinux: notELF}, meta); err != nil {
			t.Fatal(err)
		}
		e, err := c.Lookup(context.Background(), "k")
		if err != nil {
			t.Fatal(err)
		}
		return e
	}

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stderr
	os.Stderr = w
	e := run(mustOpen(filepath.Join(t.TempDir(), "quiet"), nil))
	os.Stderr = saved
	w.Close()
	printed, _ := io.ReadAll(r)
	if len(printed) != 0 {
		t.Errorf("a cache without a Logger wrote to stderr: %q", printed)
	}
	if e.VmlinuxStripped {
		t.Errorf("entry says the vmlinux is stripped; want the field to carry what the warning says")
	}

	var got bytes.Buffer
	run(mustOpen(filepath.Join(t.TempDir(), "logged"), &kcache.Options{Logger: warnLogger(&got)}))
	if !strings.Contains(got.String(), "could not strip vmlinux") || !strings.Contains(got.String(), "unstripped vmlinux") {
		t.Errorf("the Logger did not receive the strip and lookup warnings:\n%s", got.String())
	}
}
