package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kcache/kcache/internal/ktstrfixture"
	"github.com/kcache/kcache/internal/legacy"
)

func cliMigFixture(t *testing.T) *ktstrfixture.Fixture {
	t.Helper()
	f, err := ktstrfixture.Build(t.TempDir(), t.TempDir(), filepath.Join("..", "..", "testdata"))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// cliListState is `kcache list --json` without what differs between two
// roots or two runs: times and blob paths.
func cliListState(t *testing.T, root string) []map[string]any {
	t.Helper()
	out, stderr, code := runIn(t, root, "list", "--json")
	if code != 0 {
		t.Fatalf("list --json: exit %d: %s", code, stderr)
	}
	var l struct {
		Entries []map[string]any `json:"entries"`
	}
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatal(err)
	}
	for _, e := range l.Entries {
		for _, k := range []string{"stored_at", "last_used", "image_path", "vmlinux_path"} {
			delete(e, k)
		}
	}
	return l.Entries
}

func cliListCount(t *testing.T, root string) int {
	t.Helper()
	out, _, code := runIn(t, root, "list", "--json")
	if code != 0 {
		return 0 // no index yet, or busy for a moment
	}
	var l struct {
		Entries []json.RawMessage `json:"entries"`
	}
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatal(err)
	}
	return len(l.Entries)
}

// migrate --json reports the documented fields; the text form summarises;
// a second run skips everything; --dry-run creates nothing.
func TestMigrateCLIReport(t *testing.T) {
	f := cliMigFixture(t)
	dry := filepath.Join(t.TempDir(), "never")
	out, stderr, code := runIn(t, dry, "migrate", "--from", f.Root, "--dry-run", "--json")
	if code != 0 {
		t.Fatalf("dry run: exit %d: %s", code, stderr)
	}
	if _, err := os.Stat(dry); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("--dry-run created the root (%v)", err)
	}
	if !strings.Contains(out, `"dry_run": true`) {
		t.Fatalf("dry run JSON: %s", out)
	}

	root := t.TempDir()
	out, stderr, code = runIn(t, root, "migrate", "--from", f.Root, "--json", "--lock-timeout", "1s")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var r map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"from", "imported", "skipped_existing", "corrupt", "busy", "removed_from_source", "source_dirs_kept", "bytes_in", "bytes_stored", "error"} {
		if _, ok := r[k]; !ok {
			t.Errorf("JSON report has no %q: %s", k, out)
		}
	}
	var imported []struct {
		Key         string `json:"key"`
		BytesIn     int64  `json:"bytes_in"`
		BytesStored int64  `json:"bytes_stored"`
	}
	var corrupt []struct {
		Key       string `json:"key"`
		ErrorKind string `json:"error_kind"`
		Reason    string `json:"reason"`
	}
	if err := errors.Join(json.Unmarshal(r["imported"], &imported), json.Unmarshal(r["corrupt"], &corrupt)); err != nil {
		t.Fatal(err)
	}
	if len(imported) != len(f.Valid) || len(corrupt) != len(f.Corrupt) {
		t.Fatalf("imported %d corrupt %d; want %d, %d", len(imported), len(corrupt), len(f.Valid), len(f.Corrupt))
	}
	for _, c := range corrupt {
		if f.Corrupt[c.Key] != c.ErrorKind || c.Reason == "" {
			t.Errorf("corrupt %+v; want kind %s", c, f.Corrupt[c.Key])
		}
	}
	if n := cliListCount(t, root); n != len(f.Valid) {
		t.Fatalf("list shows %d entries; want %d", n, len(f.Valid))
	}

	out, stderr, code = runIn(t, root, "migrate", "--from", f.Root)
	want := fmt.Sprintf("imported 0 (0 B read, 0 B stored), %d already present, %d corrupt, 0 busy", len(f.Valid), len(f.Corrupt))
	if code != 0 || !strings.Contains(out, want) || !cliHasRow(out, "corrupt", "corrupt-truncated", "truncated", "metadata.json", "truncated:") {
		t.Fatalf("second run: exit %d\n%s%s\nwant %q", code, out, stderr, want)
	}

	// The source comes from ktstr's cascade without --from.
	t.Setenv("KTSTR_CACHE_DIR", f.Root)
	out, stderr, code = runIn(t, root, "migrate", "--dry-run", "--json")
	if code != 0 || !strings.Contains(out, fmt.Sprintf(`"from": %q`, f.Root)) {
		t.Fatalf("from KTSTR_CACHE_DIR: exit %d\n%s%s", code, out, stderr)
	}
	// An unresolvable source is an error (exit 1).
	t.Setenv("KTSTR_CACHE_DIR", "")
	t.Setenv("XDG_CACHE_HOME", "")
	t.Setenv("HOME", "relative")
	if _, stderr, code = runIn(t, root, "migrate"); code != 1 || !strings.Contains(stderr, "HOME") {
		t.Fatalf("unresolvable source: exit %d: %s", code, stderr)
	}
}

// A migrate killed by SIGKILL halfway and run again ends in the same state
// as an uninterrupted migrate into another root.
func TestMigrateCLIKilledHalfwayThenRerun(t *testing.T) {
	f := cliMigFixture(t)
	// Big entries, so that the kill lands between two of them.
	big := make([]byte, 6<<20)
	for i := range 12 {
		key := fmt.Sprintf("6.15.%d-tarball-x86_64", i)
		s := sha256.Sum256([]byte(key))
		for j := 0; j < len(big); j += len(s) {
			copy(big[j:], s[:])
		}
		if _, err := f.Put(key, big, "sample", legacy.Metadata{Source: legacy.Source{Type: "tarball"}, Arch: "x86_64", ImageName: "bzImage",
			BuiltAt: fmt.Sprintf("2026-05-%02dT00:00:00Z", i+1)}); err != nil {
			t.Fatal(err)
		}
	}
	total := len(f.Valid)

	var root string
	for attempt := 1; attempt <= 5 && root == ""; attempt++ {
		r := t.TempDir()
		cmd := kcacheCmd(t, r, "migrate", "--from", f.Root)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		n, deadline := 0, time.Now().Add(60*time.Second)
		for n == 0 && time.Now().Before(deadline) {
			select {
			case <-done:
				n = -1
			default:
				n = cliListCount(t, r)
			}
		}
		if n < 0 {
			t.Logf("attempt %d: migrate finished before it could be killed", attempt)
			continue
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-done
		if n = cliListCount(t, r); n >= total {
			t.Logf("attempt %d: migrate had stored everything (%d) when killed", attempt, n)
			continue
		}
		t.Logf("attempt %d: killed with %d of %d entries in", attempt, n, total)
		root = r
	}
	if root == "" {
		t.Fatal("never killed migrate halfway")
	}
	if _, stderr, code := runProc(t, root, "migrate", "--from", f.Root); code != 0 {
		t.Fatalf("re-run: exit %d: %s", code, stderr)
	}
	other := t.TempDir()
	if _, stderr, code := runProc(t, other, "migrate", "--from", f.Root); code != 0 {
		t.Fatalf("uninterrupted run: exit %d: %s", code, stderr)
	}
	got, want := cliListState(t, root), cliListState(t, other)
	if len(want) != total || !reflect.DeepEqual(got, want) {
		gj, _ := json.MarshalIndent(got, "", " ")
		wj, _ := json.MarshalIndent(want, "", " ")
		t.Fatalf("after kill and re-run:\n%s\nuninterrupted:\n%s", gj, wj)
	}
	// The killed run's staging directory was swept by the re-run.
	ents, _ := os.ReadDir(filepath.Join(root, ".tmp"))
	for _, e := range ents {
		if e.IsDir() {
			t.Errorf("staging directory left behind: %s", e.Name())
		}
	}
}

// cliHasRow reports whether a line of out has exactly these leading fields.
func cliHasRow(out string, fields ...string) bool {
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= len(fields) && reflect.DeepEqual(f[:len(fields)], fields) {
			return true
		}
	}
	return false
}
