package main

// Process-level tests of `kcache run` and of commands meeting locks held by
// other processes. Every kcache here is a separate process (kcacheCmd), and
// so is every lock holder.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kcache/kcache"
	"github.com/kcache/kcache/index"
	"github.com/kcache/kcache/lock"
)

// rpGuard bounds every wait for a process: a guard against hangs, not a
// performance expectation.
const rpGuard = 60 * time.Second

// rpSample is the sample kernel in the module's testdata.
var rpSample = struct{ image, vmlinux string }{
	filepath.Join("..", "..", "testdata", "sample", "bzImage"),
	filepath.Join("..", "..", "testdata", "sample", "vmlinux"),
}

// rpStore stores image (and the sample vmlinux) under key and returns the
// entry as the library sees it.
func rpStore(t *testing.T, root, key, image string) *kcache.Entry {
	t.Helper()
	if _, stderr, code := runIn(t, root, "store", key, "--image", image, "--vmlinux", rpSample.vmlinux); code != 0 {
		t.Fatalf("store %s: exit %d\n%s", key, code, stderr)
	}
	e, err := mustOpen(root, &kcache.Options{}).Lookup(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// rpOtherImage writes a boot image that differs from the sample's.
func rpOtherImage(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(rpSample.image)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "bzImage")
	if err := os.WriteFile(p, append(data, "another build"...), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// rpBackground is a kcache process started in its own process group, so
// that the test can kill it together with whatever it started.
type rpBackground struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer // valid after done
	done           chan struct{}
	err            error
}

// rpStart starts kcache ARGS in the background. When the test ends, its
// process group (it and its children) is killed if it is still running.
func rpStart(t *testing.T, root string, args ...string) *rpBackground {
	t.Helper()
	b := &rpBackground{cmd: kcacheCmd(t, root, args...), done: make(chan struct{})}
	b.cmd.Stdout, b.cmd.Stderr = &b.stdout, &b.stderr
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// A command that outlives kcache run would keep the output pipes open;
	// do not wait for it once kcache itself has exited.
	b.cmd.WaitDelay = 2 * time.Second
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		b.err = b.cmd.Wait()
		close(b.done)
	}()
	t.Cleanup(func() {
		if !b.exited() {
			_ = syscall.Kill(-b.pid(), syscall.SIGKILL)
		}
		select {
		case <-b.done:
		case <-time.After(rpGuard):
			t.Errorf("kcache %s (pid %d) was not reaped", strings.Join(args, " "), b.pid())
		}
	})
	return b
}

func (b *rpBackground) pid() int { return b.cmd.Process.Pid }

func (b *rpBackground) exited() bool {
	select {
	case <-b.done:
		return true
	default:
		return false
	}
}

// wait waits for the process and returns its exit code.
func (b *rpBackground) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-b.done:
	case <-time.After(rpGuard):
		_ = syscall.Kill(-b.pid(), syscall.SIGKILL)
		t.Fatalf("kcache (pid %d) did not exit within %s (hang guard)", b.pid(), rpGuard)
	}
	var ee *exec.ExitError
	if b.err != nil && !errors.As(b.err, &ee) && !errors.Is(b.err, exec.ErrWaitDelay) {
		t.Fatal(b.err)
	}
	return b.cmd.ProcessState.ExitCode()
}

// rpRun runs kcache ARGS as a separate process with a hang guard.
func rpRun(t *testing.T, root string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	b := rpStart(t, root, args...)
	code = b.wait(t)
	return b.stdout.String(), b.stderr.String(), code
}

// rpEventually polls cond until it holds, failing the test after rpGuard.
func rpEventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(rpGuard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s (hang guard)", what, rpGuard)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// rpHolds reports whether pid holds path's lock in mode ("shared" or
// "exclusive"), as /proc/locks says.
func rpHolds(t *testing.T, path string, pid int, mode string) bool {
	t.Helper()
	hs, err := lock.Holders(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		if h.PID == pid && h.Mode == mode {
			return true
		}
	}
	return false
}

// rpChildren returns the pids whose parent is pid.
func rpChildren(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may contain spaces and parentheses.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) >= 2 && f[1] == strconv.Itoa(pid) {
			out = append(out, child)
		}
	}
	return out
}

// rpLocks runs `kcache locks --json` and returns what it reports.
func rpLocks(t *testing.T, root string) (l struct {
	Index struct {
		Holders []lock.Holder `json:"holders"`
	} `json:"index"`
	Locks []kcache.HeldLock `json:"locks"`
}) {
	t.Helper()
	stdout, stderr, code := rpRun(t, root, "locks", "--json")
	if code != 0 {
		t.Fatalf("locks --json: exit %d\n%s", code, stderr)
	}
	if err := json.Unmarshal([]byte(stdout), &l); err != nil {
		t.Fatalf("locks --json: %v\n%s", err, stdout)
	}
	return l
}

// `kcache run` gives the command the entry's paths — the same ones `kcache
// lookup` prints — and exits with the command's status.
func TestRunProcessEnvAndExitStatus(t *testing.T) {
	const key = "run-env"
	root := t.TempDir()
	rpStore(t, root, key, rpSample.image)
	paths, stderr, code := rpRun(t, root, "lookup", key)
	if code != 0 {
		t.Fatalf("lookup: exit %d\n%s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(paths), "\n")
	if len(lines) != 2 {
		t.Fatalf("lookup printed %q; want the image and vmlinux paths", paths)
	}
	stdout, stderr, code := rpRun(t, root, "run", key, "--", "sh", "-c", `echo "$KCACHE_KEY $KCACHE_IMAGE $KCACHE_VMLINUX"; exit 7`)
	if code != 7 {
		t.Errorf("run: exit %d, want the command's 7\n%s", code, stderr)
	}
	if want := key + " " + lines[0] + " " + lines[1] + "\n"; stdout != want {
		t.Errorf("run: the command printed %q, want %q", stdout, want)
	}
}

// While `kcache run` holds an entry, rm refuses at once (exit 4) and store
// gives up after --lock-timeout (exit 4), both naming the run process;
// locks lists it; a store with a long wait waits it out and then succeeds.
func TestRunProcessHoldsEntryAgainstRmAndStore(t *testing.T) {
	const key = "run-held"
	root := t.TempDir()
	c := mustOpen(root, &kcache.Options{})
	old := rpStore(t, root, key, rpSample.image)
	newImage := rpOtherImage(t)

	run := rpStart(t, root, "run", key, "--", "sleep", "30")
	rpEventually(t, "kcache run holds the entry shared", func() bool {
		if run.exited() {
			t.Fatalf("kcache run exited early: %v\n%s", run.err, run.stderr.String())
		}
		return rpHolds(t, c.LockPath(key), run.pid(), "shared")
	})
	holder := fmt.Sprintf("pid=%d ", run.pid())
	cmdline := "run " + key + " -- sleep 30"

	_, stderr, code := rpRun(t, root, "rm", key)
	if code != exitInUse {
		t.Errorf("rm while run holds the entry: exit %d, want %d\n%s", code, exitInUse, stderr)
	}
	if !strings.Contains(stderr, holder) || !strings.Contains(stderr, cmdline) {
		t.Errorf("rm: stderr does not name the holder (%q, %q):\n%s", holder, cmdline, stderr)
	}

	_, stderr, code = rpRun(t, root, "store", key, "--image", newImage, "--vmlinux", rpSample.vmlinux, "--lock-timeout", "1s")
	if code != exitInUse {
		t.Errorf("store --lock-timeout 1s while run holds the entry: exit %d, want %d\n%s", code, exitInUse, stderr)
	}
	if !strings.Contains(stderr, holder) || !strings.Contains(stderr, cmdline) {
		t.Errorf("store: stderr does not name the holder (%q, %q):\n%s", holder, cmdline, stderr)
	}

	locks := rpLocks(t, root)
	found := false
	for _, l := range locks.Locks {
		for _, h := range l.Holders {
			if l.Key == key && h.PID == run.pid() && h.Mode == "shared" && strings.Contains(h.Cmdline, cmdline) {
				found = true
			}
		}
	}
	if !found {
		t.Errorf("locks --json does not list %s held shared by pid %d: %+v", key, run.pid(), locks.Locks)
	}

	// A store with the default wait outlasts the holder.
	store := rpStart(t, root, "store", key, "--image", newImage, "--vmlinux", rpSample.vmlinux)
	time.Sleep(300 * time.Millisecond) // give a store that ignores the lock time to show it
	if store.exited() {
		t.Fatalf("store finished while run held the entry: %v\n%s", store.err, store.stderr.String())
	}
	if e, err := c.Lookup(context.Background(), key); err != nil || e.Manifest.Digest != old.Manifest.Digest {
		t.Fatalf("the entry changed while run held it (err %v)", err)
	}

	if err := run.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := run.wait(t); code != 128+int(syscall.SIGTERM) {
		t.Errorf("run after SIGTERM: exit %d, want %d\n%s", code, 128+int(syscall.SIGTERM), run.stderr.String())
	}
	if code := store.wait(t); code != 0 {
		t.Fatalf("store after run ended: exit %d\n%s", code, store.stderr.String())
	}
	e, err := c.Lookup(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(newImage)
	if err != nil {
		t.Fatal(err)
	}
	if e.Image.Size != int64(len(data)) || e.Image.Digest == old.Image.Digest {
		t.Errorf("after the waiting store the image is %s (%d bytes); want the new one (%d bytes)", e.Image.Digest, e.Image.Size, len(data))
	}

	if _, stderr, code := rpRun(t, root, "rm", key); code != 0 {
		t.Errorf("rm after run ended: exit %d\n%s", code, stderr)
	}
	if _, _, code := rpRun(t, root, "lookup", key); code != exitNotFound {
		t.Errorf("lookup after rm: exit %d, want %d", code, exitNotFound)
	}
}

// `kcache run` passes SIGTERM on to its command and exits 128+15 when the
// command dies of it; the command is gone and so is the lock.
func TestRunProcessForwardsSIGTERM(t *testing.T) {
	const key = "run-term"
	root := t.TempDir()
	c := mustOpen(root, &kcache.Options{})
	rpStore(t, root, key, rpSample.image)

	run := rpStart(t, root, "run", key, "--", "sleep", "30")
	var child int
	// The signal handler is installed before the command starts, so once
	// the child exists, SIGTERM is ours to forward.
	rpEventually(t, "kcache run starts sleep", func() bool {
		if run.exited() {
			t.Fatalf("kcache run exited early: %v\n%s", run.err, run.stderr.String())
		}
		if kids := rpChildren(run.pid()); len(kids) == 1 {
			child = kids[0]
			return true
		}
		return false
	})
	if err := run.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := run.wait(t); code != 128+int(syscall.SIGTERM) {
		t.Errorf("run after SIGTERM: exit %d, want %d\n%s", code, 128+int(syscall.SIGTERM), run.stderr.String())
	}
	if err := syscall.Kill(child, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("the command (pid %d) outlived kcache run (kill -0: %v)", child, err)
	}
	if hs, err := lock.Holders(c.LockPath(key)); err != nil || len(hs) != 0 {
		t.Errorf("entry lock after run ended: holders %v, err %v", hs, err)
	}
}

// TestRunProcessHelperHoldIndex is not a test: run with
// KCACHE_TEST_HOLD_INDEX=<path> it opens that index read-write, prints
// "ready" and holds it until its stdin closes.
func TestRunProcessHelperHoldIndex(t *testing.T) {
	path := os.Getenv("KCACHE_TEST_HOLD_INDEX")
	if path == "" {
		return
	}
	db, err := index.Open(path, index.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	_ = db.Close()
	os.Exit(0)
}

// Commands against an index another process holds read-write fail with
// exit 1 after --index-timeout, naming the holder, instead of hanging.
func TestRunProcessIndexHeld(t *testing.T) {
	const key = "index-held"
	root := t.TempDir()
	rpStore(t, root, key, rpSample.image)

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	holder := exec.Command(exe, "-test.run=^TestRunProcessHelperHoldIndex$")
	holder.Env = append(os.Environ(), "KCACHE_TEST_HOLD_INDEX="+filepath.Join(root, "index.db"))
	var holderErr bytes.Buffer
	holder.Stderr = &holderErr
	stdin, err := holder.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- line
		_, _ = io.Copy(io.Discard, stdout)
	}()
	t.Cleanup(func() {
		stdin.Close()
		_ = holder.Process.Kill()
		_ = holder.Wait()
	})
	select {
	case line := <-ready:
		if line != "ready\n" {
			t.Fatalf("index holder: %q\n%s", line, holderErr.String())
		}
	case <-time.After(rpGuard):
		t.Fatalf("index holder never got ready (hang guard)")
	}
	pid := fmt.Sprintf("pid=%d ", holder.Process.Pid)

	for _, args := range [][]string{
		{"lookup", key},
		{"list"},
		{"store", key, "--image", rpSample.image},
	} {
		_, stderr, code := rpRun(t, root, append([]string{"--index-timeout", "500ms"}, args...)...)
		if code != exitError {
			t.Errorf("%s while the index is held: exit %d, want %d\n%s", args[0], code, exitError, stderr)
		}
		if !strings.Contains(stderr, pid) || !strings.Contains(stderr, "TestRunProcessHelperHoldIndex") {
			t.Errorf("%s: stderr does not name the index holder (%q):\n%s", args[0], pid, stderr)
		}
	}
	locks := rpLocks(t, root)
	if len(locks.Index.Holders) != 1 || locks.Index.Holders[0].PID != holder.Process.Pid || locks.Index.Holders[0].Mode != "exclusive" {
		t.Errorf("locks --json index holders: %+v; want pid %d exclusive", locks.Index.Holders, holder.Process.Pid)
	}

	stdin.Close() // the holder closes the index and exits
	if _, stderr, code := rpRun(t, root, "--index-timeout", "5s", "lookup", key); code != 0 {
		t.Errorf("lookup after the holder let go: exit %d\n%s", code, stderr)
	}
}

// TestRunMissingKeyCreatesNothing: run of a key that is not cached exits 3
// without running the command or creating a lock file (or the root).
func TestRunMissingKeyCreatesNothing(t *testing.T) {
	root := filepath.Join(t.TempDir(), "cache")
	marker := filepath.Join(t.TempDir(), "ran")
	_, stderr, code := runIn(t, root, "run", "nope", "--", "touch", marker)
	if code != exitNotFound || !strings.Contains(stderr, `"nope"`) {
		t.Fatalf("run of a missing key: exit %d, stderr %q; want 3 naming the key", code, stderr)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("the command ran although the key is not cached")
	}
	if _, err := os.Stat(root); !os.IsNotExist(err) {
		t.Errorf("run of a missing key created %s", root)
	}
}
