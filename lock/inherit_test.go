package lock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// startInheritor starts `sleep 60` with l's descriptor as its fd 3 and
// kills it when the test ends.
func startInheritor(t *testing.T, l *Lock) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	cmd.ExtraFiles = []*os.File{l.File()}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

// TestSafetyInheritedLockOutlivesTaker: a lock whose descriptor a child
// inherited stays held after the taker detaches (as when the taker is
// killed); Holders names the child and the taker's pid; when the child
// exits the lock is free.
func TestSafetyInheritedLockOutlivesTaker(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k.lock")
	l, err := Acquire(context.Background(), path, Shared, 0, `cache entry "k"`)
	if err != nil {
		t.Fatal(err)
	}
	child := startInheritor(t, l)
	if err := l.Detach(); err != nil {
		t.Fatal(err)
	}
	_, err = Acquire(context.Background(), path, Exclusive, 0, `cache entry "k"`)
	var ce *ContendedError
	if !errors.As(err, &ce) {
		t.Fatalf("exclusive lock while the child holds the inherited one = %v; want contended", err)
	}
	if len(ce.Holders) != 1 || ce.Holders[0].LockedBy == nil {
		t.Fatalf("holders = %+v; want the child, with LockedBy set", ce.Holders)
	}
	got := ce.Holders[0]
	if got.PID != child.Process.Pid || got.Mode != "shared" || got.Cmdline != "sleep 60" || *got.LockedBy != os.Getpid() {
		t.Errorf("holder = pid %d mode %s cmd %q locked by %d; want pid %d shared \"sleep 60\" locked by %d",
			got.PID, got.Mode, got.Cmdline, *got.LockedBy, child.Process.Pid, os.Getpid())
	}
	if msg := err.Error(); !strings.Contains(msg, fmt.Sprintf("pid=%d mode=shared cmd=sleep 60 (holds the lock pid %d took", child.Process.Pid, os.Getpid())) {
		t.Errorf("error does not name the inheritor and the taker:\n%s", msg)
	}

	_ = child.Process.Kill()
	_ = child.Wait()
	ex, err := Acquire(context.Background(), path, Exclusive, 5*time.Second, "k")
	if err != nil {
		t.Fatalf("after the child exited: %v", err)
	}
	ex.Release()
}

// Release unlocks for every holder of the descriptor (LOCK_UN acts on the
// open file description), which is why kcache run detaches instead.
func TestReleaseEndsTheInheritedLockToo(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k.lock")
	l, err := Acquire(context.Background(), path, Shared, 0, "k")
	if err != nil {
		t.Fatal(err)
	}
	startInheritor(t, l)
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	ex, err := Acquire(context.Background(), path, Exclusive, 0, "k")
	if err != nil {
		t.Fatalf("after Release with an inheritor alive: %v", err)
	}
	ex.Release()
}

// TestSafetySharedLockIsReadOnly: a shared lock opens its file O_RDONLY (so
// a reader needs no write permission on another user's lock file), and
// AcquireExisting creates neither the file nor its directory.
func TestSafetySharedLockIsReadOnly(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "k.lock")
	l, err := Acquire(context.Background(), path, Shared, 0, "k")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	fl, err := unix.FcntlInt(l.File().Fd(), unix.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	if fl&unix.O_ACCMODE != unix.O_RDONLY {
		t.Errorf("shared lock descriptor flags %#o; want O_RDONLY", fl)
	}

	missing := filepath.Join(dir, "sub", "m.lock")
	if _, err := AcquireExisting(context.Background(), missing, Shared, 0, "m"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("AcquireExisting of a missing file = %v; want ErrNotExist", err)
	}
	if _, err := os.Stat(filepath.Dir(missing)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("AcquireExisting created %s (stat: %v)", filepath.Dir(missing), err)
	}
	ro, err := AcquireExisting(context.Background(), path, Shared, 0, "k")
	if err != nil {
		t.Fatalf("AcquireExisting of an existing file: %v", err)
	}
	ro.Release()
}
