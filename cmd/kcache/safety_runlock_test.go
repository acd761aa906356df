package main

// Issue 12 items 10 and 11: the lock of `kcache run` lives exactly as long
// as its command, even when kcache is SIGKILLed; and --read-only run and
// export work on a cache the user may only read.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/kcache/kcache"
	"github.com/kcache/kcache/lock"
)

// TestSafetyRunKilledKeepsLock: `kcache run KEY -- sleep 60` SIGKILLed (only
// kcache, not its command) leaves the entry locked while sleep lives: rm
// exits 4 and names the sleep process; once sleep is killed, rm succeeds.
func TestSafetyRunKilledKeepsLock(t *testing.T) {
	const key = "run-killed"
	root := t.TempDir()
	c := mustOpen(root, &kcache.Options{})
	rpStore(t, root, key, rpSample.image)

	run := rpStart(t, root, "run", key, "--", "sh", "-c", `echo "fd=$KCACHE_LOCK_FD"; exec sleep 60`)
	var child int
	rpEventually(t, "kcache run starts its command, holding the entry", func() bool {
		if run.exited() {
			t.Fatalf("kcache run exited early: %v\n%s", run.err, run.stderr.String())
		}
		kids := rpChildren(run.pid())
		if len(kids) != 1 || !rpHolds(t, c.LockPath(key), run.pid(), "shared") {
			return false
		}
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", kids[0]))
		child = kids[0]
		return strings.TrimSpace(string(comm)) == "sleep"
	})
	if err := run.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code := run.wait(t); code != -1 {
		t.Fatalf("kcache run after SIGKILL: exit %d, want death by signal", code)
	}
	if got := run.stdout.String(); got != "fd=3\n" {
		t.Errorf("the command saw %q; want KCACHE_LOCK_FD=3", got)
	}
	if err := syscall.Kill(child, 0); err != nil {
		t.Fatalf("the command (pid %d) died with kcache: %v", child, err)
	}

	_, stderr, code := rpRun(t, root, "rm", key)
	if code != exitInUse {
		t.Fatalf("rm while the command of a killed run lives: exit %d, want %d\n%s", code, exitInUse, stderr)
	}
	if want := fmt.Sprintf("pid=%d mode=shared cmd=sleep 60", child); !strings.Contains(stderr, want) {
		t.Errorf("rm: stderr does not name the process holding the lock (%q):\n%s", want, stderr)
	}
	if want := fmt.Sprintf("pid %d took", run.pid()); !strings.Contains(stderr, want) {
		t.Errorf("rm: stderr does not say which process took the lock (%q):\n%s", want, stderr)
	}
	if _, err := c.Describe(context.Background(), key); err != nil {
		t.Fatalf("the entry is gone although rm said it is in use: %v", err)
	}

	if err := syscall.Kill(child, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	rpEventually(t, "the killed command lets go of the lock", func() bool {
		hs, err := lock.Holders(c.LockPath(key))
		return err == nil && len(hs) == 0
	})
	if _, stderr, code := rpRun(t, root, "rm", key); code != 0 {
		t.Fatalf("rm after the command died: exit %d\n%s", code, stderr)
	}
	if _, err := c.Describe(context.Background(), key); !errors.Is(err, kcache.ErrNotFound) {
		t.Errorf("after rm: %v, want not found", err)
	}
}

// TestSafetyReadOnlyOtherUsersCache: a cache written by root, readable but
// not writable by others (directories 0755, files and lock files 0644), is
// used by an unprivileged user (uid 65534): `--read-only run KEY -- CMD`
// runs CMD on the entry and `--read-only export KEY DIR` writes it to DIR,
// both exit 0, and nothing in the cache changes.
func TestSafetyReadOnlyOtherUsersCache(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the cache is written by root and read by uid 65534")
	}
	const key = "ro-shared"
	const nobody = 65534
	// Not t.TempDir: its directories are 0700, and uid 65534 must be able
	// to reach the binary, the cache and the destination.
	base, err := os.MkdirTemp("", "kcache-ro-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(base, "bin", "kcache.test")
	rpCopyExecutable(t, bin)

	root := filepath.Join(base, "cache")
	rpStore(t, root, key, rpSample.image)
	if err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.Chmod(p, 0o755)
		}
		return os.Chmod(p, 0o644)
	}); err != nil {
		t.Fatal(err)
	}
	lockFile := mustOpen(root, nil).LockPath(key)
	if fi, err := os.Stat(lockFile); err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("lock file %s after store: %v %v; want it present, mode 0644", lockFile, fi, err)
	}
	before := rpTree(t, root)

	dest := filepath.Join(base, "out")
	if err := os.Mkdir(dest, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dest, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	asNobody := func(args ...string) (string, string, int) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "KCACHE_TEST_AS_CLI=1", "KCACHE_DIR="+root, "HOME="+dest)
		cmd.Dir = dest
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}}}
		return runCmd(t, cmd)
	}
	stdout, stderr, code := asNobody("--read-only", "run", key, "--", "sh", "-c", `cat "$KCACHE_IMAGE" >/dev/null && echo ok`)
	if code != 0 || stdout != "ok\n" {
		t.Errorf("--read-only run as uid %d: exit %d, stdout %q\n%s", nobody, code, stdout, stderr)
	}
	_, stderr, code = asNobody("--read-only", "export", key, dest)
	if code != 0 {
		t.Fatalf("--read-only export as uid %d: exit %d\n%s", nobody, code, stderr)
	}
	want, err := os.ReadFile(rpSample.image)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dest, key, "bzImage"))
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("exported image: %d bytes, %v; want the stored %d bytes", len(got), err, len(want))
	}
	if _, err := os.Stat(filepath.Join(dest, key, "metadata.json")); err != nil {
		t.Errorf("export wrote no metadata.json: %v", err)
	}
	if after := rpTree(t, root); after != before {
		t.Errorf("the read-only commands changed the cache:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestSafetyReadOnlyCreatesNoLockFile: with --read-only, a key whose lock
// file is missing is refused with an error naming the lock file, and no lock
// file (nor .locks directory) is created; the command does not run.
func TestSafetyReadOnlyCreatesNoLockFile(t *testing.T) {
	const key = "ro-nolock"
	root := t.TempDir()
	rpStore(t, root, key, rpSample.image)
	locks := filepath.Join(root, ".locks")
	if err := os.RemoveAll(locks); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(t.TempDir(), "ran")
	for _, args := range [][]string{
		{"--read-only", "run", key, "--", "touch", marker},
		{"--read-only", "export", key, t.TempDir()},
	} {
		_, stderr, code := rpRun(t, root, args...)
		if code != exitError || !strings.Contains(stderr, filepath.Join(locks, key+".lock")) || !strings.Contains(stderr, "does not exist") {
			t.Errorf("%s without a lock file: exit %d; want 1 naming the missing lock file\n%s", strings.Join(args, " "), code, stderr)
		}
		if _, err := os.Stat(locks); !os.IsNotExist(err) {
			t.Fatalf("%s created %s (err %v)", strings.Join(args, " "), locks, err)
		}
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("the command ran without the entry's lock")
	}
}

// rpCopyExecutable copies this test binary to dst (mode 0755, in a 0755
// directory) so that another user can run it as the kcache CLI.
func rpCopyExecutable(t *testing.T, dst string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o755); err != nil {
		t.Fatal(err)
	}
}

// rpTree lists every path under root with its type, mode, size and
// modification time, one per line.
func rpTree(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %s %d %d\n", p, fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}
