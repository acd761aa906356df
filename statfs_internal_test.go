package kcache

import (
	"path/filepath"
	"testing"
)

// statFS measures a path that does not exist yet (a cache root before the
// first store) at its nearest existing parent, absolute or relative.
func TestStatFSOfMissingPath(t *testing.T) {
	dir := t.TempDir()
	_, want, err := statFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(dir, "a", "b", "c"), filepath.Join(dir, "a", "b") + "/"} {
		if _, total, err := statFS(p); err != nil || total != want {
			t.Errorf("statFS(%s) = total %d, %v; want %d as for %s", p, total, err, want, dir)
		}
	}
	t.Chdir(dir)
	if _, total, err := statFS(filepath.Join("no", "such", "dir")); err != nil || total != want {
		t.Errorf("statFS of a relative missing path = total %d, %v; want %d", total, err, want)
	}
}
