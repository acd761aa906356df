package main

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// cliStats runs `kcache stats --json` and decodes it.
func cliStats(t *testing.T, root string, global ...string) map[string]any {
	t.Helper()
	out, _ := cliOK(t, root, append(global, "stats", "--json")...)
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("stats --json: %v\n%s", err, out)
	}
	return m
}

// num reads a number at a dotted path of a decoded stats report.
func num(t *testing.T, m map[string]any, path string) int64 {
	t.Helper()
	var v any = m
	for _, k := range strings.Split(path, ".") {
		obj, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("stats: %s is not an object", path)
		}
		if v, ok = obj[k]; !ok {
			t.Fatalf("stats: no field %s", path)
		}
	}
	f, ok := v.(float64)
	if !ok {
		t.Fatalf("stats: %s = %v, not a number", path, v)
	}
	return int64(f)
}

// duBlobs sums the sizes of the regular files under <root>/blobs.
func duBlobs(t *testing.T, root string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(filepath.Join(root, "blobs"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		fi, err := d.Info()
		if err == nil {
			n += fi.Size()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// The stats JSON has the documented keys in the documented order, with
// null for a gc that never ran.
func TestCLIStatsJSONSchema(t *testing.T) {
	root := cliNewRoot(t)
	cliStore(t, root, "k0") // creates the index
	cliStore(t, root, "k")  // sweeps, recording last_sweep
	out, _ := cliOK(t, root, "stats", "--json")
	raw := []byte(out)
	if got, want := cliKeys(t, raw), []string{"root", "entries", "blobs", "index", "staging", "quarantine",
		"hits", "misses", "evictions", "gc_runs", "last_gc", "last_gc_freed_bytes", "last_sweep"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("stats keys = %q; want %q", got, want)
	}
	for field, want := range map[string][]string{
		"entries":    {"total", "valid", "corrupt", "pinned"},
		"blobs":      {"recorded_bytes", "recorded_count", "on_disk_bytes", "on_disk_count", "unreferenced_bytes", "unreferenced_count", "missing_count", "dedup_saved_bytes"},
		"index":      {"path", "size_bytes", "page_size", "free_pages", "free_bytes"},
		"staging":    {"path", "bytes", "dirs"},
		"quarantine": {"path", "bytes", "files"},
	} {
		if got := cliKeys(t, cliField(t, raw, field)); strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("stats %s keys = %q; want %q", field, got, want)
		}
	}
	for _, field := range []string{"last_gc", "last_gc_freed_bytes"} {
		if v := string(cliField(t, raw, field)); v != "null" {
			t.Errorf("%s = %s; want null before any gc", field, v)
		}
	}
	var last string
	if err := json.Unmarshal(cliField(t, raw, "last_sweep"), &last); err != nil {
		t.Fatalf("last_sweep: %v", err)
	}
	if _, err := time.Parse(time.RFC3339, last); err != nil {
		t.Errorf("last_sweep %q is not RFC 3339: %v", last, err)
	}

	// An empty (missing) cache: zeros, nulls, and nothing created.
	missing := cliNewRoot(t)
	m := cliStats(t, missing)
	if num(t, m, "entries.total") != 0 || m["last_sweep"] != nil || num(t, m, "index.size_bytes") != 0 {
		t.Errorf("stats of a missing root = %v", m)
	}
	if cliExists(missing) {
		t.Error("stats created the cache root")
	}
}

// On a healthy cache the bytes stats records equal the bytes under blobs/;
// two entries sharing an image save its size; text output is aligned.
func TestCLIStatsBytes(t *testing.T) {
	root := cliNewRoot(t)
	img := cliWrite(t, t.TempDir(), "bzImage", strings.Repeat("shared image ", 1000))
	cliOK(t, root, "store", "a", "--image", img, "--vmlinux", cliSampleVmlinux)
	cliOK(t, root, "store", "b", "--image", img)
	cliStore(t, root, "c")
	cliOK(t, root, "pin", "c")
	m := cliStats(t, root)
	du := duBlobs(t, root)
	if got := num(t, m, "blobs.recorded_bytes"); got != du {
		t.Errorf("recorded_bytes %d; du of blobs/ is %d", got, du)
	}
	if got := num(t, m, "blobs.on_disk_bytes"); got != du {
		t.Errorf("on_disk_bytes %d; du of blobs/ is %d", got, du)
	}
	fi, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	if got := num(t, m, "blobs.dedup_saved_bytes"); got != fi.Size() {
		t.Errorf("dedup_saved_bytes %d; want the shared image's %d", got, fi.Size())
	}
	if num(t, m, "entries.total") != 3 || num(t, m, "entries.valid") != 3 || num(t, m, "entries.corrupt") != 0 || num(t, m, "entries.pinned") != 1 {
		t.Errorf("entries = %v", m["entries"])
	}
	if ifi, err := os.Stat(filepath.Join(root, "index.db")); err != nil || num(t, m, "index.size_bytes") != ifi.Size() {
		t.Errorf("index.size_bytes %d (file: %v)", num(t, m, "index.size_bytes"), err)
	}

	out, _ := cliOK(t, root, "stats")
	lines := cliLines(out)
	col := -1
	for _, l := range lines {
		label, rest, ok := strings.Cut(l, "  ")
		if !ok || label == "" {
			t.Fatalf("stats line %q is not 'label  value'", l)
		}
		c := len(l) - len(strings.TrimLeft(rest, " "))
		if col >= 0 && c != col {
			t.Errorf("stats values are not aligned:\n%s", out)
			break
		}
		col = c
	}
	for _, want := range []string{"entries", "3 (3 valid, 0 corrupt, 1 pinned)", "dedup saved", "hits", "misses", "evictions", "last gc", "never", "last sweep"} {
		if !strings.Contains(out, want) {
			t.Errorf("stats text lacks %q:\n%s", want, out)
		}
	}
}

// Hits and misses move with lookups, evictions with rm; read-only lookups
// and show count nothing; run counts as a use (a hit and last_used).
func TestCLIStatsCounters(t *testing.T) {
	root := cliNewRoot(t)
	cliStore(t, root, "k")
	cliStore(t, root, "gone")
	want := func(hits, misses, evictions int64) {
		t.Helper()
		m := cliStats(t, root)
		if h, mi, e := num(t, m, "hits"), num(t, m, "misses"), num(t, m, "evictions"); h != hits || mi != misses || e != evictions {
			t.Fatalf("hits %d, misses %d, evictions %d; want %d, %d, %d", h, mi, e, hits, misses, evictions)
		}
	}
	want(0, 0, 0)
	cliOK(t, root, "lookup", "k")
	want(1, 0, 0)
	cliCode(t, root, exitNotFound, "lookup", "nope")
	want(1, 1, 0)
	cliOK(t, root, "show", "k")
	cliOK(t, root, "--read-only", "lookup", "k")
	cliCode(t, root, exitNotFound, "--read-only", "lookup", "nope")
	want(1, 1, 0)
	cliOK(t, root, "run", "k", "--", "true")
	want(2, 1, 0)
	cliCode(t, root, exitNotFound, "run", "nope", "--", "true")
	want(2, 2, 0)
	cliOK(t, root, "rm", "gone")
	want(2, 2, 1)
}

// `kcache run` counts as a use: it records last_used.
func TestCLIRunRecordsLastUsed(t *testing.T) {
	root := cliNewRoot(t)
	cliStore(t, root, "k")
	out, _ := cliOK(t, root, "show", "k", "--json")
	if v := string(cliField(t, []byte(out), "last_used")); v != "null" {
		t.Fatalf("last_used before any use = %s", v)
	}
	before := time.Now().Truncate(time.Second)
	cliOK(t, root, "run", "k", "--", "true")
	out, _ = cliOK(t, root, "show", "k", "--json")
	var last string
	if err := json.Unmarshal(cliField(t, []byte(out), "last_used"), &last); err != nil {
		t.Fatalf("last_used after run: %v (%s)", err, out)
	}
	if at, err := time.Parse(time.RFC3339, last); err != nil || at.Before(before) {
		t.Errorf("last_used after run = %q; want about now", last)
	}
}

// --read-only: a lookup leaves index.db byte-identical with the same mtime
// (where a normal lookup would record last_used), creates no counter file,
// and a store fails with a message that says why.
func TestCLIReadOnly(t *testing.T) {
	root := cliNewRoot(t)
	cliStore(t, root, "k")
	idx := filepath.Join(root, "index.db")
	read := func() ([]byte, time.Time) {
		data, err := os.ReadFile(idx)
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(idx)
		if err != nil {
			t.Fatal(err)
		}
		return data, fi.ModTime()
	}
	data0, mtime0 := read()
	// The out-of-process form too: flag parsing and the real binary.
	if _, stderr, code := runProc(t, root, "--read-only", "lookup", "k"); code != 0 {
		t.Fatalf("--read-only lookup: exit %d: %s", code, stderr)
	}
	cliOK(t, root, "--read-only", "lookup", "k", "--json")
	cliOK(t, root, "--read-only", "run", "k", "--", "true")
	cliCode(t, root, exitNotFound, "--read-only", "lookup", "nope")
	data1, mtime1 := read()
	if !bytes.Equal(data0, data1) || !mtime0.Equal(mtime1) {
		t.Fatalf("--read-only lookups changed index.db (mtime %v -> %v)", mtime0, mtime1)
	}
	if cliExists(filepath.Join(root, ".stats")) {
		t.Error("--read-only lookups created the counters")
	}

	img := cliWrite(t, t.TempDir(), "bzImage", "new image")
	_, stderr := cliCode(t, root, exitError, "--read-only", "store", "new", "--image", img)
	if !strings.Contains(stderr, `store "new"`) || !strings.Contains(stderr, "read-only") {
		t.Errorf("--read-only store error does not say why:\n%s", stderr)
	}
	_, stderr = cliCode(t, root, exitError, "--read-only", "rm", "k")
	if !strings.Contains(stderr, "read-only") {
		t.Errorf("--read-only rm error does not say why:\n%s", stderr)
	}
	if cliExists(filepath.Join(root, ".locks", "new.lock")) {
		t.Error("--read-only store created a lock file")
	}
	if data2, _ := read(); !bytes.Equal(data0, data2) {
		t.Fatal("--read-only store or rm changed index.db")
	}

	// The control: without --read-only the same lookup records last_used.
	cliOK(t, root, "lookup", "k")
	if data3, _ := read(); bytes.Equal(data0, data3) {
		t.Error("a normal first lookup did not write last_used; the read-only check above proves nothing")
	}
}
