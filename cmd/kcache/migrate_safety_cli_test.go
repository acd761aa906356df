package main

// Issue 12 items 3 and 9 through the CLI: what --remove-source keeps is
// reported, and a migrate stopped by an error prints what it did (text and
// --json, with the error in the JSON), then the error on stderr, exit 1.

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/kcache/kcache/internal/tmpfstest"

	"github.com/kcache/kcache/internal/legacy"
)

// cliBigSource writes a ktstr cache (ktstr's layout, via internal/legacy)
// of n entries with 1.5 MiB random images and no vmlinux: on a 4 MiB
// kcache two fit and the third fails with ENOSPC.
func cliBigSource(t *testing.T, n int) (root string, keys []string) {
	t.Helper()
	root, work := t.TempDir(), t.TempDir()
	for i := range n {
		key := fmt.Sprintf("6.17.%d-tarball-x86_64", i)
		data := make([]byte, 3<<19)
		if _, err := rand.Read(data); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(work, key)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		v := fmt.Sprintf("6.17.%d", i)
		if _, err := legacy.Store(root, key, p, "", legacy.Metadata{Version: &v, Source: legacy.Source{Type: "tarball"},
			Arch: "x86_64", ImageName: "bzImage", BuiltAt: fmt.Sprintf("2026-07-%02dT00:00:00Z", i+1)}); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, key)
	}
	return root, keys
}

// migrate --remove-source --json that runs out of space at an entry
// prints the report of the entries before it (imported and removed from
// the source) with the error in "error", the error on stderr, and exits
// 1; the text form lists the same entries. A run that succeeds has
// "error": null.
func TestSafetyMigrateCLIFailureKeepsReport(t *testing.T) {
	from, keys := cliBigSource(t, 5)
	root := filepath.Join(tmpfstest.Mount(t, "4m"), "cache")
	out, stderr, code := runProc(t, root, "migrate", "--from", from, "--remove-source", "--json")
	if code != 1 || !strings.Contains(stderr, "no space left on device") {
		t.Fatalf("exit %d (want 1), stderr %q (want ENOSPC)", code, stderr)
	}
	var r struct {
		Imported []struct {
			Key string `json:"key"`
		} `json:"imported"`
		RemovedFromSource []string        `json:"removed_from_source"`
		SourceDirsKept    json.RawMessage `json:"source_dirs_kept"`
		Error             *string         `json:"error"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("stdout is not the JSON report (%v):\n%s", err, out)
	}
	var done []string
	for _, e := range r.Imported {
		done = append(done, e.Key)
	}
	if len(done) == 0 || len(done) >= len(keys) || !reflect.DeepEqual(done, keys[:len(done)]) {
		t.Fatalf("imported %v; want a strict prefix of %v\n%s", done, keys, out)
	}
	if !reflect.DeepEqual(r.RemovedFromSource, done) || string(r.SourceDirsKept) != "[]" {
		t.Fatalf("removed_from_source %v, source_dirs_kept %s; want %v, []", r.RemovedFromSource, r.SourceDirsKept, done)
	}
	if r.Error == nil || !strings.Contains(*r.Error, "no space left on device") || !strings.Contains(stderr, *r.Error) {
		t.Fatalf("JSON error %v; stderr %q", r.Error, stderr)
	}
	for _, k := range done {
		if _, err := os.Lstat(filepath.Join(from, k)); err == nil {
			t.Errorf("%s: reported removed, still in the source", k)
		}
	}
	for _, k := range keys[len(done):] {
		if _, err := os.Stat(filepath.Join(from, k, "bzImage")); err != nil {
			t.Errorf("%s: not imported, but gone from the source: %v", k, err)
		}
	}

	// The text form, into another small filesystem.
	from, keys = cliBigSource(t, 5)
	root = filepath.Join(tmpfstest.Mount(t, "4m"), "cache")
	out, stderr, code = runProc(t, root, "migrate", "--from", from)
	if code != 1 || !strings.Contains(stderr, "no space left on device") {
		t.Fatalf("text form: exit %d, stderr %q", code, stderr)
	}
	n := 0
	for _, k := range keys {
		if cliHasRow(out, "imported", k) {
			n++
		}
	}
	if n == 0 || n >= len(keys) || !strings.Contains(out, fmt.Sprintf("imported %d (", n)) {
		t.Fatalf("text form lists %d imported entries:\n%s", n, out)
	}

	// Success: "error" is present and null.
	out, stderr, code = runIn(t, t.TempDir(), "migrate", "--from", from, "--json")
	var ok map[string]json.RawMessage
	if code != 0 || json.Unmarshal([]byte(out), &ok) != nil || string(ok["error"]) != "null" {
		t.Fatalf("successful run: exit %d, error field %s: %s", code, ok["error"], stderr)
	}
}

// The text and JSON reports of --remove-source say which directories were
// kept and what is in them; those files are untouched.
func TestSafetyMigrateCLIRemoveSourceReportsKeptDirs(t *testing.T) {
	from, keys := cliBigSource(t, 2)
	notes := filepath.Join(from, keys[0], "NOTES")
	if err := os.WriteFile(notes, []byte("keep me\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, stderr, code := runIn(t, t.TempDir(), "migrate", "--from", from, "--remove-source")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(out, "2 removed from the source (1 with their directory kept)") ||
		!cliHasRow(out, "removed", keys[0], "source", "directory", "kept:", "contains", "NOTES") || !cliHasRow(out, "removed", keys[1]) {
		t.Fatalf("report:\n%s", out)
	}
	if data, err := os.ReadFile(notes); err != nil || string(data) != "keep me\n" {
		t.Fatalf("NOTES: %q, %v", data, err)
	}
	if ents, _ := os.ReadDir(filepath.Join(from, keys[0])); len(ents) != 1 {
		t.Fatalf("%s holds %d names; want only NOTES", keys[0], len(ents))
	}
	if _, err := os.Lstat(filepath.Join(from, keys[1])); err == nil {
		t.Fatalf("%s: a clean entry directory was kept", keys[1])
	}

	// --json: source_dirs_kept names the key and the file.
	from, keys = cliBigSource(t, 1)
	if err := os.WriteFile(filepath.Join(from, keys[0], "vmlinux.debug"), []byte("dwarf"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, stderr, code = runIn(t, t.TempDir(), "migrate", "--from", from, "--remove-source", "--json")
	var r struct {
		SourceDirsKept []struct{ Key, Reason string } `json:"source_dirs_kept"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil || len(r.SourceDirsKept) != 1 ||
		r.SourceDirsKept[0].Key != keys[0] || !strings.Contains(r.SourceDirsKept[0].Reason, "vmlinux.debug") {
		t.Fatalf("exit %d: %s%s", code, out, stderr)
	}
}
