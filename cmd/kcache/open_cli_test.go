package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestCLIRelativeRootPrintsAbsolutePaths: `kcache --root rr lookup k`
// prints absolute paths (a harness may change directory or hand them to
// qemu), and a --root that is a regular file fails at once, naming it.
func TestCLIRelativeRootPrintsAbsolutePaths(t *testing.T) {
	dir := t.TempDir()
	img := cliWrite(t, dir, "bzImage", "image of k")
	cmd := kcacheCmd(t, "", "--root", "rr", "store", "k", "--image", img, "--arch", "x86_64")
	cmd.Dir = dir
	if _, stderr, code := runCmd(t, cmd); code != 0 {
		t.Fatalf("store with --root rr: exit %d: %s", code, stderr)
	}
	cmd = kcacheCmd(t, "", "--root", "rr", "lookup", "k")
	cmd.Dir = dir
	stdout, stderr, code := runCmd(t, cmd)
	if code != 0 {
		t.Fatalf("lookup with --root rr: exit %d: %s", code, stderr)
	}
	path := strings.TrimSpace(stdout)
	if want := filepath.Join(dir, "rr", "blobs") + "/"; !strings.HasPrefix(path, want) {
		t.Errorf("lookup printed %q; want an absolute path under %s", path, want)
	}

	cmd = kcacheCmd(t, "", "--root", img, "list")
	_, stderr, code = runCmd(t, cmd)
	if code != 1 || !strings.Contains(stderr, img) || !strings.Contains(stderr, "not a directory") {
		t.Errorf("list with --root <a file>: exit %d, stderr %q; want exit 1 naming it as not a directory", code, stderr)
	}
}
