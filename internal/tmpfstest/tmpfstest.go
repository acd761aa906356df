// Package tmpfstest mounts small tmpfs filesystems for tests that need a
// real full disk (ENOSPC from the kernel, not a simulated error).
package tmpfstest

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Mount mounts a tmpfs of the given size (mount's size= syntax, e.g. "8m")
// on a new directory and unmounts it when the test ends. Mounting needs
// root or CAP_SYS_ADMIN: without it the test is skipped, except with
// CI=true, where CI runs as root and a failure to mount fails the test.
func Mount(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput()
	if err != nil {
		msg := fmt.Sprintf("cannot mount a %s tmpfs on %s (needs root or CAP_SYS_ADMIN): %v: %s", size, dir, err, strings.TrimSpace(string(out)))
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + "; CI runs as root, so this is a failure there")
		}
		t.Skip(msg)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}
