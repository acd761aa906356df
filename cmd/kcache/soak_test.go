package main

// A soak test with real processes: 8 worker processes run a random mix of
// kcache commands against one cache while a supervisor SIGKILLs and restarts
// them; afterwards the cache must be consistent. Each worker is this test
// binary re-executed with KCACHE_SOAK_WORKER=1 (TestSoakWorker); it calls
// run() in-process, so a kill lands in the middle of a command.
//
// KCACHE_SOAK_SECONDS sets the duration (default 60 with CI=true, else 10).

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kcache/kcache"
	"github.com/kcache/kcache/blobstore"
	"github.com/kcache/kcache/index"
)

const (
	soakWorkers  = 8
	soakKeys     = 20
	soakVariants = 3
	// soakStopGuard bounds how long a worker may take to exit after it was
	// told to stop. Its longest bounded wait is a store that deduplicates
	// against a blob a killed remover left dying: it retries for
	// index.DyingAbandonAfter + 5 s (35 s) before Put takes the blob over,
	// on top of the 5 s lock and index timeouts. A worker that takes longer
	// has hung.
	soakStopGuard = 60 * time.Second
)

// soakOps are the operations a worker picks from, with weights.
var soakOps = []struct {
	kind   string
	weight int
}{
	{"store", 6}, {"lookup", 10}, {"rm", 2}, {"gc", 1}, {"pin", 1}, {"unpin", 1}, {"list", 2}, {"run", 3},
}

// TestSoakWorker is not a test: run with KCACHE_SOAK_WORKER=1 it is one soak
// worker. It runs random operations until the file KCACHE_SOAK_STOP exists and
// appends one line per finished operation to KCACHE_SOAK_LOG:
//
//	<kind> <exit code> <milliseconds> [<message>]
//
// where the message (stderr, quoted) is only given for unexpected codes.
func TestSoakWorker(t *testing.T) {
	if os.Getenv("KCACHE_SOAK_WORKER") != "1" {
		return
	}
	root, inputs, stop := os.Getenv("KCACHE_SOAK_ROOT"), os.Getenv("KCACHE_SOAK_INPUTS"), os.Getenv("KCACHE_SOAK_STOP")
	logf, err := os.OpenFile(os.Getenv("KCACHE_SOAK_LOG"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	seed, _ := strconv.ParseUint(os.Getenv("KCACHE_SOAK_SEED"), 10, 64)
	rng := rand.New(rand.NewPCG(seed, uint64(os.Getpid())))
	total := 0
	for _, o := range soakOps {
		total += o.weight
	}
	opStart := time.Now()
	logLine := func(kind string, code int, msg string) {
		line := fmt.Sprintf("%s %d %d", kind, code, time.Since(opStart).Milliseconds())
		if msg != "" {
			line += " " + strconv.Quote(msg)
		}
		_, _ = logf.WriteString(line + "\n") // one write(2) per line
	}
	for {
		if _, err := os.Stat(stop); err == nil {
			os.Exit(0)
		}
		n := rng.IntN(total)
		kind := soakOps[0].kind
		for _, o := range soakOps {
			if n < o.weight {
				kind = o.kind
				break
			}
			n -= o.weight
		}
		key := fmt.Sprintf("soak-%02d", rng.IntN(soakKeys))
		var args []string
		switch kind {
		case "store":
			img := filepath.Join(inputs, fmt.Sprintf("img-%02d-%d", rng.IntN(soakKeys), rng.IntN(soakVariants)))
			args = []string{"store", key, "--image", img, "--image-name", "bzImage", "--vmlinux", rpSample.vmlinux, "--lock-timeout", "5s"}
		case "lookup":
			args = []string{"lookup", key, "--json"}
		case "rm":
			args = []string{"rm", key}
			if rng.IntN(2) == 0 {
				args = append(args, "--force")
			}
		case "gc":
			args = []string{"gc", "--keep", "15", "--grace", "2s"}
		case "pin":
			args = []string{"pin", key, "--reason", "soak"}
		case "unpin":
			args = []string{"unpin", key}
		case "list":
			args = []string{"list", "--json"}
		case "run":
			args = []string{"run", key, "--timeout", "5s", "--", "true"}
		}
		var o, e bytes.Buffer
		opStart = time.Now()
		code := run(append([]string{"--root", root, "--index-timeout", "5s"}, args...), &o, &e)
		msg := ""
		if code != 0 && code != exitNotFound && code != exitInUse {
			msg = strings.TrimSpace(e.String())
		}
		if kind == "list" && code == 0 {
			var l struct {
				Entries []map[string]any `json:"entries"`
			}
			if err := json.Unmarshal(o.Bytes(), &l); err != nil {
				code, msg = 101, "list --json: "+err.Error()
			}
			for _, ent := range l.Entries {
				if _, bad := ent["error_kind"]; bad {
					code, msg = 102, fmt.Sprintf("list shows a corrupt entry: %v", ent)
				}
			}
		}
		logLine(kind, code, msg)
		if kind == "lookup" && code == 0 {
			rkind, rcode, rmsg := soakRead(root, o.Bytes())
			logLine(rkind, rcode, rmsg)
		}
	}
}

// soakRead reads both blobs of the entry that `lookup --json` printed and
// checks them against its digests and sizes. A blob that vanished is fine
// when the entry was replaced or removed meanwhile (lookup paths are valid
// until then, as documented): kind "read" code 3. A blob that exists with
// the wrong bytes is always an error (code 103).
func soakRead(root string, lookupJSON []byte) (kind string, code int, msg string) {
	var ent struct {
		Key           string  `json:"key"`
		ImagePath     string  `json:"image_path"`
		ImageSHA256   string  `json:"image_sha256"`
		ImageSize     int64   `json:"image_size"`
		VmlinuxPath   *string `json:"vmlinux_path"`
		VmlinuxSHA256 *string `json:"vmlinux_sha256"`
		VmlinuxSize   *int64  `json:"vmlinux_size"`
	}
	if err := json.Unmarshal(lookupJSON, &ent); err != nil {
		return "read", 104, "lookup --json: " + err.Error()
	}
	type blob struct {
		path, digest string
		size         int64
	}
	blobs := []blob{{ent.ImagePath, ent.ImageSHA256, ent.ImageSize}}
	if ent.VmlinuxPath == nil || ent.VmlinuxSHA256 == nil || ent.VmlinuxSize == nil {
		return "read", 105, "entry without vmlinux: " + string(lookupJSON)
	}
	blobs = append(blobs, blob{*ent.VmlinuxPath, *ent.VmlinuxSHA256, *ent.VmlinuxSize})
	for _, b := range blobs {
		data, err := os.ReadFile(b.path)
		if errors.Is(err, os.ErrNotExist) {
			// Replaced or removed since the lookup?
			cur, lerr := mustOpen(root, &kcache.Options{ReadOnly: true}).Describe(context.Background(), ent.Key)
			if lerr != nil || cur.ImagePath != ent.ImagePath || cur.VmlinuxPath != *ent.VmlinuxPath {
				return "read", exitNotFound, ""
			}
			return "read", 106, fmt.Sprintf("blob %s of unchanged entry %s is missing", b.path, ent.Key)
		}
		if err != nil {
			return "read", 107, err.Error()
		}
		sum := sha256.Sum256(data)
		if got := hex.EncodeToString(sum[:]); got != b.digest || int64(len(data)) != b.size {
			return "read", 103, fmt.Sprintf("blob %s: %d bytes hashing to %s, want %d bytes %s", b.path, len(data), got, b.size, b.digest)
		}
	}
	return "read", 0, ""
}

// soakWorker is one running worker process.
type soakWorker struct {
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	done   chan error
}

func soakSeconds(t *testing.T) time.Duration {
	if s := os.Getenv("KCACHE_SOAK_SECONDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			t.Fatalf("KCACHE_SOAK_SECONDS=%q: want a positive number of seconds", s)
		}
		return time.Duration(n) * time.Second
	}
	if os.Getenv("CI") == "true" {
		return 60 * time.Second
	}
	return 10 * time.Second
}

func TestSoak(t *testing.T) {
	if os.Getenv("KCACHE_SOAK_WORKER") == "1" {
		t.Skip("soak worker")
	}
	if testing.Short() {
		t.Skip("soak test skipped in -short mode")
	}
	dur := soakSeconds(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "cache")
	inputs := filepath.Join(dir, "inputs")
	logs := filepath.Join(dir, "logs")
	stop := filepath.Join(dir, "stop")
	for _, d := range []string{inputs, logs} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	for k := range soakKeys {
		for v := range soakVariants {
			data := make([]byte, 4096+rng.IntN(28*1024))
			for i := range data {
				data[i] = byte(rng.Uint32())
			}
			if err := os.WriteFile(filepath.Join(inputs, fmt.Sprintf("img-%02d-%d", k, v)), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var failures []string
	fail := func(format string, args ...any) {
		mu.Lock()
		failures = append(failures, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	start := func(i int) *soakWorker {
		cmd := exec.Command(exe, "-test.run=^TestSoakWorker$", "-test.count=1")
		cmd.Env = append(os.Environ(), "KCACHE_SOAK_WORKER=1", "KCACHE_SOAK_ROOT="+root,
			"KCACHE_SOAK_INPUTS="+inputs, "KCACHE_SOAK_STOP="+stop,
			fmt.Sprintf("KCACHE_SOAK_LOG=%s/worker-%d.log", logs, i),
			fmt.Sprintf("KCACHE_SOAK_SEED=%d", rng.Uint64()))
		var eb bytes.Buffer
		cmd.Stderr = &eb
		cmd.Stdout = io.Discard
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // a kill takes its `true` children too
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		w := &soakWorker{cmd: cmd, stderr: &eb, done: make(chan error, 1)}
		go func() { w.done <- cmd.Wait() }()
		return w
	}
	workers := make([]*soakWorker, soakWorkers)
	for i := range workers {
		workers[i] = start(i)
	}
	t.Cleanup(func() { // never leave a worker behind
		for _, w := range workers {
			_ = syscall.Kill(-w.cmd.Process.Pid, syscall.SIGKILL)
		}
	})
	// unexpected reports a worker that exited by itself before the stop.
	unexpected := func(i int, w *soakWorker, err error) {
		fail("worker %d (pid %d) exited on its own before the stop: %v\n%s", i, w.cmd.Process.Pid, err, w.stderr.String())
	}
	kills := 0
	deadline := time.Now().Add(dur)
	for time.Now().Before(deadline) {
		time.Sleep(time.Duration(150+rng.IntN(600)) * time.Millisecond)
		for i, w := range workers { // restart any worker that died by itself
			select {
			case err := <-w.done:
				unexpected(i, w, err)
				workers[i] = start(i)
			default:
			}
		}
		i := rng.IntN(soakWorkers)
		w := workers[i]
		_ = syscall.Kill(-w.cmd.Process.Pid, syscall.SIGKILL)
		select {
		case err := <-w.done:
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				unexpected(i, w, err) // it had exited before the kill
			}
		case <-time.After(soakStopGuard):
			t.Fatalf("worker %d (pid %d) did not die within %s of SIGKILL", i, w.cmd.Process.Pid, soakStopGuard)
		}
		kills++
		workers[i] = start(i)
	}
	if err := os.WriteFile(stop, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	stopAt := time.Now()
	stopDeadline := stopAt.Add(soakStopGuard)
	hung := 0
	for i, w := range workers {
		select {
		case err := <-w.done:
			if err != nil {
				fail("worker %d (pid %d) failed at the stop: %v\n%s", i, w.cmd.Process.Pid, err, w.stderr.String())
			}
		case <-time.After(time.Until(stopDeadline)):
			hung++
			fail("worker %d (pid %d) hung: still running %s after the stop", i, w.cmd.Process.Pid, soakStopGuard)
			_ = syscall.Kill(-w.cmd.Process.Pid, syscall.SIGKILL)
			<-w.done
		}
	}

	// Aggregate the logs.
	ops, errs := map[string]int{}, map[string]int{}
	slowest := map[string]time.Duration{}
	var badOps []string
	for i := range soakWorkers {
		f, err := os.Open(filepath.Join(logs, fmt.Sprintf("worker-%d.log", i)))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			kind, rest, _ := strings.Cut(sc.Text(), " ")
			codeStr, rest, _ := strings.Cut(rest, " ")
			msStr, msg, _ := strings.Cut(rest, " ")
			code, err1 := strconv.Atoi(codeStr)
			ms, err2 := strconv.Atoi(msStr)
			if err1 != nil || err2 != nil {
				continue // the last line of a killed worker may be cut short
			}
			ops[kind]++
			slowest[kind] = max(slowest[kind], time.Duration(ms)*time.Millisecond)
			if code != 0 {
				errs[strconv.Itoa(code)]++
			}
			if code != 0 && code != exitNotFound && code != exitInUse {
				if len(badOps) < 20 {
					uq, _ := strconv.Unquote(msg)
					badOps = append(badOps, fmt.Sprintf("worker %d: %s exited %d: %s", i, kind, code, uq))
				}
			}
		}
		f.Close()
	}
	for _, b := range badOps {
		fail("unexpected failure (only 3 not found and 4 in use are expected): %s", b)
	}

	stopTook := time.Since(stopAt)
	// The cache is consistent afterwards.
	checkAt := time.Now()
	lost, corrupt := soakCheckCache(t, root, fail)
	t.Logf("slowest operation of each kind: %v", slowest)
	t.Logf("workers stopped in %s; the checks took %s", stopTook.Round(time.Millisecond), time.Since(checkAt).Round(time.Millisecond))
	t.Logf("RELIABILITY soak seconds=%d workers=%d kills=%d ops=%s errors=%s lost=%d corrupt=%d hung=%d",
		int(dur.Seconds()), soakWorkers, kills, soakCounts(ops), soakCounts(errs), lost, corrupt, hung)
	for _, f := range failures {
		t.Error(f)
	}
}

// soakCheckCache checks the invariants of a cache nobody uses any more and
// returns how many listed entries have a missing or damaged blob (lost) and
// how many are corrupt.
func soakCheckCache(t *testing.T, root string, fail func(string, ...any)) (lost, corrupt int) {
	t.Helper()
	// list --json: no corrupt entry, every blob present with its size and hash.
	out, stderr, code := runProc(t, root, "list", "--json")
	if code != 0 {
		t.Fatalf("list --json: exit %d\n%s", code, stderr)
	}
	var l struct {
		Entries []map[string]any `json:"entries"`
	}
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatalf("list --json: %v\n%s", err, out)
	}
	for _, ent := range l.Entries {
		if _, bad := ent["error_kind"]; bad {
			corrupt++
			fail("corrupt entry after the soak: %v", ent)
			continue
		}
		for _, role := range []string{"image", "vmlinux"} {
			p, _ := ent[role+"_path"].(string)
			d, _ := ent[role+"_sha256"].(string)
			size, _ := ent[role+"_size"].(float64)
			data, err := os.ReadFile(p)
			sum := sha256.Sum256(data)
			if err != nil || hex.EncodeToString(sum[:]) != d || len(data) != int(size) {
				lost++
				fail("entry %v: %s blob %s is missing or damaged (%v)", ent["key"], role, p, err)
			}
		}
	}
	// doctor --dry-run --json: only reclaimable garbage (orphans, dead
	// staging directories, unfinished removals), nothing corrupt or foreign.
	out, stderr, code = runProc(t, root, "doctor", "--dry-run", "--json")
	if code != 0 {
		t.Fatalf("doctor --dry-run --json: exit %d\n%s", code, stderr)
	}
	var doc struct {
		Rebuild any   `json:"rebuild"`
		Corrupt []any `json:"corrupt"`
		Foreign []any `json:"foreign"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("doctor --json: %v\n%s", err, out)
	}
	if doc.Rebuild != nil || len(doc.Corrupt) > 0 || len(doc.Foreign) > 0 {
		fail("doctor --dry-run reports more than reclaimable garbage:\n%s", out)
	}
	// gc with the shortest grace (the flag is --grace; 0 means the 1 h
	// default, so 1ns), then blobs on disk are exactly the referenced ones.
	// Removals a killed worker left half done are finished by the sweep only
	// after index.DyingAbandonAfter (30 s); wait that out in this process.
	if _, stderr, code := runProc(t, root, "gc", "--grace", "1ns"); code != 0 {
		t.Fatalf("gc --grace 1ns: exit %d\n%s", code, stderr)
	}
	old := index.DyingAbandonAfter
	index.DyingAbandonAfter = 0
	_, stderr, code = runIn(t, root, "gc", "--grace", "1ns")
	index.DyingAbandonAfter = old
	if code != 0 {
		t.Fatalf("gc --grace 1ns (in process): exit %d\n%s", code, stderr)
	}
	want := map[string]bool{}
	db, err := index.Open(filepath.Join(root, "index.db"), index.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.View(func(tx *index.Tx) error {
		return tx.ForEach(func(key string, rec *index.Record, err error) error {
			if err != nil {
				fail("index record %q: %v", key, err)
				return nil
			}
			for _, d := range rec.Digests() {
				want[d] = true
			}
			return nil
		})
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	if err := blobstore.New(filepath.Join(root, "blobs", "sha256")).Walk(func(d string, _ int64) error {
		have[d] = true
		return nil
	}, func(p string) error { fail("foreign file in the blob directory: %s", p); return nil }); err != nil {
		t.Fatal(err)
	}
	for d := range want {
		if !have[d] {
			lost++
			fail("referenced blob %s is not on disk", d)
		}
	}
	for d := range have {
		if !want[d] {
			fail("unreferenced blob %s left after gc --grace 1ns", d)
		}
	}
	ents, err := os.ReadDir(filepath.Join(root, ".tmp"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	for _, e := range ents {
		fail("left in .tmp after gc: %s", e.Name())
	}
	return lost, corrupt
}

// soakCounts renders a count map as kind:n,kind:n (sorted).
func soakCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s:%d", k, m[k])
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ",")
}
