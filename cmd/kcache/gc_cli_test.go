package main

// CLI tests of clean and gc: flags and exit codes, the JSON report, dry run
// against real run, entries held by a real `kcache run` process, the
// confirmation prompt on a real pseudo-terminal, and ktstr's clean rules.

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/kcache/kcache"
	"golang.org/x/sys/unix"
)

type gcCLIReport struct {
	DryRun     bool              `json:"dry_run"`
	Removed    []kcache.Removed  `json:"removed"`
	KeptInUse  []kcache.HeldLock `json:"kept_in_use"`
	KeptPinned []string          `json:"kept_pinned"`
	FreedBytes int64             `json:"freed_bytes"`
	Policies   []string          `json:"policies"`
	Corrupt    []string          `json:"corrupt"`
}

// gcCLIStoreN stores n entries e0..e<n-1>, e<i> built on day i+1 of 2030.
func gcCLIStoreN(t *testing.T, root string, n int) {
	t.Helper()
	for i := range n {
		cliStore(t, root, fmt.Sprintf("e%d", i), "--built-at", fmt.Sprintf("2030-01-%02dT00:00:00Z", i+1))
	}
}

func gcCLIKeys(t *testing.T, root string) []string {
	t.Helper()
	keys := cliListKeys(t, cliList(t, root))
	sort.Strings(keys)
	return keys
}

func gcCLIJSON(t *testing.T, stdout string) gcCLIReport {
	t.Helper()
	var r gcCLIReport
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		t.Fatalf("%v\n%s", err, stdout)
	}
	return r
}

func TestCLIGCUsageErrors(t *testing.T) {
	root := cliNewRoot(t)
	gcCLIStoreN(t, root, 2)
	for _, args := range [][]string{
		{"gc", "--keep-per", "colour:1"}, {"gc", "--keep-per", "arch"}, {"gc", "--keep-per", "arch:1", "--keep-per", "arch:2"},
		{"gc", "--max-age", "soon"}, {"gc", "--max-age", "-1h"}, {"gc", "--max-size", "0"}, {"gc", "--max-size", "12Q"},
		{"gc", "--min-free", "150%"}, {"gc", "--min-free", "lots"}, {"gc", "--keep", "-1"}, {"gc", "extra"},
		{"clean", "--keep", "1", "--corrupt-only"}, {"clean", "--keep", "-2", "--force"}, {"clean", "extra"},
	} {
		_, stderr, code := runIn(t, root, args...)
		if code != exitUsage {
			t.Errorf("kcache %s: exit %d, want %d\n%s", strings.Join(args, " "), code, exitUsage, stderr)
		}
	}
	if got := gcCLIKeys(t, root); len(got) != 2 {
		t.Errorf("a usage error removed entries: %q left", got)
	}
}

func TestCLIParseSizeAndDays(t *testing.T) {
	sizes := map[string]int64{"0": 0, "512": 512, "512B": 512, "1K": 1024, "1KiB": 1024, "1KB": 1000,
		"500M": 500 << 20, "1.5GiB": 3 << 29, "10G": 10 << 30, "2GB": 2_000_000_000, "1T": 1 << 40, "3mb": 3_000_000}
	for s, want := range sizes {
		if got, err := parseSize(s); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, bad := range []string{"", "G", "1.5.5G", "10GBB", "-1G", "10X"} {
		if got, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", bad, got)
		}
	}
	days := map[string]time.Duration{"30d": 30 * 24 * time.Hour, "1d12h": 36 * time.Hour, "36h": 36 * time.Hour, "90m": 90 * time.Minute}
	for s, want := range days {
		if got, err := parseDays(s); err != nil || got != want {
			t.Errorf("parseDays(%q) = %s, %v; want %s", s, got, err, want)
		}
	}
	for _, bad := range []string{"", "d", "1.5d", "xd", "1dx"} {
		if got, err := parseDays(bad); err == nil {
			t.Errorf("parseDays(%q) = %s, want an error", bad, got)
		}
	}
}

// gc --dry-run prints every victim with its reason and size, and the real
// run then removes exactly those — except an entry held by `kcache run`,
// which both skip and report with the holder; gc still exits 0.
func TestCLIGCDryRunThenRealRunWithEntryInUse(t *testing.T) {
	root := cliNewRoot(t)
	gcCLIStoreN(t, root, 8)
	cliOK(t, root, "pin", "e0")
	c := mustOpen(root, &kcache.Options{})
	run := rpStart(t, root, "run", "e1", "--", "sleep", "30")
	rpEventually(t, "kcache run holds e1", func() bool {
		if run.exited() {
			t.Fatalf("kcache run exited early: %v\n%s", run.err, run.stderr.String())
		}
		return rpHolds(t, c.LockPath("e1"), run.pid(), "shared")
	})

	text, _ := cliOK(t, root, "gc", "--keep", "3", "--dry-run")
	for _, k := range []string{"e2", "e3", "e4"} {
		if !regexpLine(text, `^`+k+`\s+keep 3\s+\d+ B$`) {
			t.Errorf("dry-run text has no row for %s with reason and size:\n%s", k, text)
		}
	}
	if !strings.Contains(text, "kept in use: e1") || !strings.Contains(text, fmt.Sprintf("pid=%d ", run.pid())) || !strings.Contains(text, "kept pinned: e0") {
		t.Errorf("dry-run text does not report e1 in use by pid %d and e0 pinned:\n%s", run.pid(), text)
	}
	dryOut, _ := cliOK(t, root, "gc", "--keep", "3", "--dry-run", "--json")
	stdout, stderr, code := rpRun(t, root, "gc", "--keep", "3", "--json")
	if code != 0 {
		t.Fatalf("gc with an entry in use: exit %d, want 0\n%s", code, stderr)
	}
	dry, real := gcCLIJSON(t, dryOut), gcCLIJSON(t, stdout)
	if !dry.DryRun || real.DryRun {
		t.Errorf("dry_run flags: %v, %v", dry.DryRun, real.DryRun)
	}
	if !reflect.DeepEqual(dry.Removed, real.Removed) || dry.FreedBytes != real.FreedBytes {
		t.Errorf("dry run and real run differ:\n dry  %+v\n real %+v", dry, real)
	}
	var removed []string
	for _, r := range real.Removed {
		removed = append(removed, r.Key)
	}
	sort.Strings(removed)
	if want := []string{"e2", "e3", "e4"}; !reflect.DeepEqual(removed, want) {
		t.Errorf("removed %q, want %q", removed, want)
	}
	if len(real.KeptInUse) != 1 || real.KeptInUse[0].Key != "e1" || len(real.KeptInUse[0].Holders) == 0 || real.KeptInUse[0].Holders[0].PID != run.pid() {
		t.Errorf("kept_in_use %+v, want e1 held by pid %d", real.KeptInUse, run.pid())
	}
	if !reflect.DeepEqual(real.KeptPinned, []string{"e0"}) {
		t.Errorf("kept_pinned %q", real.KeptPinned)
	}
	if want := []string{"e0", "e1", "e5", "e6", "e7"}; !reflect.DeepEqual(gcCLIKeys(t, root), want) {
		t.Errorf("left %q, want %q", gcCLIKeys(t, root), want)
	}
}

func regexpLine(text, re string) bool {
	for line := range strings.Lines(text) {
		if regexp.MustCompile(re).MatchString(strings.TrimRight(line, "\n")) {
			return true
		}
	}
	return false
}

// gc without policies sweeps and removes no entry.
func TestCLIGCHousekeeping(t *testing.T) {
	root := cliNewRoot(t)
	gcCLIStoreN(t, root, 3)
	stdout, _ := cliOK(t, root, "gc", "--grace", "1h")
	if !strings.Contains(stdout, "swept 0 orphan blobs") || strings.Contains(stdout, "removed") {
		t.Errorf("gc without policies:\n%s", stdout)
	}
	if got := gcCLIKeys(t, root); len(got) != 3 {
		t.Errorf("gc without policies left %q", got)
	}
	// On a cache that does not exist: nothing, and nothing created.
	missing := cliNewRoot(t)
	cliOK(t, missing, "gc", "--keep", "1")
	if cliExists(missing) {
		t.Error("gc created the cache root")
	}
}

// ktstr-cache.md §5.4 through the CLI: empty cache and nothing to remove
// succeed without a terminal; candidates without --force and without a
// terminal fail (exit 2) and remove nothing; keep counts usable entries
// only; corrupt entries are always candidates; --corrupt-only.
func TestCLICleanParity(t *testing.T) {
	root := cliNewRoot(t)
	if stdout, stderr, code := runProc(t, root, "clean"); code != 0 || stdout != "nothing to clean\n" {
		t.Fatalf("clean of an empty cache: exit %d, stdout %q\n%s", code, stdout, stderr)
	}
	gcCLIStoreN(t, root, 3)
	if stdout, stderr, code := runProc(t, root, "clean", "--keep", "3"); code != 0 || stdout != "nothing to clean\n" {
		t.Fatalf("clean --keep 3 of 3 entries: exit %d, stdout %q\n%s", code, stdout, stderr)
	}
	stdout, stderr, code := runProc(t, root, "clean", "--keep", "1")
	if code != exitUsage || !strings.Contains(stderr, "terminal") || !strings.Contains(stderr, "--force") || stdout != "" {
		t.Fatalf("clean without --force nor a terminal: exit %d\nstdout %q\nstderr %q", code, stdout, stderr)
	}
	if got := gcCLIKeys(t, root); len(got) != 3 {
		t.Fatalf("the refused clean removed entries: %q left", got)
	}
	corrupt := cliMakeCorrupt(t, root) // six corrupt entries, newest built_at of all
	var corruptKeys []string
	for _, k := range corrupt {
		corruptKeys = append(corruptKeys, k)
	}
	sort.Strings(corruptKeys)

	// --corrupt-only removes the six corrupt entries and nothing else.
	stdout, _ = cliOK(t, root, "clean", "--corrupt-only", "--force")
	if !strings.Contains(stdout, "removed 6 cached kernel(s).") {
		t.Errorf("clean --corrupt-only --force:\n%s", stdout)
	}
	if want := []string{"e0", "e1", "e2"}; !reflect.DeepEqual(gcCLIKeys(t, root), want) {
		t.Errorf("after --corrupt-only: %q, want %q", gcCLIKeys(t, root), want)
	}

	// --keep 2 with corrupt entries: the corrupt ones go, and keep counts
	// usable entries only.
	cliMakeCorrupt(t, root)
	stdout, _ = cliOK(t, root, "clean", "--keep", "2", "--force", "--json")
	r := gcCLIJSON(t, stdout)
	var removed []string
	for _, x := range r.Removed {
		removed = append(removed, x.Key)
	}
	sort.Strings(removed)
	if want := append([]string{"e0"}, corruptKeys...); !sameSorted(removed, want) {
		t.Errorf("clean --keep 2 removed %q, want %q", removed, want)
	}
	if want := []string{"e1", "e2"}; !reflect.DeepEqual(gcCLIKeys(t, root), want) {
		t.Errorf("after --keep 2: %q, want %q", gcCLIKeys(t, root), want)
	}
}

func sameSorted(a, b []string) bool {
	a, b = append([]string(nil), a...), append([]string(nil), b...)
	sort.Strings(a)
	sort.Strings(b)
	return reflect.DeepEqual(a, b)
}

// openPTY returns a pseudo-terminal's master and slave.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

// On a terminal, clean lists the victims on stdout, asks on stderr and
// proceeds only on y or Y.
func TestCLICleanPromptsOnATerminal(t *testing.T) {
	root := cliNewRoot(t)
	gcCLIStoreN(t, root, 3)
	clean := func(answer string) (stdout, stderr string, code int) {
		master, slave := openPTY(t)
		if _, err := master.WriteString(answer + "\n"); err != nil {
			t.Fatal(err)
		}
		cmd := kcacheCmd(t, root, "clean", "--keep", "1")
		var o, e strings.Builder
		cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, &o, &e
		cmd.WaitDelay = time.Second
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return o.String(), e.String(), code
	}
	for _, no := range []string{"n", "", "yes", "Yy"} {
		stdout, stderr, code := clean(no)
		if code != 0 || !strings.HasSuffix(stdout, "aborted\n") || !strings.Contains(stderr, "remove 2 entries? [y/N] ") {
			t.Errorf("answer %q: exit %d\nstdout %q\nstderr %q", no, code, stdout, stderr)
		}
		if !strings.HasPrefix(stdout, "the following entries will be removed:\n") || !strings.Contains(stdout, "e0") || strings.Contains(stdout, "e2 ") {
			t.Errorf("answer %q: the listing is not the two victims:\n%s", no, stdout)
		}
	}
	if got := gcCLIKeys(t, root); len(got) != 3 {
		t.Fatalf("an aborted clean removed entries: %q left", got)
	}
	stdout, stderr, code := clean(" Y ")
	if code != 0 || !strings.Contains(stdout, "removed 2 cached kernel(s).") {
		t.Fatalf("answer Y: exit %d\nstdout %q\nstderr %q", code, stdout, stderr)
	}
	if want := []string{"e2"}; !reflect.DeepEqual(gcCLIKeys(t, root), want) {
		t.Errorf("after clean --keep 1: %q, want %q", gcCLIKeys(t, root), want)
	}
}

// clean --dry-run removes nothing and needs no terminal; clean skips an
// entry held by a running `kcache run`, reports it, and exits 0.
func TestCLICleanDryRunAndInUse(t *testing.T) {
	root := cliNewRoot(t)
	gcCLIStoreN(t, root, 3)
	stdout, _, code := runProc(t, root, "clean", "--dry-run")
	if code != 0 || !strings.Contains(stdout, "would remove 3 entries") {
		t.Fatalf("clean --dry-run: exit %d\n%s", code, stdout)
	}
	c := mustOpen(root, &kcache.Options{})
	run := rpStart(t, root, "run", "e1", "--", "sleep", "30")
	rpEventually(t, "kcache run holds e1", func() bool {
		if run.exited() {
			t.Fatalf("kcache run exited early: %v\n%s", run.err, run.stderr.String())
		}
		return rpHolds(t, c.LockPath("e1"), run.pid(), "shared")
	})
	stdout, stderr, code := rpRun(t, root, "clean", "--force")
	if code != 0 || !strings.Contains(stdout, "kept in use: e1") || !strings.Contains(stdout, fmt.Sprintf("pid=%d ", run.pid())) || !strings.Contains(stdout, "removed 2 cached kernel(s).") {
		t.Errorf("clean --force with e1 in use: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if want := []string{"e1"}; !reflect.DeepEqual(gcCLIKeys(t, root), want) {
		t.Errorf("left %q, want %q", gcCLIKeys(t, root), want)
	}
}

// TestCLIGCGraceZero: --grace 0s removes unreferenced blobs of any age (it
// does not fall back to the one-hour default); a negative grace is a usage
// error.
func TestCLIGCGraceZero(t *testing.T) {
	root := t.TempDir()
	img := filepath.Join(t.TempDir(), "bzImage")
	if err := os.WriteFile(img, []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := runIn(t, root, "store", "k", "--image", img); code != 0 {
		t.Fatal(stderr)
	}
	orphan := filepath.Join(root, "blobs", "sha256", "ab", strings.Repeat("ab", 32))
	if err := os.MkdirAll(filepath.Dir(orphan), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(orphan, []byte("fresh orphan"), 0o444); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := runIn(t, root, "gc", "--grace", "0s"); code != 0 {
		t.Fatalf("gc --grace 0s: exit %d %s", code, stderr)
	}
	if _, err := os.Stat(orphan); !os.IsNotExist(err) {
		t.Errorf("gc --grace 0s kept a fresh orphan (%v)", err)
	}
	if _, _, code := runIn(t, root, "gc", "--grace", "-1s"); code != exitUsage {
		t.Errorf("gc --grace -1s: exit %d, want 2", code)
	}
}
