package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kcache/kcache/internal/failpoint"
	"github.com/kcache/kcache/internal/s3test"
	"github.com/kcache/kcache/remote"
	"github.com/kcache/kcache/remote/s3"
)

// The test binary carries the S3 client, as kcache-remote does (the default
// build delegates to it; TestCLIRemoteThroughHelper covers that path).
func init() {
	openS3 = func(cfg remoteFlags) (remote.Remote, error) {
		return s3.Open(s3.Config{URL: cfg.url, Endpoint: cfg.endpoint, Insecure: cfg.insecure})
	}
}

// remoteRun runs kcache as a process with srv's bucket configured through
// the environment, as a user would.
func remoteRun(t *testing.T, srv *s3test.Server, root string, extraEnv []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := kcacheCmd(t, root, args...)
	cmd.Env = append(append(cmd.Env, srv.Env("ci")...), extraEnv...)
	return runCmd(t, cmd)
}

// listForComparison is `list --json` without the fields that are each
// cache's own: paths, when the entry arrived, when it was used.
func listForComparison(t *testing.T, root string) []map[string]any {
	t.Helper()
	out, stderr, code := runIn(t, root, "list", "--json")
	if code != 0 {
		t.Fatalf("list: %s", stderr)
	}
	var doc struct{ Entries []map[string]any }
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatal(err)
	}
	l := doc.Entries
	for _, e := range l {
		for _, k := range []string{"image_path", "vmlinux_path", "stored_at", "last_used"} {
			delete(e, k)
		}
		if src, ok := e["source"].(map[string]any); ok {
			delete(src, "source_tree_path")
		}
	}
	return l
}

func TestCLIPushPullRoundTrip(t *testing.T) {
	srv := s3test.Start(t)
	a, b, c := t.TempDir(), t.TempDir(), t.TempDir()
	cliOK(t, a, "store", "k1", "--image", cliSampleImage, "--vmlinux", cliSampleVmlinux, "--version", "6.14.2",
		"--source", "local", "--source-tree", t.TempDir(), "--built-at", "2026-11-01T10:00:00Z")
	cliOK(t, a, "store", "k2", "--image", cliSampleImage, "--built-at", "2026-11-02T10:00:00Z")

	out, stderr, code := remoteRun(t, srv, a, nil, "push", "--all", "--json")
	if code != 0 {
		t.Fatalf("push --all: exit %d: %s", code, stderr)
	}
	var pushed []transferJSON
	if err := json.Unmarshal([]byte(out), &pushed); err != nil {
		t.Fatal(err)
	}
	if len(pushed) != 2 || pushed[0].Remote != srv.URL("ci") {
		t.Fatalf("push --json = %s", out)
	}
	// k2's image is k1's: whichever key went second uploaded no image.
	var imageUploads int
	for _, p := range pushed {
		for _, bl := range p.Blobs {
			if bl.Role == "image" && bl.Transferred {
				imageUploads++
			}
		}
	}
	if imageUploads != 1 {
		t.Errorf("the shared image was uploaded %d times, want once", imageUploads)
	}

	out, stderr, code = remoteRun(t, srv, b, nil, "pull", "k1", "k2")
	if code != 0 || !strings.Contains(out, "pulled k1 from "+srv.URL("ci")) {
		t.Fatalf("pull: exit %d\n%s%s", code, out, stderr)
	}
	wantList, gotList := listForComparison(t, a), listForComparison(t, b)
	if w, g := mustJSON(t, wantList), mustJSON(t, gotList); w != g {
		t.Errorf("list --json after pull differs:\nA %s\nB %s", w, g)
	}
	// Byte-identical blobs.
	for _, key := range []string{"k1", "k2"} {
		oa, _ := cliOK(t, a, "lookup", key)
		ob, _ := cliOK(t, b, "lookup", key)
		pa, pb := strings.Fields(oa), strings.Fields(ob)
		for i := range pa {
			x, _ := os.ReadFile(pa[i])
			y, err := os.ReadFile(pb[i])
			if err != nil || !bytes.Equal(x, y) {
				t.Errorf("%s: %s and %s differ", key, pa[i], pb[i])
			}
		}
	}

	// An unchanged entry pushes no blob bytes; pulling it again is a no-op.
	out, _, code = remoteRun(t, srv, a, nil, "push", "k1")
	if code != 0 || !strings.Contains(out, "no blob uploaded") {
		t.Errorf("second push: %q", out)
	}
	out, _, code = remoteRun(t, srv, b, nil, "pull", "k1")
	if code != 0 || !strings.Contains(out, "up to date") {
		t.Errorf("second pull: %q", out)
	}

	// remote ls.
	out, stderr, code = remoteRun(t, srv, c, nil, "remote", "ls", "--json")
	if code != 0 {
		t.Fatalf("remote ls: %s", stderr)
	}
	var ls []remoteEntryJSON
	if err := json.Unmarshal([]byte(out), &ls); err != nil {
		t.Fatal(err)
	}
	if len(ls) != 2 || ls[0].Key != "k2" || ls[1].Key != "k1" || ls[1].Version == nil || *ls[1].Version != "6.14.2" || !ls[1].HasVmlinux {
		t.Errorf("remote ls --json = %s", out)
	}
	out, _, _ = remoteRun(t, srv, c, nil, "remote", "ls")
	if !strings.HasPrefix(out, "KEY") || !strings.Contains(out, "6.14.2") {
		t.Errorf("remote ls = %q", out)
	}

	// lookup --remote on an empty cache pulls, then answers locally.
	out, stderr, code = remoteRun(t, srv, c, nil, "lookup", "--remote", "k1")
	if code != 0 || len(strings.Fields(out)) != 2 || !strings.HasPrefix(out, c) {
		t.Fatalf("lookup --remote: exit %d: %q %s", code, out, stderr)
	}
	if out, _, code = remoteRun(t, srv, c, nil, "lookup", "--remote", "absent"); code != exitNotFound {
		t.Errorf("lookup --remote of an absent key: exit %d %q", code, out)
	}
	if _, stderr, code = remoteRun(t, srv, c, nil, "pull", "absent"); code != exitNotFound || !strings.Contains(stderr, "manifests/absent") {
		t.Errorf("pull of an absent key: exit %d %q", code, stderr)
	}
	if _, stderr, code = remoteRun(t, srv, c, nil, "push", "absent"); code != exitNotFound {
		t.Errorf("push of an uncached key: exit %d %q", code, stderr)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestCLIRemoteUsageAndFailures(t *testing.T) {
	srv := s3test.Start(t)
	root := t.TempDir()
	cliOK(t, root, "store", "here", "--image", cliSampleImage)
	index := filepath.Join(root, "index.db")
	before, err := os.ReadFile(index)
	if err != nil {
		t.Fatal(err)
	}

	// No remote configured: usage error naming KCACHE_REMOTE.
	cmd := kcacheCmd(t, root, "push", "here")
	for i, kv := range cmd.Env {
		if strings.HasPrefix(kv, "KCACHE_REMOTE=") {
			cmd.Env[i] = "KCACHE_REMOTE="
		}
	}
	var e bytes.Buffer
	cmd.Stderr = &e
	if err := cmd.Run(); cmd.ProcessState.ExitCode() != exitUsage || !strings.Contains(e.String(), "KCACHE_REMOTE=s3://BUCKET/PREFIX") {
		t.Errorf("push without a remote: %v, exit %d, %q", err, cmd.ProcessState.ExitCode(), e.String())
	}
	// A URL after a bare --remote is caught.
	if _, stderr, code := remoteRun(t, srv, root, nil, "push", "--remote", "s3://b/p", "here"); code != exitUsage || !strings.Contains(stderr, "--remote=s3://b/p") {
		t.Errorf("push --remote URL KEY: exit %d %q", code, stderr)
	}
	if _, stderr, code := remoteRun(t, srv, root, nil, "pull", "--remote=s3://x/p", "k"); code != exitUsage || !strings.Contains(stderr, "Bucket name cannot be shorter than 3 characters") {
		t.Errorf("bad bucket name: exit %d %q", code, stderr)
	}

	for name, c := range map[string]struct {
		env  []string
		want string
	}{
		"wrong credentials":    {[]string{"AWS_SECRET_ACCESS_KEY=wrong"}, "AWS_SECRET_ACCESS_KEY"},
		"unreachable endpoint": {[]string{"AWS_ENDPOINT_URL=http://127.0.0.1:1"}, "connection refused"},
		"missing bucket":       {[]string{"KCACHE_REMOTE=s3://no-such-bucket/p"}, `bucket "no-such-bucket" does not exist`},
	} {
		t.Run(name, func(t *testing.T) {
			for _, argv := range [][]string{{"push", "here"}, {"pull", "there"}, {"remote", "ls"}} {
				_, stderr, code := remoteRun(t, srv, root, c.env, argv...)
				if code != exitError || !strings.Contains(stderr, c.want) {
					t.Errorf("%v: exit %d, stderr %q; want 1 and %q", argv, code, stderr, c.want)
				}
			}
			if now, _ := os.ReadFile(index); !bytes.Equal(now, before) {
				t.Error("index.db changed")
			}
			// lookup --remote answers from the local cache, and a miss is a
			// warning plus exit 3.
			if out, stderr, code := remoteRun(t, srv, root, c.env, "--read-only", "lookup", "--remote", "here"); code != 0 || out == "" {
				t.Errorf("lookup --remote of a local key: exit %d %q", code, stderr)
			}
			_, stderr, code := remoteRun(t, srv, root, c.env, "lookup", "--remote", "there")
			if code != exitNotFound || !strings.Contains(stderr, "warning") || !strings.Contains(stderr, c.want) {
				t.Errorf("lookup --remote of a missing key: exit %d %q", code, stderr)
			}
		})
	}
}

// TestCLIPullKilledMidTransfer kills a pull (SIGKILL) while a blob is half
// downloaded and after every blob is in place but before the install: no
// entry appears, and re-running completes it, downloading only what the
// killed run had not finished.
func TestCLIPullKilledMidTransfer(t *testing.T) {
	srv := s3test.Start(t)
	a := t.TempDir()
	cliOK(t, a, "store", "k", "--image", cliSampleImage, "--vmlinux", cliSampleVmlinux)
	if _, stderr, code := remoteRun(t, srv, a, nil, "push", "k"); code != 0 {
		t.Fatal(stderr)
	}
	for _, c := range []struct {
		point     string
		wantBytes func(total int64) bool
	}{
		{failpoint.PullMidBlob, func(total int64) bool { return total > 0 }},
		{failpoint.PullAfterBlobs, func(total int64) bool { return total == 0 }},
		{failpoint.PullBeforeCommit, func(total int64) bool { return total == 0 }},
	} {
		t.Run(c.point, func(t *testing.T) {
			b := t.TempDir()
			cmd := kcacheCmd(t, b, "pull", "k")
			cmd.Env = append(append(cmd.Env, srv.Env("ci")...), failpoint.Env+"="+c.point)
			if killed, stderr := killedBy(t, cmd); !killed {
				t.Fatalf("pull was not killed at %s: %s", c.point, stderr)
			}
			if l := listForComparison(t, b); len(l) != 0 {
				t.Errorf("after the kill, list shows %v, want no entry", l)
			}
			out, stderr, code := remoteRun(t, srv, b, nil, "pull", "k", "--json")
			if code != 0 {
				t.Fatalf("re-run: exit %d %s", code, stderr)
			}
			var rep []transferJSON
			if err := json.Unmarshal([]byte(out), &rep); err != nil {
				t.Fatal(err)
			}
			if !c.wantBytes(rep[0].Bytes) {
				t.Errorf("re-run downloaded %d bytes", rep[0].Bytes)
			}
			if _, stderr, code := runIn(t, b, "verify", "--deep"); code != 0 {
				t.Errorf("verify --deep after the re-run: %s", stderr)
			}
			// The killed run's staging directory is gone after a gc.
			runIn(t, b, "gc")
			if ents, _ := os.ReadDir(filepath.Join(b, ".tmp")); len(ents) != 0 {
				t.Errorf("staging left after gc: %v", ents)
			}
		})
	}
}

// TestCLIRemoteThroughHelper builds kcache as users do (without the S3
// client) and kcache-remote next to it, and runs the remote commands
// through the lean binary.
func TestCLIRemoteThroughHelper(t *testing.T) {
	srv := s3test.Start(t)
	bin := t.TempDir()
	for _, b := range []struct{ out, tags string }{{"kcache", ""}, {"kcache-remote", "kcache_s3"}} {
		args := []string{"build", "-o", filepath.Join(bin, b.out)}
		if b.tags != "" {
			args = append(args, "-tags", b.tags)
		}
		build := exec.Command("go", append(args, ".")...)
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("go %v: %v\n%s", args, err, out)
		}
	}
	run := func(root string, env []string, args ...string) (string, string, int) {
		cmd := exec.Command(filepath.Join(bin, "kcache"), append([]string{"--root", root}, args...)...)
		cmd.Env = append(append(os.Environ(), srv.Env("h")...), env...)
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		_ = cmd.Run()
		return o.String(), e.String(), cmd.ProcessState.ExitCode()
	}
	a, b := t.TempDir(), t.TempDir()
	if out, _, _ := run(a, nil, "version"); !strings.Contains(out, "S3 remote: through "+filepath.Join(bin, "kcache-remote")) {
		t.Errorf("version of the lean build: %q", out)
	}
	if _, stderr, code := run(a, nil, "store", "k", "--image", cliSampleImage); code != 0 {
		t.Fatal(stderr)
	}
	if out, stderr, code := run(a, nil, "push", "k"); code != 0 || !strings.Contains(out, "pushed k") {
		t.Fatalf("push through the helper: exit %d %q %s", code, out, stderr)
	}
	if out, stderr, code := run(b, nil, "lookup", "--remote", "k"); code != 0 || !strings.HasPrefix(out, b) {
		t.Fatalf("lookup --remote through the helper: exit %d %q %s", code, out, stderr)
	}
	if _, _, code := run(b, nil, "pull", "absent"); code != exitNotFound {
		t.Errorf("the helper's exit code was not passed on: %d", code)
	}
	// Without the helper: a clear message saying how to get it.
	if err := os.Remove(filepath.Join(bin, "kcache-remote")); err != nil {
		t.Fatal(err)
	}
	if out, _, _ := run(a, []string{"PATH=/usr/bin:/bin"}, "version"); !strings.Contains(out, "S3 remote: not available") {
		t.Errorf("version without the helper: %q", out)
	}
	_, stderr, code := run(a, []string{"PATH=/usr/bin:/bin", helperEnv + "="}, "push", "k")
	if code != exitError || !strings.Contains(stderr, "go build -tags kcache_s3") {
		t.Errorf("push without the helper: exit %d %q", code, stderr)
	}
	// A local hit never needs it.
	if _, stderr, code := run(a, []string{"PATH=/usr/bin:/bin"}, "lookup", "--remote", "k"); code != 0 {
		t.Errorf("lookup --remote of a local key without the helper: exit %d %s", code, stderr)
	}
}

// On a terminal, push and pull draw progress on stderr; elsewhere they
// print nothing there.
func TestCLITransferProgressOnATerminal(t *testing.T) {
	srv := s3test.Start(t)
	root := t.TempDir()
	cliOK(t, root, "store", "k", "--image", cliSampleImage, "--vmlinux", cliSampleVmlinux)
	master, slave := openPTY(t)
	var drawn bytes.Buffer
	done := make(chan struct{})
	go func() { _, _ = io.Copy(&drawn, master); close(done) }()
	cmd := kcacheCmd(t, root, "push", "k")
	cmd.Env = append(cmd.Env, srv.Env("tty")...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, slave
	if err := cmd.Run(); err != nil {
		t.Fatalf("push on a terminal: %v", err)
	}
	slave.Close() // the master reads EIO once no slave is open
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("terminal output never ended")
	}
	for _, want := range []string{"push k: image", "push k: vmlinux", "\r"} {
		if !strings.Contains(drawn.String(), want) {
			t.Errorf("terminal shows %q, missing %q", drawn.String(), want)
		}
	}
	if !strings.Contains(out.String(), "pushed k") {
		t.Errorf("stdout %q", out.String())
	}
	b := t.TempDir()
	if _, stderr, code := remoteRun(t, srv, b, nil, "pull", "--remote="+srv.URL("tty"), "k"); code != 0 || stderr != "" {
		t.Errorf("pull without a terminal: exit %d, stderr %q (want none)", code, stderr)
	}
}

// TestCLIPushKilledBetweenBlobs kills a push after its first blob: the
// remote shows no entry (the manifest goes last), and a re-run uploads only
// the blob that was missing.
func TestCLIPushKilledBetweenBlobs(t *testing.T) {
	srv := s3test.Start(t)
	root := t.TempDir()
	cliOK(t, root, "store", "k", "--image", cliSampleImage, "--vmlinux", cliSampleVmlinux)
	cmd := kcacheCmd(t, root, "push", "k")
	cmd.Env = append(append(cmd.Env, srv.Env("ci")...), failpoint.Env+"="+failpoint.PushAfterFirstBlob)
	if killed, stderr := killedBy(t, cmd); !killed {
		t.Fatalf("push was not killed: %s", stderr)
	}
	if out, stderr, code := remoteRun(t, srv, t.TempDir(), nil, "remote", "ls", "--json"); code != 0 || strings.TrimSpace(out) != "[]" {
		t.Errorf("after the killed push, remote ls = %q (exit %d, %s), want no entry", out, code, stderr)
	}
	if _, stderr, code := remoteRun(t, srv, t.TempDir(), nil, "pull", "k"); code != exitNotFound {
		t.Errorf("pull after the killed push: exit %d (%s), want 3", code, stderr)
	}
	out, stderr, code := remoteRun(t, srv, root, nil, "push", "k", "--json")
	if code != 0 {
		t.Fatalf("re-run: exit %d %s", code, stderr)
	}
	var rep []transferJSON
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	if b := rep[0].Blobs; len(b) != 2 || b[0].Transferred || !b[1].Transferred || rep[0].Bytes != b[1].Size {
		t.Errorf("re-run uploaded %+v, want only the second blob", rep[0])
	}
	if _, stderr, code := remoteRun(t, srv, t.TempDir(), nil, "pull", "k"); code != 0 {
		t.Errorf("pull after the re-run: exit %d %s", code, stderr)
	}
}

// TestCLIConcurrentPushProcesses races two kcache processes (two runners)
// pushing different kernels under one key: both succeed and the remote ends
// with one of them whole.
func TestCLIConcurrentPushProcesses(t *testing.T) {
	srv := s3test.Start(t)
	dir := t.TempDir()
	var roots [2]string
	var images [2]string
	for i := range roots {
		roots[i] = t.TempDir()
		images[i] = cliWrite(t, dir, fmt.Sprintf("img%d", i), strings.Repeat(fmt.Sprintf("kernel %d ", i), 50000))
		cliOK(t, roots[i], "store", "same", "--image", images[i], "--vmlinux", cliSampleVmlinux)
	}
	for round := range 3 {
		var cmds [2]*exec.Cmd
		var errs [2]bytes.Buffer
		for i := range cmds {
			cmds[i] = kcacheCmd(t, roots[i], "push", "same")
			cmds[i].Env = append(cmds[i].Env, srv.Env("race")...)
			cmds[i].Stderr = &errs[i]
			if err := cmds[i].Start(); err != nil {
				t.Fatal(err)
			}
		}
		for i := range cmds {
			if err := cmds[i].Wait(); err != nil {
				t.Fatalf("round %d: push %d: %v\n%s", round, i, err, errs[i].String())
			}
		}
		b := t.TempDir()
		cmd := kcacheCmd(t, b, "lookup", "--remote", "same")
		cmd.Env = append(cmd.Env, srv.Env("race")...)
		out, stderr, code := runCmd(t, cmd)
		if code != 0 {
			t.Fatalf("round %d: lookup --remote: %s", round, stderr)
		}
		got, err := os.ReadFile(strings.Fields(out)[0])
		if err != nil {
			t.Fatal(err)
		}
		a0, _ := os.ReadFile(images[0])
		a1, _ := os.ReadFile(images[1])
		if !bytes.Equal(got, a0) && !bytes.Equal(got, a1) {
			t.Errorf("round %d: the pulled image is neither pushed kernel", round)
		}
	}
}
