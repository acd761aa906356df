package kcache_test

// Tests with real processes: the test binary re-executes itself with
// KCACHE_TEST_ROLE set and runs one of the roles below instead of the tests.
// Each helper gets the cache root and its parameters as arguments (its
// command line reads "kcache.test kcache-test-<role> ...", which is what lock
// holder reports show), talks to the test on stdout (one line per event),
// and stops when its stdin reaches EOF — so a helper never outlives the test
// that started it, even if that test dies.

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
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kcache/kcache"
	"github.com/kcache/kcache/index"
)

// procRoleEnv names the helper role a re-executed test binary plays.
const procRoleEnv = "KCACHE_TEST_ROLE"

// procHangGuard bounds every wait on a helper or on a call that must not block
// forever. It is a guard against hangs, not a performance expectation.
const procHangGuard = 60 * time.Second

func TestMain(m *testing.M) {
	if role := os.Getenv(procRoleEnv); role != "" {
		if err := procRunRole(role, os.Args[1:]); err != nil {
			fmt.Fprintf(os.Stderr, "helper %s (pid %d): %v\n", role, os.Getpid(), err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// procRunRole runs one helper role. args[0] is "kcache-test-<role>", there only
// so that the role shows in /proc/<pid>/cmdline.
func procRunRole(role string, args []string) error {
	if len(args) < 1 || args[0] != "kcache-test-"+role {
		return fmt.Errorf("bad helper arguments %q", args)
	}
	args = args[1:]
	need := map[string]int{"reader": 2, "writer": 5, "storer": 6, "holdshared": 2, "holdindex": 1, "holdstaging": 2, "holdflock": 2}
	if n, ok := need[role]; !ok {
		return fmt.Errorf("unknown role")
	} else if len(args) != n {
		return fmt.Errorf("want %d arguments, got %q", n, args)
	}
	switch role {
	case "reader":
		return procRoleReader(args[0], args[1])
	case "writer":
		first, err1 := strconv.Atoi(args[3])
		last, err2 := strconv.Atoi(args[4])
		if err := errors.Join(err1, err2); err != nil {
			return err
		}
		return procRoleWriter(args[0], args[1], args[2], first, last)
	case "storer":
		return procRoleStorer(args[0], args[1], args[2], args[3], args[4], args[5])
	case "holdshared":
		return procRoleHoldShared(args[0], args[1])
	case "holdstaging":
		return procRoleHoldStaging(args[0], args[1])
	case "holdflock":
		return procRoleHoldFlock(args[0], args[1])
	default:
		return procRoleHoldIndex(args[0])
	}
}

// procHelperCache opens the cache quietly (the test vmlinux is not an ELF, so
// every store and lookup would warn that it is unstripped).
func procHelperCache(root string) *kcache.Cache {
	return mustOpen(root, &kcache.Options{})
}

// procRoleReader looks key up and reads both blobs in a loop, checking every
// byte against the entry, until it has seen the generation the test writes
// on its stdin (or stdin closes, which is an error). It prints "ready" after
// its first complete read and "done iterations=N generations=M last=G" at
// the end.
func procRoleReader(root, key string) error {
	c := procHelperCache(root)
	var stopAt atomic.Int64
	stopAt.Store(math.MaxInt64)
	go func() {
		line, err := bufio.NewReader(os.Stdin).ReadString('\n')
		n, perr := strconv.Atoi(strings.TrimSpace(line))
		if err != nil || perr != nil {
			stopAt.Store(-1)
			return
		}
		stopAt.Store(int64(n))
	}()
	last, iters, gens := -1, 0, map[int]bool{}
	for {
		g, err := procReadEntryOnce(c, key)
		if err != nil {
			return fmt.Errorf("iteration %d: %w", iters+1, err)
		}
		if g < last {
			return fmt.Errorf("iteration %d: saw generation %d after generation %d", iters+1, g, last)
		}
		last = g
		iters++
		gens[g] = true
		if iters == 1 {
			fmt.Println("ready")
		}
		switch s := stopAt.Load(); {
		case s < 0:
			return errors.New("stdin closed before the test said which generation to wait for")
		case int64(last) >= s:
			fmt.Printf("done iterations=%d generations=%d last=%d\n", iters, len(gens), last)
			return nil
		}
	}
}

// procReadEntryOnce opens key with OpenEntry, reads both blobs fully and checks
// each against the entry's digest and size, and that the image, the vmlinux
// and the record's version name the same generation, which it returns.
func procReadEntryOnce(c *kcache.Cache, key string) (int, error) {
	o, err := c.OpenEntry(context.Background(), key)
	if err != nil {
		return 0, err
	}
	defer o.Close()
	if o.Vmlinux == nil || o.Entry.Vmlinux == nil {
		return 0, fmt.Errorf("entry %q has no vmlinux", key)
	}
	ig, err := procCheckOpenBlob(o.Image, o.Entry.Image, "image")
	if err != nil {
		return 0, err
	}
	vg, err := procCheckOpenBlob(o.Vmlinux, *o.Entry.Vmlinux, "vmlinux")
	if err != nil {
		return 0, err
	}
	if ig != vg {
		return 0, fmt.Errorf("image is generation %d but vmlinux is generation %d", ig, vg)
	}
	if o.Entry.Version == nil || *o.Entry.Version != procGenVersion(ig) {
		return 0, fmt.Errorf("blobs are generation %d but the record's version is %v", ig, o.Entry.Version)
	}
	return ig, nil
}

// procCheckOpenBlob reads f to the end, checks it against b and returns the
// generation written in its header line.
func procCheckOpenBlob(f *os.File, b index.Blob, kind string) (int, error) {
	data, err := io.ReadAll(f)
	if err != nil {
		return 0, fmt.Errorf("read %s %s: %w", kind, f.Name(), err)
	}
	if int64(len(data)) != b.Size {
		return 0, fmt.Errorf("%s %s: read %d bytes, the entry says %d", kind, f.Name(), len(data), b.Size)
	}
	if d := procSha256Hex(data); d != b.Digest {
		return 0, fmt.Errorf("%s %s: content hashes to %s, the entry says %s", kind, f.Name(), d, b.Digest)
	}
	var gen int
	var gotKind string
	if _, err := fmt.Sscanf(string(data[:min(len(data), 64)]), "kcache-test %s gen=%d\n", &gotKind, &gen); err != nil || gotKind != kind {
		return 0, fmt.Errorf("%s %s: no %s header (%q, %v)", kind, f.Name(), kind, data[:min(len(data), 40)], err)
	}
	return gen, nil
}

// procRoleWriter stores generations first..last under key, one after the other,
// each with new content, printing "stored N" after each.
func procRoleWriter(root, key, workDir string, first, last int) error {
	c := procHelperCache(root)
	for gen := first; gen <= last; gen++ {
		if _, err := procStoreGen(c, key, workDir, gen); err != nil {
			return err
		}
		fmt.Printf("stored %d\n", gen)
	}
	return nil
}

// procStorerReport is what a storer appends to the shared log after its Store
// returned.
type procStorerReport struct {
	ID       string `json:"id"`
	PID      int    `json:"pid"`
	StoredAt string `json:"stored_at"`
	Image    string `json:"image"`
	Vmlinux  string `json:"vmlinux"`
	Manifest string `json:"manifest"`
}

// procRoleStorer prints "storing", stores image and vmlinux under key with
// version id, then (unless logPath is "-") appends one JSON line to logPath
// with a single O_APPEND write, so the log's order is the order in which the
// Store calls returned.
func procRoleStorer(root, key, id, image, vmlinux, logPath string) error {
	c := procHelperCache(root)
	fmt.Println("storing")
	v := id
	e, err := c.Store(context.Background(), key, kcache.Artifacts{Image: image, Vmlinux: vmlinux}, procTestMeta(&v))
	if err != nil {
		return err
	}
	if logPath == "-" {
		return nil
	}
	line, err := json.Marshal(procStorerReport{ID: id, PID: os.Getpid(), StoredAt: e.StoredAt,
		Image: e.Image.Digest, Vmlinux: e.Vmlinux.Digest, Manifest: e.Manifest.Digest})
	if err != nil {
		return err
	}
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(line, '\n')); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// procRoleHoldShared holds key's shared lock until stdin closes (or it is killed).
func procRoleHoldShared(root, key string) error {
	l, err := procHelperCache(root).AcquireShared(context.Background(), key, kcache.LockOptions{})
	if err != nil {
		return err
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	return l.Release()
}

// procRoleHoldIndex keeps the index open read-write (bbolt's exclusive flock on
// the file) until stdin closes (or it is killed).
func procRoleHoldIndex(root string) error {
	db, err := index.Open(filepath.Join(root, "index.db"), index.Options{})
	if err != nil {
		return err
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	return db.Close()
}

// procRoleHoldStaging plays a writer mid-store as Store lays it out: it
// creates and locks <root>/.tmp/<id>.lock, then creates <root>/.tmp/<id>/
// with a staged file in it, prints "ready" and holds the lock until stdin
// closes (or it is killed). id need not contain its pid: the sweep must
// judge the writer by its lock alone.
func procRoleHoldStaging(root, id string) error {
	tmp := filepath.Join(root, ".tmp")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(tmp, id+".lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	if err := os.Mkdir(filepath.Join(tmp, id), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tmp, id, "blob-staged"), []byte("half a kernel"), 0o600); err != nil {
		return err
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

// procRoleHoldFlock takes flock(2) on path ("shared" or "exclusive"; the
// file must exist) as a foreign tool such as ktstr does, prints "ready" and
// holds it until stdin closes (or it is killed).
func procRoleHoldFlock(path, mode string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	how := syscall.LOCK_SH
	if mode == "exclusive" {
		how = syscall.LOCK_EX
	}
	if err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB); err != nil {
		return fmt.Errorf("lock %s: %w", path, err)
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

// ---- content and store helpers (used by helpers and tests) ----

func procSha256Hex(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

func procGenVersion(gen int) string { return fmt.Sprintf("gen-%d", gen) }

func procTestMeta(version *string) kcache.Metadata {
	return kcache.Metadata{Version: version, Source: kcache.Source{Type: "tarball"}, Arch: "x86_64", ImageName: "bzImage"}
}

// content returns size pseudo-random bytes, different for every (kind, gen,
// salt), that start with the line "kcache-test <kind> gen=<gen>".
func procContent(kind string, gen, size int, salt string) []byte {
	hdr := fmt.Sprintf("kcache-test %s gen=%06d\n", kind, gen)
	seed := sha256.Sum256([]byte(hdr + salt))
	b := make([]byte, size)
	_, _ = rand.NewChaCha8(seed).Read(b)
	copy(b, hdr)
	return b
}

// Generation sizes differ from one generation to the next, so a size check
// catches a mix-up as well as a hash check does. They are kept small so that
// readers go round often: races between a reader's steps and a replacement
// show up in proportion to the number of reads per replacement.
func procGenImageSize(gen int) int   { return 96<<10 + gen*4099 }
func procGenVmlinuxSize(gen int) int { return 320<<10 + gen*1031 }

// procWriteKernel writes an image and a vmlinux of the given sizes for gen into
// dir and returns their paths.
func procWriteKernel(dir string, gen, imageSize, vmlinuxSize int, salt string) (image, vmlinux string, err error) {
	image = filepath.Join(dir, fmt.Sprintf("bzImage-%s-%d", salt, gen))
	vmlinux = filepath.Join(dir, fmt.Sprintf("vmlinux-%s-%d", salt, gen))
	if err := os.WriteFile(image, procContent("image", gen, imageSize, salt), 0o644); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(vmlinux, procContent("vmlinux", gen, vmlinuxSize, salt), 0o644); err != nil {
		return "", "", err
	}
	return image, vmlinux, nil
}

// procStoreGen stores generation gen under key (version "gen-<gen>") from files
// written to workDir and removed again afterwards.
func procStoreGen(c *kcache.Cache, key, workDir string, gen int) (*kcache.Entry, error) {
	image, vmlinux, err := procWriteKernel(workDir, gen, procGenImageSize(gen), procGenVmlinuxSize(gen), "")
	if err != nil {
		return nil, err
	}
	defer os.Remove(image)
	defer os.Remove(vmlinux)
	v := procGenVersion(gen)
	e, err := c.Store(context.Background(), key, kcache.Artifacts{Image: image, Vmlinux: vmlinux}, procTestMeta(&v))
	if err != nil {
		return nil, fmt.Errorf("store generation %d: %w", gen, err)
	}
	return e, nil
}

// ---- starting and watching helpers ----

// procHelperProc is a running helper.
type procHelperProc struct {
	t      *testing.T
	role   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string   // stdout, one line at a time; closed at EOF
	done   chan struct{} // closed once the process has been waited for
	err    error         // Wait's result, valid after done
	stderr bytes.Buffer  // valid after done
}

// procStartHelper starts the test binary as role with args. The helper is killed
// (SIGKILL, by pid) and reaped when the test ends, if it is still running.
func procStartHelper(t *testing.T, role string, args ...string) *procHelperProc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := &procHelperProc{t: t, role: role, lines: make(chan string, 64), done: make(chan struct{})}
	p.cmd = exec.Command(exe, append([]string{"kcache-test-" + role}, args...)...)
	p.cmd.Env = append(os.Environ(), procRoleEnv+"="+role)
	p.cmd.Stderr = &p.stderr
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start helper %s: %v", role, err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		select {
		case <-p.done:
		case <-time.After(procHangGuard):
			t.Errorf("helper %s (pid %d) was not reaped", role, p.pid())
		}
	})
	return p
}

func (p *procHelperProc) pid() int { return p.cmd.Process.Pid }

func (p *procHelperProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL to the helper unless it has been reaped already.
func (p *procHelperProc) kill() {
	if !p.exited() {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
	}
}

// describe returns the helper's exit status and stderr once it has exited.
func (p *procHelperProc) describe() string {
	select {
	case <-p.done:
		return fmt.Sprintf("exit: %v; stderr:\n%s", p.err, p.stderr.String())
	case <-time.After(procHangGuard):
		return "still running"
	}
}

// expectLine waits for the helper's next stdout line and checks its prefix.
func (p *procHelperProc) expectLine(prefix string) string {
	p.t.Helper()
	select {
	case line, ok := <-p.lines:
		if !ok {
			p.t.Fatalf("helper %s (pid %d) ended before printing %q; %s", p.role, p.pid(), prefix, p.describe())
		}
		if !strings.HasPrefix(line, prefix) {
			p.t.Fatalf("helper %s (pid %d) printed %q, want %q...", p.role, p.pid(), line, prefix)
		}
		return line
	case <-time.After(procHangGuard):
		p.kill()
		p.t.Fatalf("helper %s (pid %d) printed nothing for %s (hang guard); %s", p.role, p.pid(), procHangGuard, p.describe())
	}
	return ""
}

// wait waits for the helper to exit (draining its stdout) and returns Wait's
// error.
func (p *procHelperProc) wait() error {
	p.t.Helper()
	timeout := time.After(procHangGuard)
	for {
		select {
		case <-p.lines: // discard anything not expected explicitly
		case <-p.done:
			return p.err
		case <-timeout:
			p.kill()
			p.t.Fatalf("helper %s (pid %d) did not exit within %s (hang guard)", p.role, p.pid(), procHangGuard)
		}
	}
}

// mustSucceed waits for the helper and fails the test unless it exited 0.
func (p *procHelperProc) mustSucceed() {
	p.t.Helper()
	if err := p.wait(); err != nil {
		p.t.Fatalf("helper %s (pid %d) failed: %v\n%s", p.role, p.pid(), err, p.stderr.String())
	}
}

// procNoHang runs f in a goroutine and fails the test if it has not returned
// within procHangGuard.
func procNoHang[T any](t *testing.T, what string, f func() (T, error)) (T, error) {
	t.Helper()
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := f()
		ch <- result{v, err}
	}()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-time.After(procHangGuard):
		t.Fatalf("%s did not return within %s (hang guard)", what, procHangGuard)
	}
	panic("unreachable")
}

// ---- checks on the cache directory ----

// procBlobFiles lists every file under <root>/blobs, by base name, with its size.
func procBlobFiles(t *testing.T, root string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	err := filepath.WalkDir(filepath.Join(root, "blobs"), func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && p == filepath.Join(root, "blobs") {
			return fs.SkipAll
		}
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		out[d.Name()] = fi.Size()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// procTmpEntries lists <root>/.tmp (nil when it does not exist).
func procTmpEntries(t *testing.T, root string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(root, ".tmp"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// digests returns the entry's blob digests: image, vmlinux, manifest.
func procDigests(e *kcache.Entry) []string {
	ds := []string{e.Image.Digest}
	if e.Vmlinux != nil {
		ds = append(ds, e.Vmlinux.Digest)
	}
	return append(ds, e.Manifest.Digest)
}

// procCheckOnlyBlobs fails unless the blob directory holds exactly the blobs of
// the given entries, each with its recorded size and content.
func procCheckOnlyBlobs(t *testing.T, c *kcache.Cache, root string, entries ...*kcache.Entry) {
	t.Helper()
	want := map[string]int64{}
	for _, e := range entries {
		want[e.Image.Digest] = e.Image.Size
		if e.Vmlinux != nil {
			want[e.Vmlinux.Digest] = e.Vmlinux.Size
		}
		want[e.Manifest.Digest] = e.Manifest.Size
	}
	got := procBlobFiles(t, root)
	for name, size := range got {
		ws, ok := want[name]
		if !ok {
			t.Errorf("blob directory holds %s (%d bytes), which no entry references", name, size)
			continue
		}
		if size != ws {
			t.Errorf("blob %s is %d bytes, the entry says %d", name, size, ws)
		}
		data, err := os.ReadFile(c.BlobPath(name))
		if err != nil {
			t.Fatal(err)
		}
		if d := procSha256Hex(data); d != name {
			t.Errorf("blob %s hashes to %s", name, d)
		}
	}
	for name := range want {
		if _, ok := got[name]; !ok {
			t.Errorf("blob %s of a current entry is missing from the blob directory", name)
		}
	}
}

// procCheckTmpEmpty fails if <root>/.tmp holds anything.
func procCheckTmpEmpty(t *testing.T, root string) {
	t.Helper()
	if names := procTmpEntries(t, root); len(names) > 0 {
		t.Errorf("%s/.tmp still holds %q", root, names)
	}
}

// procCheckHolderNamed fails unless err's text names the helper as a lock holder.
func procCheckHolderNamed(t *testing.T, err error, p *procHelperProc) {
	t.Helper()
	msg := err.Error()
	if !strings.Contains(msg, fmt.Sprintf("pid=%d ", p.pid())) {
		t.Errorf("error does not name holder pid %d:\n%s", p.pid(), msg)
	}
	if !strings.Contains(msg, "kcache-test-"+p.role) {
		t.Errorf("error does not show the holder's command line (kcache-test-%s):\n%s", p.role, msg)
	}
}

// ---- the tests ----

// Readers in four processes read an entry over and over while a fifth
// process replaces it 40 times. Every read must be one complete generation:
// image, vmlinux and record agree, every byte matches the recorded digest
// and size, and no reader ever goes back to an older generation. Afterwards
// only the last generation is left: its three blobs and nothing else, and no
// staging directory.
//
// KCACHE_TEST_GENERATIONS=N replaces the entry N times instead of 40, for a
// longer stress run.
func TestProcessReadersDuringReplacement(t *testing.T) {
	const key, readers = "readers-vs-writer", 4
	last := 40
	if v := os.Getenv("KCACHE_TEST_GENERATIONS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("KCACHE_TEST_GENERATIONS=%q: want a positive number", v)
		}
		last = n
	}
	root, work := t.TempDir(), t.TempDir()
	c := procHelperCache(root)
	if _, err := procStoreGen(c, key, work, 0); err != nil {
		t.Fatal(err)
	}
	var rs []*procHelperProc
	for range readers {
		rs = append(rs, procStartHelper(t, "reader", root, key))
	}
	for _, r := range rs {
		r.expectLine("ready") // every reader has read generation 0
	}
	w := procStartHelper(t, "writer", root, key, work, "1", strconv.Itoa(last))
	w.mustSucceed()
	total := 0
	for i, r := range rs {
		fmt.Fprintf(r.stdin, "%d\n", last) // stop once generation `last` was read
		line := r.expectLine("done ")
		if err := r.wait(); err != nil {
			t.Fatalf("reader %d (pid %d) failed: %v\n%s", i, r.pid(), err, r.stderr.String())
		}
		var iters, gens, lastSeen int
		if _, err := fmt.Sscanf(line, "done iterations=%d generations=%d last=%d", &iters, &gens, &lastSeen); err != nil {
			t.Fatalf("reader %d: bad report %q: %v", i, line, err)
		}
		t.Logf("reader %d: %d complete reads covering %d of %d generations", i, iters, gens, last+1)
		if iters <= 0 || gens < 2 || lastSeen != last {
			t.Errorf("reader %d: %q: want reads of generation 0 and of generation %d at least", i, line, last)
		}
		total += iters
	}
	t.Logf("%d complete reads in all while %d replacements ran", total, last)

	l, err := c.List(context.Background(), kcache.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Entries) != 1 || l.Entries[0].Entry == nil || *l.Entries[0].Entry.Version != procGenVersion(last) {
		t.Fatalf("cache after the writer: %+v; want exactly generation %d", l.Entries, last)
	}
	final := l.Entries[0].Entry
	if g, err := procReadEntryOnce(c, key); err != nil || g != last {
		t.Fatalf("final read: generation %d, %v", g, err)
	}
	procCheckOnlyBlobs(t, c, root, final)
	if n := len(procBlobFiles(t, root)); n != 3 {
		t.Errorf("blob directory holds %d files, want 3 (image, vmlinux, manifest)", n)
	}
	procCheckTmpEmpty(t, root)
}

// Two processes store the same key at once. The entry lock must serialize
// them — their staging directories never exist at the same time — and the
// one that stored last must win, with the loser's and the old entry's blobs
// gone and the index consistent.
func TestProcessConcurrentStoresLastWins(t *testing.T) {
	const key = "two-writers"
	root, work := t.TempDir(), t.TempDir()
	c := procHelperCache(root)
	old, err := procStoreGen(c, key, work, 0)
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(work, "completions.log")
	type input struct{ image, vmlinux string }
	inputs := map[string]input{}
	for i, id := range []string{"A", "B"} {
		img, vml, err := procWriteKernel(work, 1, 6<<20+i, 2<<20+i, id)
		if err != nil {
			t.Fatal(err)
		}
		inputs[id] = input{img, vml}
	}

	// The barrier: while the test holds the entry lock, both storers start
	// and enter Store; neither can get past the lock. Releasing it lets them
	// race for it, so their Store calls certainly overlap.
	barrier, err := c.AcquireExclusive(context.Background(), key, kcache.LockOptions{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	procs := map[string]*procHelperProc{}
	for _, id := range []string{"A", "B"} {
		procs[id] = procStartHelper(t, "storer", root, key, id, inputs[id].image, inputs[id].vmlinux, logPath)
	}
	for _, id := range []string{"A", "B"} {
		procs[id].expectLine("storing")
	}
	time.Sleep(200 * time.Millisecond) // give a store that ignores the lock time to show it
	for id, p := range procs {
		if p.exited() {
			t.Fatalf("storer %s finished while the test held the entry lock: %s", id, p.describe())
		}
	}
	if e, err := c.Lookup(context.Background(), key); err != nil || e.Manifest.Digest != old.Manifest.Digest {
		t.Fatalf("the entry changed while the test held its lock (err %v)", err)
	}

	// Watch .tmp while they run: with the entry lock held by each Store for
	// its whole duration, the two staging directories never coexist.
	stop := make(chan struct{})
	var watch sync.WaitGroup
	var both []string
	seen := map[int]int{}
	watch.Go(func() {
		pids := []int{procs["A"].pid(), procs["B"].pid()}
		for {
			select {
			case <-stop:
				return
			default:
			}
			ents, _ := os.ReadDir(filepath.Join(root, ".tmp"))
			var live []string
			for _, e := range ents {
				for _, pid := range pids {
					if e.IsDir() && strings.HasPrefix(e.Name(), strconv.Itoa(pid)+"-") {
						live = append(live, e.Name())
						seen[pid]++
					}
				}
			}
			if len(live) > 1 && both == nil {
				both = live
			}
			time.Sleep(time.Millisecond)
		}
	})
	if err := barrier.Release(); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"A", "B"} {
		procs[id].mustSucceed()
	}
	close(stop)
	watch.Wait()
	if both != nil {
		t.Errorf("both stores had staging directories at once: %q (the entry lock did not serialize them)", both)
	}
	t.Logf("staging directory sightings by pid: %v", seen)

	data, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	var reports []procStorerReport
	for line := range strings.SplitSeq(strings.TrimSpace(string(data)), "\n") {
		var r procStorerReport
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("completion log line %q: %v", line, err)
		}
		reports = append(reports, r)
	}
	if len(reports) != 2 {
		t.Fatalf("completion log has %d lines, want 2:\n%s", len(reports), data)
	}
	// stored_at is taken under the entry lock, so it orders the two
	// critical sections; the O_APPEND log orders the returns of Store, which
	// agrees unless a storer was descheduled between its return and its write.
	order := procSortByStoredAt(t, reports)
	winner, loser := order[1], order[0]
	if reports[1].ID != winner.ID {
		t.Logf("note: completion log order %s, %s differs from lock order %s, %s", reports[0].ID, reports[1].ID, loser.ID, winner.ID)
	}
	t.Logf("lock order: %s then %s", loser.ID, winner.ID)

	final, err := c.Lookup(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	if final.Version == nil || *final.Version != winner.ID || final.Manifest.Digest != winner.Manifest {
		t.Fatalf("final entry is version %v manifest %s; want the last store's (%s, manifest %s)", final.Version, final.Manifest.Digest, winner.ID, winner.Manifest)
	}
	for role, path := range map[string]string{"image": inputs[winner.ID].image, "vmlinux": inputs[winner.ID].vmlinux} {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		got := final.Image
		if role == "vmlinux" {
			got = *final.Vmlinux
		}
		if got.Digest != procSha256Hex(data) || got.Size != int64(len(data)) {
			t.Errorf("final %s is %s (%d bytes); the winner's input is %s (%d bytes)", role, got.Digest, got.Size, procSha256Hex(data), len(data))
		}
	}
	for _, d := range append([]string{loser.Image, loser.Vmlinux, loser.Manifest}, procDigests(old)...) {
		if _, err := os.Stat(c.BlobPath(d)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("replaced blob %s is still in the blob directory (stat: %v)", d, err)
		}
	}
	procCheckOnlyBlobs(t, c, root, final)
	procCheckTmpEmpty(t, root)
	l, err := c.List(context.Background(), kcache.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Entries) != 1 || l.Entries[0].Entry == nil {
		t.Fatalf("list after both stores: %+v; want one usable entry", l.Entries)
	}
}

// procSortByStoredAt returns the reports in stored_at order.
func procSortByStoredAt(t *testing.T, rs []procStorerReport) []procStorerReport {
	t.Helper()
	at := func(r procStorerReport) time.Time {
		v, err := time.Parse(time.RFC3339Nano, r.StoredAt)
		if err != nil {
			t.Fatalf("storer %s: stored_at %q: %v", r.ID, r.StoredAt, err)
		}
		return v
	}
	out := append([]procStorerReport(nil), rs...)
	sort.Slice(out, func(i, j int) bool { return at(out[i]).Before(at(out[j])) })
	if !at(out[0]).Before(at(out[1])) {
		t.Fatalf("both stores report stored_at %s", out[0].StoredAt)
	}
	return out
}

// A process holding an entry's shared lock keeps Store (after its wait) and
// Remove (at once) away from the entry, and both errors name the holder. Its
// death releases the lock.
func TestProcessSharedLockHolderBlocksStoreAndRemove(t *testing.T) {
	const key = "held-shared"
	root, work := t.TempDir(), t.TempDir()
	c := mustOpen(root, &kcache.Options{StoreLockTimeout: time.Second})
	old, err := procStoreGen(c, key, work, 0)
	if err != nil {
		t.Fatal(err)
	}
	h := procStartHelper(t, "holdshared", root, key)
	h.expectLine("ready")

	_, err = procNoHang(t, "Store", func() (*kcache.Entry, error) { return procStoreGen(c, key, work, 1) })
	if !errors.Is(err, kcache.ErrInUse) {
		t.Fatalf("Store while another process holds the entry shared: %v; want ErrInUse", err)
	}
	procCheckHolderNamed(t, err, h)
	if e, err := c.Lookup(context.Background(), key); err != nil || e.Manifest.Digest != old.Manifest.Digest {
		t.Fatalf("the entry changed although Store failed (err %v)", err)
	}

	// Shared holders do not exclude each other.
	l, err := c.AcquireShared(context.Background(), key, kcache.LockOptions{Timeout: time.Second})
	if err != nil {
		t.Fatalf("a second shared holder was refused: %v", err)
	}
	_ = l.Release()

	_, err = procNoHang(t, "Remove", func() (struct{}, error) {
		return struct{}{}, c.Remove(context.Background(), key, kcache.RemoveOptions{})
	})
	if !errors.Is(err, kcache.ErrInUse) {
		t.Fatalf("Remove while another process holds the entry shared: %v; want ErrInUse", err)
	}
	procCheckHolderNamed(t, err, h)
	if _, err := c.Lookup(context.Background(), key); err != nil {
		t.Fatalf("the entry is gone although Remove failed: %v", err)
	}

	h.kill() // a crashed holder: the kernel drops its lock
	if err := h.wait(); err == nil {
		t.Fatal("holder exited cleanly; want it killed")
	}
	if err := c.Remove(context.Background(), key, kcache.RemoveOptions{}); err != nil {
		t.Fatalf("Remove after the holder died: %v", err)
	}
	if _, err := c.Lookup(context.Background(), key); !errors.Is(err, kcache.ErrNotFound) {
		t.Fatalf("Lookup after Remove: %v; want ErrNotFound", err)
	}
	procCheckOnlyBlobs(t, c, root)
	procCheckTmpEmpty(t, root)
}

// A process holding the index file open read-write makes List, Lookup and
// Store fail after IndexTimeout with ErrIndexBusy naming it, instead of
// hanging; nothing is damaged and everything works once it is gone.
func TestProcessIndexHolderMakesOperationsFailNotHang(t *testing.T) {
	const key = "index-held"
	root, work := t.TempDir(), t.TempDir()
	c := mustOpen(root, &kcache.Options{IndexTimeout: 500 * time.Millisecond})
	old, err := procStoreGen(c, key, work, 0)
	if err != nil {
		t.Fatal(err)
	}
	h := procStartHelper(t, "holdindex", root)
	h.expectLine("ready")

	ops := []struct {
		name string
		f    func() error
	}{
		{"List", func() error { _, err := c.List(context.Background(), kcache.ListOptions{}); return err }},
		{"Lookup", func() error { _, err := c.Lookup(context.Background(), key); return err }},
		{"Store", func() error { _, err := procStoreGen(c, key, work, 1); return err }},
	}
	for _, op := range ops {
		_, err := procNoHang(t, op.name, func() (struct{}, error) { return struct{}{}, op.f() })
		if !errors.Is(err, kcache.ErrIndexBusy) {
			t.Errorf("%s while another process holds the index: %v; want ErrIndexBusy", op.name, err)
			continue
		}
		procCheckHolderNamed(t, err, h)
	}

	h.kill()
	_ = h.wait()
	e, err := c.Lookup(context.Background(), key)
	if err != nil || e.Manifest.Digest != old.Manifest.Digest {
		t.Fatalf("Lookup after the holder died: %v; want the old entry", err)
	}
	if g, err := procReadEntryOnce(c, key); err != nil || g != 0 {
		t.Fatalf("reading the old entry: generation %d, %v", g, err)
	}
	procCheckTmpEmpty(t, root)
	// The failed Store ingested its blobs before the index refused it; they
	// are unreferenced garbage for a sweep, never part of an entry.
	if n := len(procBlobFiles(t, root)); n > 3 {
		t.Logf("the failed Store left %d unreferenced blobs behind", n-3)
	}
}

// procStagingOf returns the staging directory of pid under <root>/.tmp and
// whether a blob is being written in it right now.
func procStagingOf(root string, pid int) (dir string, writing bool) {
	ents, _ := os.ReadDir(filepath.Join(root, ".tmp"))
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), strconv.Itoa(pid)+"-") {
			dir = filepath.Join(root, ".tmp", e.Name())
			inner, _ := os.ReadDir(dir)
			for _, f := range inner {
				if strings.HasPrefix(f.Name(), "blob-") {
					return dir, true
				}
			}
			return dir, false
		}
	}
	return "", false
}

// procStopMidIngest starts a storer of key and stops it (SIGSTOP) in the
// middle of an ingest; it returns the stopped helper and its staging
// directory. Frozen, a blob being written means the ingest has not ended, so
// the index cannot point at the new entry yet. When the store finished
// before it could be stopped it tries again, after calling retry (may be
// nil), up to five times.
func procStopMidIngest(t *testing.T, root, key, img, vml string, retry func()) (*procHelperProc, string) {
	t.Helper()
	for attempt := 1; attempt <= 5; attempt++ {
		s := procStartHelper(t, "storer", root, key, "big", img, vml, "-")
		s.expectLine("storing")
		deadline := time.Now().Add(procHangGuard)
		for !s.exited() && time.Now().Before(deadline) {
			if _, writing := procStagingOf(root, s.pid()); writing {
				break
			}
			time.Sleep(200 * time.Microsecond)
		}
		if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatalf("stop storer: %v (%s)", err, s.describe())
		}
		if dir, writing := procStagingOf(root, s.pid()); writing {
			return s, dir
		}
		t.Logf("attempt %d: the store of %s finished before it could be stopped; retrying", attempt, key)
		s.kill()
		_ = s.wait()
		if retry != nil {
			retry()
		}
	}
	t.Fatalf("never caught the storer of %s in the middle of an ingest", key)
	return nil, ""
}

// A writer killed in the middle of an ingest leaves the previous entry
// intact and its staging directory behind. While the writer is alive (here:
// stopped) no other store may sweep its staging directory; once it is dead,
// the next store of any key does.
func TestProcessWriterKilledMidStore(t *testing.T) {
	const key, other = "killed-writer", "other-key"
	root, work := t.TempDir(), t.TempDir()
	c := procHelperCache(root)
	old, err := procStoreGen(c, key, work, 0)
	if err != nil {
		t.Fatal(err)
	}
	img, vml, err := procWriteKernel(work, 1, 64<<20, 1<<20, "big")
	if err != nil {
		t.Fatal(err)
	}

	s, staging := procStopMidIngest(t, root, key, img, vml, func() {
		if old, err = procStoreGen(c, key, work, 0); err != nil { // back to a known previous entry
			t.Fatal(err)
		}
	})
	// Another writer must leave a live writer's staging directory alone.
	if _, err := procStoreGen(c, other, work, 2); err != nil {
		t.Fatalf("store of another key while a writer is stopped mid-store: %v", err)
	}
	if _, err := os.Stat(staging); err != nil {
		t.Fatalf("a concurrent store swept the staging directory of a live writer: %v", err)
	}
	s.kill()
	if err := s.wait(); err == nil {
		t.Fatal("the storer exited cleanly; want it killed")
	}
	if _, err := os.Stat(staging); err != nil {
		t.Fatalf("the killed writer's staging directory is not there: %v", err)
	}
	e, err := c.Lookup(context.Background(), key)
	if err != nil {
		t.Fatalf("Lookup after the writer was killed: %v", err)
	}
	if e.Manifest.Digest != old.Manifest.Digest {
		t.Fatalf("entry after the writer was killed mid-ingest is version %v; want the previous one", e.Version)
	}
	if g, err := procReadEntryOnce(c, key); err != nil || g != 0 {
		t.Fatalf("reading the previous entry: generation %d, %v", g, err)
	}

	// The next store of any key sweeps the dead writer's staging directory.
	if _, err := procStoreGen(c, other, work, 3); err != nil {
		t.Fatal(err)
	}
	procCheckTmpEmpty(t, root)
	// And the dead writer's entry lock is free again.
	if _, err := procStoreGen(c, key, work, 4); err != nil {
		t.Fatalf("store of the killed writer's key: %v", err)
	}
	procCheckTmpEmpty(t, root)
}

// Writers killed at random moments of a store — during the copy, the
// commit or the clean-up — never leave a partial entry: the key holds the
// previous or the new content, complete. The next store leaves .tmp empty.
func TestProcessWriterKilledAtRandomMoments(t *testing.T) {
	const key, other = "random-kill", "sweeper"
	root, work := t.TempDir(), t.TempDir()
	c := procHelperCache(root)
	if _, err := procStoreGen(c, key, work, 0); err != nil {
		t.Fatal(err)
	}
	// How long one store process takes from start to exit, to spread the
	// kills over it. (Used to pick delays, never in an assertion.)
	img, vml, err := procWriteKernel(work, 1, 16<<20, 2<<20, "kill")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	s := procStartHelper(t, "storer", root, key, "kill-1", img, vml, "-")
	s.mustSucceed()
	span := time.Since(start)
	prev, err := c.Lookup(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	outcomes := map[string]int{}
	for i := 2; i <= 7; i++ {
		id := fmt.Sprintf("kill-%d", i)
		img, vml, err := procWriteKernel(work, i, 16<<20, 2<<20, "kill")
		if err != nil {
			t.Fatal(err)
		}
		s := procStartHelper(t, "storer", root, key, id, img, vml, "-")
		time.Sleep(time.Duration(rand.Int64N(int64(span)*3/2 + 1)))
		s.kill()
		_ = s.wait()
		e, err := c.Lookup(context.Background(), key)
		if err != nil {
			t.Fatalf("kill %d: Lookup: %v", i, err)
		}
		switch {
		case e.Manifest.Digest == prev.Manifest.Digest:
			outcomes["previous entry"]++
		case e.Version != nil && *e.Version == id:
			outcomes["new entry"]++
			prev = e
		default:
			t.Fatalf("kill %d: entry is version %v, neither the previous (%v) nor the new one (%s)", i, e.Version, prev.Version, id)
		}
		for role, b := range map[string]index.Blob{"image": e.Image, "vmlinux": *e.Vmlinux, "manifest": e.Manifest} {
			data, err := os.ReadFile(c.BlobPath(b.Digest))
			if err != nil || int64(len(data)) != b.Size || procSha256Hex(data) != b.Digest {
				t.Fatalf("kill %d: %s blob %s is not complete (%d bytes, err %v)", i, role, b.Digest, len(data), err)
			}
		}
		os.Remove(img)
		os.Remove(vml)
		if _, err := procStoreGen(c, other, work, i); err != nil {
			t.Fatal(err)
		}
		procCheckTmpEmpty(t, root)
	}
	t.Logf("after a kill the key held: %v", outcomes)
}
