package main

// Tests that pin the CLI's observable behaviour: what goes to stdout and
// stderr, exit codes, the JSON schema and the list order. They run the CLI
// in-process (runIn) against real caches in t.TempDir(); corrupt entries are
// made for real, by damaging blob files or writing records straight into the
// bbolt file.
//
// Golden files live in testdata/; regenerate them with
//
//	go test ./cmd/kcache -run TestCLI -update

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kcache/kcache"
	"github.com/kcache/kcache/index"
	"github.com/vmihailenco/msgpack/v5"
	bolt "go.etcd.io/bbolt"
)

var updateGolden = flag.Bool("update", false, "rewrite cmd/kcache/testdata/*.golden from the current output")

const (
	cliSampleImage   = "../../testdata/sample/bzImage"
	cliSampleVmlinux = "../../testdata/sample/vmlinux"
)

// The documented key order of a usable entry in list, show, lookup and store JSON.
var cliEntryKeys = []string{
	"key", "version", "source", "arch", "built_at", "kconfig_hash", "kconfig_status",
	"config_hash", "image_name", "image_path", "image_sha256", "image_size", "has_vmlinux",
	"vmlinux_stripped", "vmlinux_path", "vmlinux_sha256", "vmlinux_size",
	"vmlinux_original_size", "build_id", "config_hz", "source_vmlinux_size",
	"source_vmlinux_mtime_secs", "stored_at", "last_used", "pinned", "pin_reason",
}

var cliCorruptKeys = []string{"key", "error", "error_kind"}

// ---- helpers ----

// cliNewRoot returns a cache root that does not exist yet.
func cliNewRoot(t *testing.T) string {
	t.Helper()
	return filepath.Join(t.TempDir(), "cache")
}

// cliOK runs kcache in-process and fails the test unless it exits 0.
func cliOK(t *testing.T, root string, args ...string) (stdout, stderr string) {
	t.Helper()
	stdout, stderr, code := runIn(t, root, args...)
	if code != 0 {
		t.Fatalf("kcache %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, stdout, stderr)
	}
	return stdout, stderr
}

// cliCode runs kcache in-process and fails the test unless it exits with want.
func cliCode(t *testing.T, root string, want int, args ...string) (stdout, stderr string) {
	t.Helper()
	stdout, stderr, code := runIn(t, root, args...)
	if code != want {
		t.Fatalf("kcache %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, want, stdout, stderr)
	}
	return stdout, stderr
}

// cliWrite writes content to dir/name and returns the path.
func cliWrite(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// cliStore stores key with its own image (content "image of KEY") and the
// given extra flags, with a fixed arch so output does not depend on the host.
// It returns the image's blob path.
func cliStore(t *testing.T, root, key string, extra ...string) string {
	t.Helper()
	img := cliWrite(t, t.TempDir(), "bzImage", "image of "+key)
	cliOK(t, root, append([]string{"store", key, "--image", img, "--arch", "x86_64"}, extra...)...)
	return cliBlobPath(root, cliSHA256(t, img))
}

func cliSHA256(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

func cliBlobPath(root, digest string) string {
	return filepath.Join(root, "blobs", "sha256", digest[:2], digest)
}

func cliExists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// cliPutRaw writes value under key in the index's entries bucket, bypassing
// kcache, to make records that do not decode.
func cliPutRaw(t *testing.T, root, key string, value []byte) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(root, "index.db"), 0o644, &bolt.Options{Timeout: 5 * time.Second, FreelistType: bolt.FreelistMapType})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("entries"))
		if b == nil {
			return fmt.Errorf("no entries bucket")
		}
		return b.Put([]byte(key), value)
	}); err != nil {
		t.Fatal(err)
	}
}

// cliEntry decodes `--json` output of one entry, usable or corrupt. It is a
// reader, not the schema: json.Unmarshal ignores keys it lacks, so the
// schema is pinned by cliEntryKeys and cliCorruptKeys, compared with cliKeys.
type cliEntry struct {
	Key                 string         `json:"key"`
	Version             *string        `json:"version"`
	Source              map[string]any `json:"source"`
	Arch                string         `json:"arch"`
	BuiltAt             string         `json:"built_at"`
	KconfigHash         *string        `json:"kconfig_hash"`
	KconfigStatus       *string        `json:"kconfig_status"`
	ConfigHash          *string        `json:"config_hash"`
	ImageName           string         `json:"image_name"`
	ImagePath           string         `json:"image_path"`
	ImageSHA256         string         `json:"image_sha256"`
	ImageSize           int64          `json:"image_size"`
	HasVmlinux          bool           `json:"has_vmlinux"`
	VmlinuxStripped     bool           `json:"vmlinux_stripped"`
	VmlinuxPath         *string        `json:"vmlinux_path"`
	VmlinuxSHA256       *string        `json:"vmlinux_sha256"`
	VmlinuxSize         *int64         `json:"vmlinux_size"`
	VmlinuxOriginalSize *int64         `json:"vmlinux_original_size"`
	SourceVmlinuxSize   *uint64        `json:"source_vmlinux_size"`
	SourceVmlinuxMtime  *int64         `json:"source_vmlinux_mtime_secs"`
	StoredAt            string         `json:"stored_at"`
	LastUsed            *string        `json:"last_used"`
	Pinned              bool           `json:"pinned"`
	Error               string         `json:"error"`
	ErrorKind           string         `json:"error_kind"`
}

type cliListing struct {
	Root    string            `json:"root"`
	Current *string           `json:"current_kconfig_hash"`
	Entries []json.RawMessage `json:"entries"`
}

// cliOneJSON decodes stdout that must be exactly one JSON value.
func cliOneJSON(t *testing.T, stdout string, v any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(stdout))
	if err := dec.Decode(v); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, stdout)
	}
	if _, err := dec.Token(); err != io.EOF {
		t.Fatalf("stdout has more than one JSON value (next: %v)\n%s", err, stdout)
	}
}

func cliList(t *testing.T, root string, args ...string) cliListing {
	t.Helper()
	out, _ := cliOK(t, root, append([]string{"list", "--json"}, args...)...)
	var l cliListing
	cliOneJSON(t, out, &l)
	if l.Entries == nil {
		t.Fatalf("entries is not an array:\n%s", out)
	}
	return l
}

func cliDecode(t *testing.T, raw []byte) cliEntry {
	t.Helper()
	var e cliEntry
	if err := json.Unmarshal(raw, &e); err != nil {
		t.Fatalf("decode entry: %v\n%s", err, raw)
	}
	return e
}

// cliKeys returns the keys of a JSON object in the order they appear.
func cliKeys(t *testing.T, raw []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not a JSON object (%v, %v): %s", tok, err, raw)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, tok.(string))
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

// cliField returns one top-level member of a JSON object, compacted.
func cliField(t *testing.T, raw []byte, key string) json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	v, ok := m[key]
	if !ok {
		t.Fatalf("no %q in %s", key, raw)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, v); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func cliListKeys(t *testing.T, l cliListing) []string {
	t.Helper()
	var keys []string
	for _, raw := range l.Entries {
		keys = append(keys, cliDecode(t, raw).Key)
	}
	return keys
}

func cliEntryOf(t *testing.T, l cliListing, key string) (cliEntry, json.RawMessage) {
	t.Helper()
	for _, raw := range l.Entries {
		if e := cliDecode(t, raw); e.Key == key {
			return e, raw
		}
	}
	t.Fatalf("no entry %q in the listing", key)
	return cliEntry{}, nil
}

var (
	cliBlobRe     = regexp.MustCompile(`/[0-9a-f]{2}/[0-9a-f]{64}`)
	cliSHARe      = regexp.MustCompile(`[0-9a-f]{64}`)
	cliStoredAtRe = regexp.MustCompile(`"(stored_at|last_used)": "[^"]*"`)
)

// cliNormalize makes output independent of the temp dirs and blob digests.
func cliNormalize(s string, repl ...string) string {
	s = strings.NewReplacer(repl...).Replace(s)
	s = cliBlobRe.ReplaceAllString(s, "/<xx>/<sha256>")
	s = cliSHARe.ReplaceAllString(s, "<sha256>")
	return cliStoredAtRe.ReplaceAllString(s, `"$1": "<time>"`)
}

// cliGolden compares got with testdata/NAME, or rewrites it under -update.
func cliGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *updateGolden {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (run with -update to accept):\n--- got ---\n%s--- want ---\n%s", path, got, want)
	}
}

func cliLines(s string) []string {
	s = strings.TrimSuffix(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// cliMakeCorrupt fills root with one entry of every corruption kind and
// returns their keys by kind. The stored ones get the newest built_at, so
// only their corruption puts them last.
func cliMakeCorrupt(t *testing.T, root string) map[string]string {
	t.Helper()
	dir := t.TempDir()
	keys := map[string]string{
		"image_missing":         "c-img-gone",
		"vmlinux_missing":       "c-vml-gone",
		"image_size_mismatch":   "c-img-short",
		"vmlinux_size_mismatch": "c-vml-long",
		"malformed":             "b-garbage",
		"schema_drift":          "d-drift",
	}
	for kind, key := range keys {
		if kind == "malformed" || kind == "schema_drift" {
			continue
		}
		img := cliWrite(t, dir, key+".img", "image of "+key)
		vml := cliWrite(t, dir, key+".vml", "not an ELF: vmlinux of "+key)
		cliOK(t, root, "store", key, "--image", img, "--vmlinux", vml, "--arch", "x86_64", "--built-at", "2030-01-01T00:00:00Z")
		var victim string
		if strings.HasPrefix(kind, "image") {
			victim = cliBlobPath(root, cliSHA256(t, img))
		} else {
			victim = cliBlobPath(root, cliSHA256(t, vml))
		}
		var err error
		switch {
		case strings.HasSuffix(kind, "_missing"):
			err = os.Remove(victim)
		case kind == "image_size_mismatch":
			if err = os.Chmod(victim, 0o644); err == nil {
				err = os.Truncate(victim, 3)
			}
		default:
			if err = os.Chmod(victim, 0o644); err == nil {
				var f *os.File
				if f, err = os.OpenFile(victim, os.O_WRONLY|os.O_APPEND, 0); err == nil {
					_, err = f.WriteString("extra bytes")
					f.Close()
				}
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	cliPutRaw(t, root, keys["malformed"], []byte("\xc1 this is not msgpack"))
	drift, err := msgpack.Marshal(map[string]any{"key": "x"})
	if err != nil {
		t.Fatal(err)
	}
	cliPutRaw(t, root, keys["schema_drift"], drift)
	return keys
}

// ---- 1. list ordering ----

func TestCLIListOrder(t *testing.T) {
	root := cliNewRoot(t)
	// Stored in an order unrelated to the expected one.
	cliStore(t, root, "z-tie", "--built-at", "2024-06-01T12:00:00Z")
	cliStore(t, root, "oldest", "--built-at", "2001-01-01T00:00:00Z")
	cliStore(t, root, "m-tie", "--built-at", "2024-06-01T12:00:00Z")
	cliStore(t, root, "newest", "--built-at", "2025-01-01T00:00:00Z")
	cliStore(t, root, "a-tie", "--built-at", "2024-06-01T14:00:00+02:00") // the same instant
	cliStore(t, root, "mid", "--built-at", "2024-06-01T11:59:59Z")
	kinds := cliMakeCorrupt(t, root)

	want := []string{"newest", "a-tie", "m-tie", "z-tie", "mid", "oldest",
		"b-garbage", "c-img-gone", "c-img-short", "c-vml-gone", "c-vml-long", "d-drift"}
	l := cliList(t, root)
	if got := cliListKeys(t, l); !reflect.DeepEqual(got, want) {
		t.Fatalf("list --json order:\n got %v\nwant %v", got, want)
	}
	if e, _ := cliEntryOf(t, l, "a-tie"); e.BuiltAt != "2024-06-01T12:00:00Z" {
		t.Errorf("a-tie built_at = %q, want it normalised to UTC 2024-06-01T12:00:00Z", e.BuiltAt)
	}
	for kind, key := range kinds {
		e, raw := cliEntryOf(t, l, key)
		if e.ErrorKind != kind {
			t.Errorf("%s: error_kind = %q, want %q (error %q)", key, e.ErrorKind, kind, e.Error)
		}
		if e.Error == "" {
			t.Errorf("%s: empty error", key)
		}
		if got := cliKeys(t, raw); !reflect.DeepEqual(got, cliCorruptKeys) {
			t.Errorf("%s: corrupt entry keys %v, want %v", key, got, cliCorruptKeys)
		}
	}

	// The text listing has the same order; rows go to stdout only.
	out, errOut := cliOK(t, root, "list")
	var got []string
	for _, line := range cliLines(out)[1:] {
		got = append(got, strings.Fields(line)[0])
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("text list order:\n got %v\nwant %v\n%s", got, want, out)
	}
	for kind, key := range kinds {
		if !strings.Contains(out, key+"  (corrupt "+kind+": ") {
			t.Errorf("no corrupt row for %s (%s) in:\n%s", key, kind, out)
		}
		if strings.Contains(errOut, key) {
			t.Errorf("corrupt key %s on stderr:\n%s", key, errOut)
		}
	}
	if !strings.Contains(errOut, "6 corrupt entries.") {
		t.Errorf("stderr lacks the corrupt footer:\n%s", errOut)
	}
	if lsOut, _ := cliOK(t, root, "ls"); lsOut != out {
		t.Errorf("ls differs from list:\n%s\nvs\n%s", lsOut, out)
	}

	// A corrupt entry is unusable: lookup and show fail with exit 1 and say why;
	// with --json both print the corrupt object.
	for kind, key := range kinds {
		stdout, stderr := cliCode(t, root, 1, "lookup", key)
		if stdout != "" || !strings.Contains(stderr, kind) || !strings.Contains(stderr, `"`+key+`"`) || !strings.Contains(stderr, "kcache rm "+key) {
			t.Errorf("lookup %s: stdout %q stderr %q; want the key, %s and the remedy", key, stdout, stderr, kind)
		}
		for _, verb := range []string{"show", "lookup"} {
			stdout, _ = cliCode(t, root, 1, verb, "--json", key)
			var ce cliEntry
			cliOneJSON(t, stdout, &ce)
			if ce.Key != key || ce.ErrorKind != kind || !reflect.DeepEqual(cliKeys(t, []byte(stdout)), cliCorruptKeys) {
				t.Errorf("%s --json %s = %s", verb, key, stdout)
			}
		}
	}

	// rm removes corrupt entries too, undecodable records included.
	cliOK(t, root, "rm", "b-garbage", "d-drift", "c-img-gone")
	want = []string{"newest", "a-tie", "m-tie", "z-tie", "mid", "oldest", "c-img-short", "c-vml-gone", "c-vml-long"}
	if got := cliListKeys(t, cliList(t, root)); !reflect.DeepEqual(got, want) {
		t.Errorf("after rm: %v, want %v", got, want)
	}
	_, errOut = cliOK(t, root, "list")
	if !strings.Contains(errOut, "3 corrupt entries.") {
		t.Errorf("footer after rm:\n%s", errOut)
	}
}

// ---- 2. text list ----

func TestCLIListTextGolden(t *testing.T) {
	root := cliNewRoot(t)
	dir := t.TempDir()
	tree := filepath.Join(dir, "linux")
	if err := os.Mkdir(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	vml := cliWrite(t, dir, "vmlinux", "not an ELF, so stored unstripped")
	cliOK(t, root, "kconfig", "set", "--hash", "11111111")
	cliOK(t, root, "store", "e-match", "--image", cliSampleImage, "--arch", "x86_64", "--version", "6.14.2",
		"--built-at", "2025-03-01T00:00:00Z", "--kconfig-hash", "11111111")
	cliOK(t, root, "pin", "e-match")
	cliStore(t, root, "e-stale", "--vmlinux", vml, "--source", "git", "--ref", "v6.9", "--git-hash", "abcdef1",
		"--built-at", "2024-06-01T12:00:00Z", "--kconfig-hash", "22222222", "--image-name", "Image")
	cliStore(t, root, "e-untracked", "--source-tree", tree, "--built-at", "2024-06-01T12:00:00Z")
	if err := os.Remove(cliStore(t, root, "e-lost", "--built-at", "2026-01-01T00:00:00Z")); err != nil {
		t.Fatal(err)
	}
	cliPutRaw(t, root, "e-garbage", []byte("\xc1 this is not msgpack"))

	stdout, stderr := cliOK(t, root, "list")
	cliGolden(t, "list_tags.stdout.golden", cliNormalize(stdout, root, "$ROOT"))
	cliGolden(t, "list_tags.stderr.golden", cliNormalize(stderr, root, "$ROOT"))
	if !strings.HasPrefix(stderr, "cache: "+root+"\n") {
		t.Errorf("stderr does not start with the cache line:\n%s", stderr)
	}
	if strings.Contains(stderr, "e-") {
		t.Errorf("a row on stderr:\n%s", stderr)
	}
}

// Each tag's legend goes to stderr when, and only when, a row carries the tag.
func TestCLIListLegends(t *testing.T) {
	legend := map[string]string{
		"(stale kconfig)":     "warning: entries marked (stale kconfig) were built with a different kconfig fragment than the current one (hash 11111111); rebuild them and store them again.",
		"(untracked kconfig)": "(untracked kconfig) marks entries stored without a kconfig hash, so kcache cannot tell whether they match the current kconfig (hash 11111111); store them again with --kconfig or --kconfig-hash.",
		"(unstripped)":        "(unstripped) marks entries whose vmlinux could not be stripped when it was stored and is kept whole; they take more space and every lookup warns. `kcache strip VMLINUX` (without -o) shows why.",
		"(pinned)":            "(pinned) marks entries that clean and gc never remove; `kcache unpin KEY` releases one.",
	}
	for _, tc := range []struct {
		name     string
		store    []string // extra store flags
		pin      bool
		listArgs []string
		tag      string // "" for none
	}{
		{name: "matching kconfig", store: []string{"--kconfig-hash", "11111111"}, listArgs: []string{"--kconfig-hash", "11111111"}},
		{name: "no current kconfig", store: []string{"--kconfig-hash", "22222222"}},
		{name: "no current kconfig, untracked entry"},
		{name: "stale", store: []string{"--kconfig-hash", "22222222"}, listArgs: []string{"--kconfig-hash", "11111111"}, tag: "(stale kconfig)"},
		{name: "untracked", listArgs: []string{"--kconfig-hash", "11111111"}, tag: "(untracked kconfig)"},
		{name: "unstripped", store: []string{"--vmlinux", "VMLINUX"}, tag: "(unstripped)"},
		{name: "pinned", pin: true, tag: "(pinned)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := cliNewRoot(t)
			vml := cliWrite(t, t.TempDir(), "vmlinux", "not an ELF")
			flags := append([]string{"--built-at", "2025-01-01T00:00:00Z"}, tc.store...)
			for i, f := range flags {
				if f == "VMLINUX" {
					flags[i] = vml
				}
			}
			cliStore(t, root, "k", flags...)
			if tc.pin {
				cliOK(t, root, "pin", "k")
			}
			stdout, stderr := cliOK(t, root, append([]string{"list"}, tc.listArgs...)...)
			rows := cliLines(stdout)
			if len(rows) != 2 || !strings.HasPrefix(rows[0], "KEY ") || !strings.HasPrefix(rows[1], "k ") {
				t.Fatalf("stdout is not a header and one row:\n%s", stdout)
			}
			wantErr := "cache: " + root + "\n"
			if tc.tag != "" {
				wantErr += legend[tc.tag] + "\n"
				if !strings.HasSuffix(rows[1], "  "+tc.tag) {
					t.Errorf("row %q does not end with the tag %s", rows[1], tc.tag)
				}
			} else if strings.Contains(rows[1], "(") {
				t.Errorf("row %q has a tag", rows[1])
			}
			if stderr != wantErr {
				t.Errorf("stderr:\n%s\nwant:\n%s", stderr, wantErr)
			}
		})
	}
}

func TestCLIListEmpty(t *testing.T) {
	const empty = "no cached kernels. Store one with `kcache store KEY --image PATH [--vmlinux PATH]`.\n"
	check := func(t *testing.T, root string) {
		t.Helper()
		stdout, stderr := cliOK(t, root, "list")
		if stdout != empty {
			t.Errorf("stdout = %q, want %q", stdout, empty)
		}
		if stderr != "cache: "+root+"\n" {
			t.Errorf("stderr = %q", stderr)
		}
		stdout, _ = cliOK(t, root, "list", "--json")
		if got := cliKeys(t, []byte(stdout)); !reflect.DeepEqual(got, []string{"root", "current_kconfig_hash", "entries"}) {
			t.Errorf("list --json keys %v", got)
		}
		if !strings.Contains(stdout, `"entries": []`) {
			t.Errorf("entries is not an empty array:\n%s", stdout)
		}
	}
	t.Run("missing root", func(t *testing.T) {
		root := cliNewRoot(t)
		check(t, root)
		if cliExists(root) {
			t.Errorf("list created the root %s", root)
		}
	})
	t.Run("root without index", func(t *testing.T) {
		root := t.TempDir()
		check(t, root)
		if cliExists(filepath.Join(root, "index.db")) {
			t.Error("list created index.db")
		}
	})
	t.Run("index without entries", func(t *testing.T) {
		root := cliNewRoot(t)
		cliStore(t, root, "k")
		cliOK(t, root, "rm", "k")
		check(t, root)
	})
}

// ---- 3. JSON schema ----

func TestCLIJSONSchema(t *testing.T) {
	root := cliNewRoot(t)
	dir := t.TempDir()
	tree := filepath.Join(dir, "linux")
	if err := os.Mkdir(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	cliOK(t, root, "store", "tar", "--image", cliSampleImage, "--vmlinux", cliSampleVmlinux, "--arch", "x86_64",
		"--version", "6.14.2", "--built-at", "2025-01-03T00:00:00Z", "--kconfig-hash", "11111111")
	cliStore(t, root, "git", "--ref", "v6.9", "--built-at", "2025-01-02T00:00:00Z", "--kconfig-hash", "22222222")
	cliStore(t, root, "local", "--source-tree", tree, "--built-at", "2025-01-01T00:00:00Z")
	cliPutRaw(t, root, "garbage", []byte("\xc1"))
	cliOK(t, root, "pin", "git")
	cliOK(t, root, "kconfig", "set", "--hash", "11111111")
	for _, key := range []string{"tar", "git", "local"} {
		cliOK(t, root, "lookup", key) // sets last_used, so later outputs agree
	}

	stdout, _ := cliOK(t, root, "list", "--json")
	if got := cliKeys(t, []byte(stdout)); !reflect.DeepEqual(got, []string{"root", "current_kconfig_hash", "entries"}) {
		t.Fatalf("list --json top-level keys %v", got)
	}
	var l cliListing
	cliOneJSON(t, stdout, &l)
	if l.Root != root || l.Current == nil || *l.Current != "11111111" {
		t.Errorf("root %q current %v", l.Root, l.Current)
	}
	if got := cliListKeys(t, l); !reflect.DeepEqual(got, []string{"tar", "git", "local", "garbage"}) {
		t.Fatalf("entries %v", got)
	}
	realTree, err := filepath.EvalSymlinks(tree)
	if err != nil {
		t.Fatal(err)
	}
	cliGolden(t, "list.json.golden", cliNormalize(stdout, root, "$ROOT", realTree, "$TREE"))

	wantSource := map[string][]string{
		"tar":   {"type"},
		"git":   {"type", "git_hash", "ref"},
		"local": {"type", "source_tree_path", "git_hash"},
	}
	wantStatus := map[string]string{"tar": "matches", "git": "stale", "local": "untracked"}
	for _, raw := range l.Entries[:3] {
		e := cliDecode(t, raw)
		if got := cliKeys(t, raw); !reflect.DeepEqual(got, cliEntryKeys) {
			t.Errorf("%s: keys\n got %v\nwant %v", e.Key, got, cliEntryKeys)
		}
		src := cliField(t, raw, "source")
		if got := cliKeys(t, src); !reflect.DeepEqual(got, wantSource[e.Key]) {
			t.Errorf("%s: source keys %v, want %v", e.Key, got, wantSource[e.Key])
		}
		if e.KconfigStatus == nil || *e.KconfigStatus != wantStatus[e.Key] {
			t.Errorf("%s: kconfig_status %v, want %s", e.Key, e.KconfigStatus, wantStatus[e.Key])
		}
		if e.ImagePath != cliBlobPath(root, e.ImageSHA256) {
			t.Errorf("%s: image_path %s is not the blob of %s", e.Key, e.ImagePath, e.ImageSHA256)
		}
		if e.LastUsed == nil || e.StoredAt == "" {
			t.Errorf("%s: last_used %v stored_at %q", e.Key, e.LastUsed, e.StoredAt)
		}
		if e.Pinned != (e.Key == "git") {
			t.Errorf("%s: pinned %v", e.Key, e.Pinned)
		}
		// show --json and lookup --json print the same object as the list element.
		for _, cmd := range []string{"show", "lookup"} {
			out, _ := cliOK(t, root, cmd, "--json", e.Key)
			var got, want any
			cliOneJSON(t, out, &got)
			if err := json.Unmarshal(raw, &want); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s --json %s:\n%s\nlist element:\n%s", cmd, e.Key, out, raw)
			}
			if keys := cliKeys(t, []byte(out)); !reflect.DeepEqual(keys, cliEntryKeys) {
				t.Errorf("%s --json %s: keys %v", cmd, e.Key, keys)
			}
		}
	}

	tar := cliDecode(t, l.Entries[0])
	if tar.ImageSHA256 != cliSHA256(t, cliSampleImage) || tar.ImageSize != 65518 || tar.ImageName != "bzImage" {
		t.Errorf("tar image: %+v", tar)
	}
	if !tar.HasVmlinux || tar.VmlinuxPath == nil || tar.VmlinuxSHA256 == nil || tar.VmlinuxSize == nil || tar.VmlinuxOriginalSize == nil {
		t.Fatalf("tar vmlinux fields: %+v", tar)
	}
	if *tar.VmlinuxPath != cliBlobPath(root, *tar.VmlinuxSHA256) || *tar.VmlinuxOriginalSize != 11264 {
		t.Errorf("tar vmlinux: path %s sha %s original size %d", *tar.VmlinuxPath, *tar.VmlinuxSHA256, *tar.VmlinuxOriginalSize)
	}
	if !tar.VmlinuxStripped && *tar.VmlinuxSHA256 != cliSHA256(t, cliSampleVmlinux) {
		t.Errorf("unstripped vmlinux has sha %s, not the input's", *tar.VmlinuxSHA256)
	}
	if tar.Version == nil || *tar.Version != "6.14.2" {
		t.Errorf("version %v", tar.Version)
	}

	// Without a vmlinux every vmlinux field is an explicit null.
	git := l.Entries[1]
	for _, k := range []string{"vmlinux_path", "vmlinux_sha256", "vmlinux_size", "vmlinux_original_size", "build_id", "config_hz", "version", "config_hash"} {
		if v := cliField(t, git, k); string(v) != "null" {
			t.Errorf("git: %s = %s, want null", k, v)
		}
	}
	if v := cliField(t, git, "has_vmlinux"); string(v) != "false" {
		t.Errorf("git: has_vmlinux = %s", v)
	}
	if src := string(cliField(t, git, "source")); src != `{"type":"git","git_hash":null,"ref":"v6.9"}` {
		t.Errorf("git source = %s", src)
	}
	if src := string(cliField(t, l.Entries[2], "source")); src != `{"type":"local","source_tree_path":"`+realTree+`","git_hash":null}` {
		t.Errorf("local source = %s", src)
	}

	// Without a current kconfig hash there is no status to report.
	cliOK(t, root, "kconfig", "clear")
	l = cliList(t, root)
	if l.Current != nil {
		t.Errorf("current_kconfig_hash = %v after clear", *l.Current)
	}
	for _, raw := range l.Entries[:3] {
		if v := cliField(t, raw, "kconfig_status"); string(v) != "null" {
			t.Errorf("kconfig_status %s without a current hash", v)
		}
	}
	// --kconfig-hash overrides the stored hash for one listing.
	l = cliList(t, root, "--kconfig-hash", "22222222")
	if e, _ := cliEntryOf(t, l, "git"); e.KconfigStatus == nil || *e.KconfigStatus != "matches" {
		t.Errorf("git with --kconfig-hash 22222222: %v", e.KconfigStatus)
	}
}

// ---- 4. exit codes ----

func TestCLIExitCodes(t *testing.T) {
	root := cliNewRoot(t)
	cliStore(t, root, "k")
	img := cliSampleImage
	for _, tc := range []struct {
		args []string
		code int
		want []string // substrings of stderr
	}{
		{[]string{"lookup", "nope"}, 3, []string{`"nope"`, "kcache list"}},
		{[]string{"show", "nope"}, 3, []string{`"nope"`}},
		{[]string{"rm", "nope"}, 3, []string{`"nope"`}},
		{[]string{"pin", "nope"}, 3, []string{`"nope"`}},
		{[]string{"lookup", "../x"}, 2, []string{`"../x"`, "path separator"}},
		{[]string{"lookup", ".hidden"}, 2, []string{`".hidden"`, "starts with '.'"}},
		{[]string{"lookup", "a..b"}, 2, []string{"'..'"}},
		{[]string{"store", "../x", "--image", img}, 2, []string{`"../x"`, "path separator"}},
		{[]string{"store", ".hidden", "--image", img}, 2, []string{"starts with '.'"}},
		{[]string{"rm", "../x"}, 2, []string{`"../x"`, "path separator"}},
		{[]string{"rm", ".hidden"}, 2, []string{"starts with '.'"}},
		{[]string{"frobnicate"}, 2, []string{`unknown command "frobnicate"`, "kcache --help"}},
		{[]string{"list", "--frob"}, 2, []string{"unknown flag: --frob"}},
		{[]string{"store", "x"}, 2, []string{`"image"`}},
		{[]string{"lookup"}, 2, []string{"1 arg"}},
		{[]string{"lookup", "a", "b"}, 2, []string{"1 arg"}},
		{[]string{"store", "x", "--image", filepath.Join(root, "no-such-file")}, 1, []string{"no-such-file"}},
	} {
		stdout, stderr, code := runIn(t, root, tc.args...)
		if code != tc.code {
			t.Errorf("kcache %s: exit %d, want %d\nstderr: %s", strings.Join(tc.args, " "), code, tc.code, stderr)
			continue
		}
		if stdout != "" {
			t.Errorf("kcache %s: stdout %q, want nothing", strings.Join(tc.args, " "), stdout)
		}
		if !strings.HasPrefix(stderr, "kcache: ") {
			t.Errorf("kcache %s: stderr %q does not start with 'kcache: '", strings.Join(tc.args, " "), stderr)
		}
		for _, w := range tc.want {
			if !strings.Contains(stderr, w) {
				t.Errorf("kcache %s: stderr %q lacks %q", strings.Join(tc.args, " "), stderr, w)
			}
		}
	}
	if got := cliListKeys(t, cliList(t, root)); !reflect.DeepEqual(got, []string{"k"}) {
		t.Errorf("failed commands changed the cache: %v", got)
	}

	// A missing root: not found, and nothing is created.
	missing := cliNewRoot(t)
	_, stderr := cliCode(t, missing, 3, "lookup", "k")
	if !strings.Contains(stderr, `"k"`) {
		t.Errorf("stderr %q", stderr)
	}
	cliCode(t, missing, 3, "show", "k")
	cliCode(t, missing, 3, "rm", "k")
	cliCode(t, missing, 2, "store", ".bad", "--image", img)
	if cliExists(missing) {
		t.Error("lookup/show/invalid store on a missing root created it")
	}

	// rm: the worst failure wins; every key is tried.
	stdout, stderr := cliCode(t, root, 2, "rm", "nope", "../x", "k")
	if stdout != "removed k\n" || !strings.Contains(stderr, `"nope"`) || !strings.Contains(stderr, `"../x"`) {
		t.Errorf("rm nope ../x k: stdout %q stderr %q", stdout, stderr)
	}
	stdout, _ = cliCode(t, root, 3, "rm", "--json", "nope")
	var res []map[string]any
	cliOneJSON(t, stdout, &res)
	if len(res) != 1 || res[0]["key"] != "nope" || res[0]["removed"] != false || res[0]["error_kind"] != "not_found" {
		t.Errorf("rm --json nope = %s", stdout)
	}
}

func TestCLIRmInUse(t *testing.T) {
	root := cliNewRoot(t)
	cliStore(t, root, "held")
	cliStore(t, root, "free")
	l, err := mustOpen(root, nil).AcquireShared(context.Background(), "held", kcache.LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	released := false
	defer func() {
		if !released {
			l.Release()
		}
	}()
	pid := fmt.Sprintf("pid=%d mode=shared", os.Getpid())

	_, stderr := cliCode(t, root, 4, "rm", "held")
	if !strings.Contains(stderr, `"held"`) || !strings.Contains(stderr, pid) {
		t.Errorf("rm held: stderr lacks the key or %q:\n%s", pid, stderr)
	}
	// The same from another process: the holder named is this test process.
	if _, stderr, code := runProc(t, root, "rm", "held"); code != 4 || !strings.Contains(stderr, pid) {
		t.Errorf("rm held from another process: exit %d, stderr lacks %q:\n%s", code, pid, stderr)
	}
	// In use beats not found; the free entry is still removed.
	stdout, _ := cliCode(t, root, 4, "rm", "nope", "held", "free")
	if stdout != "removed free\n" {
		t.Errorf("rm nope held free: stdout %q", stdout)
	}
	stdout, _ = cliCode(t, root, 4, "rm", "--json", "held")
	var res []map[string]any
	cliOneJSON(t, stdout, &res)
	if len(res) != 1 || res[0]["error_kind"] != "in_use" || res[0]["removed"] != false || !strings.Contains(fmt.Sprint(res[0]["error"]), pid) {
		t.Errorf("rm --json held = %s", stdout)
	}
	// locks names the holder: this test process.
	stdout, _ = cliOK(t, root, "locks", "--json")
	var locks struct {
		Locks []struct {
			Key      string `json:"key"`
			Lockfile string `json:"lockfile"`
			Holders  []struct {
				PID  int    `json:"pid"`
				Mode string `json:"mode"`
			} `json:"holders"`
		} `json:"locks"`
	}
	cliOneJSON(t, stdout, &locks)
	if len(locks.Locks) != 1 || locks.Locks[0].Key != "held" || len(locks.Locks[0].Holders) != 1 ||
		locks.Locks[0].Holders[0].PID != os.Getpid() || locks.Locks[0].Holders[0].Mode != "shared" ||
		locks.Locks[0].Lockfile != filepath.Join(root, ".locks", "held.lock") {
		t.Errorf("locks --json while held:\n%s", stdout)
	}
	stdout, _ = cliOK(t, root, "locks")
	if !strings.Contains(stdout, "held") || !strings.Contains(stdout, fmt.Sprint(os.Getpid())) {
		t.Errorf("locks while held:\n%s", stdout)
	}
	// The entry survived, and goes once the lock is released.
	cliOK(t, root, "lookup", "held")
	l.Release()
	released = true
	stdout, _ = cliOK(t, root, "rm", "held")
	if stdout != "removed held\n" {
		t.Errorf("rm after release: %q", stdout)
	}
	cliCode(t, root, 3, "lookup", "held")
}

// ---- lookup output ----

func TestCLILookup(t *testing.T) {
	root := cliNewRoot(t)
	cliOK(t, root, "store", "both", "--image", cliSampleImage, "--vmlinux", cliSampleVmlinux)
	cliOK(t, root, "store", "image-only", "--image", cliSampleImage)
	unstripped := cliWrite(t, t.TempDir(), "vmlinux", "not an ELF, stays unstripped")
	cliOK(t, root, "store", "unstripped", "--image", cliSampleImage, "--vmlinux", unstripped)

	stdout, _ := cliOK(t, root, "lookup", "both")
	lines := cliLines(stdout)
	if len(lines) != 2 {
		t.Fatalf("lookup both: %d lines, want image and vmlinux:\n%s", len(lines), stdout)
	}
	wantImg, err := os.ReadFile(cliSampleImage)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(lines[0]); err != nil || !bytes.Equal(got, wantImg) {
		t.Errorf("image at %s differs from the input (%v)", lines[0], err)
	}
	if !strings.HasPrefix(lines[0], root+"/") || !strings.HasPrefix(lines[1], root+"/") {
		t.Errorf("paths outside the root: %v", lines)
	}
	var e cliEntry
	out, _ := cliOK(t, root, "show", "--json", "both")
	cliOneJSON(t, out, &e)
	if !e.VmlinuxStripped {
		want, _ := os.ReadFile(cliSampleVmlinux)
		if got, err := os.ReadFile(lines[1]); err != nil || !bytes.Equal(got, want) {
			t.Errorf("unstripped vmlinux at %s differs from the input (%v)", lines[1], err)
		}
	}

	stdout, stderr := cliOK(t, root, "lookup", "image-only")
	if lines := cliLines(stdout); len(lines) != 1 || lines[0] == "" {
		t.Errorf("lookup image-only: %q, want one line", stdout)
	}
	if stderr != "" {
		t.Errorf("lookup image-only: stderr %q", stderr)
	}

	// An unstripped vmlinux warns on every lookup, once.
	for i := range 3 {
		stdout, stderr := cliOK(t, root, "lookup", "unstripped")
		if len(cliLines(stdout)) != 2 {
			t.Errorf("lookup %d: stdout %q", i, stdout)
		}
		if w := cliLines(stderr); len(w) != 1 || !strings.Contains(w[0], "unstripped") || !strings.Contains(w[0], `"unstripped"`) {
			t.Errorf("lookup %d: stderr %q, want one warning naming the entry", i, stderr)
		}
	}
}

// ---- 5. store flags ----

func TestCLIStoreFlags(t *testing.T) {
	root := cliNewRoot(t)
	dir := t.TempDir()
	config := cliWrite(t, dir, "config", "CONFIG_HZ=1000\nCONFIG_BPF=y\n")
	fragment := cliWrite(t, dir, "fragment", "CONFIG_SCHED_CLASS_EXT=y\n")
	crc := func(s string) string { return fmt.Sprintf("%08x", crc32.ChecksumIEEE([]byte(s))) }

	img := cliWrite(t, dir, "bzImage", "an image")
	vml := cliWrite(t, dir, "vmlinux", "a vmlinux")
	old := time.Date(2020, 5, 6, 7, 8, 9, 0, time.UTC)
	for _, p := range []string{img, vml} {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	out, _ := cliOK(t, root, "store", "hashes", "--image", img, "--vmlinux", vml, "--config", config, "--kconfig", fragment,
		"--built-at", "2024-06-01T14:00:00+02:00", "--arch", "riscv64", "--image-name", "Image", "--version", "6.1", "--json")
	var e cliEntry
	cliOneJSON(t, out, &e)
	if got := cliKeys(t, []byte(out)); !reflect.DeepEqual(got, cliEntryKeys) {
		t.Errorf("store --json keys %v", got)
	}
	if e.ConfigHash == nil || *e.ConfigHash != crc("CONFIG_HZ=1000\nCONFIG_BPF=y\n") {
		t.Errorf("config_hash %v, want %s", e.ConfigHash, crc("CONFIG_HZ=1000\nCONFIG_BPF=y\n"))
	}
	if e.KconfigHash == nil || *e.KconfigHash != crc("CONFIG_SCHED_CLASS_EXT=y\n") {
		t.Errorf("kconfig_hash %v", e.KconfigHash)
	}
	if e.BuiltAt != "2024-06-01T12:00:00Z" || e.Arch != "riscv64" || e.ImageName != "Image" || *e.Version != "6.1" || e.Source["type"] != "tarball" {
		t.Errorf("stored %+v", e)
	}
	// The same after a round trip through the index.
	l := cliList(t, root)
	if got, _ := cliEntryOf(t, l, "hashes"); *got.ConfigHash != *e.ConfigHash || *got.KconfigHash != *e.KconfigHash || got.BuiltAt != e.BuiltAt {
		t.Errorf("listed %+v", got)
	}
	// Inputs are copied, never moved or touched.
	for p, content := range map[string]string{img: "an image", vml: "a vmlinux"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatalf("input %s gone after store: %v", p, err)
		}
		if data, _ := os.ReadFile(p); string(data) != content || !fi.ModTime().Equal(old) {
			t.Errorf("input %s changed: %q, mtime %v", p, data, fi.ModTime())
		}
	}

	// Text output names the key and the blob paths.
	out, _ = cliOK(t, root, "store", "text", "--image", img)
	if !strings.HasPrefix(out, "stored text\n  image    "+cliBlobPath(root, cliSHA256(t, img))+" (8 B)\n") {
		t.Errorf("store text output:\n%s", out)
	}

	// git sources: --ref implies git; unset payload keys are null.
	out, _ = cliOK(t, root, "store", "g1", "--image", img, "--source", "git", "--ref", "main", "--git-hash", "deadbee", "--json")
	if src := string(cliField(t, []byte(out), "source")); src != `{"type":"git","git_hash":"deadbee","ref":"main"}` {
		t.Errorf("git source %s", src)
	}
	out, _ = cliOK(t, root, "store", "g2", "--image", img, "--ref", "v6.9", "--json")
	if src := string(cliField(t, []byte(out), "source")); src != `{"type":"git","git_hash":null,"ref":"v6.9"}` {
		t.Errorf("--ref alone: source %s", src)
	}

	// local sources: canonical absolute tree path, and the tree's vmlinux size and mtime.
	tree := filepath.Join(dir, "linux")
	if err := os.Mkdir(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	const treeVmlContent = "the tree's vmlinux"
	treeVml := cliWrite(t, tree, "vmlinux", treeVmlContent)
	mtime := time.Date(2024, 2, 3, 4, 5, 6, 0, time.UTC)
	if err := os.Chtimes(treeVml, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("linux", filepath.Join(dir, "tree-link")); err != nil {
		t.Fatal(err)
	}
	realTree, err := filepath.EvalSymlinks(tree)
	if err != nil {
		t.Fatal(err)
	}
	cmd := kcacheCmd(t, root, "store", "loc", "--image", img, "--source-tree", "tree-link/", "--git-hash", "abc1234", "--json")
	cmd.Dir = dir // a relative path through a symlink
	outb, err := cmd.Output()
	if err != nil {
		t.Fatalf("store --source-tree: %v", err)
	}
	e = cliEntry{}
	cliOneJSON(t, string(outb), &e)
	if src := string(cliField(t, outb, "source")); src != `{"type":"local","source_tree_path":"`+realTree+`","git_hash":"abc1234"}` {
		t.Errorf("local source %s, want path %s", src, realTree)
	}
	if e.SourceVmlinuxSize == nil || *e.SourceVmlinuxSize != uint64(len(treeVmlContent)) || e.SourceVmlinuxMtime == nil || *e.SourceVmlinuxMtime != mtime.Unix() {
		t.Errorf("source vmlinux size %s mtime %s, want %d and %d", cliField(t, outb, "source_vmlinux_size"), cliField(t, outb, "source_vmlinux_mtime_secs"), len(treeVmlContent), mtime.Unix())
	}
	if err := os.Remove(treeVml); err != nil {
		t.Fatal(err)
	}
	out, _ = cliOK(t, root, "store", "loc2", "--image", img, "--source-tree", tree, "--json")
	for _, k := range []string{"source_vmlinux_size", "source_vmlinux_mtime_secs"} {
		if v := cliField(t, []byte(out), k); string(v) != "null" {
			t.Errorf("tree without vmlinux: %s = %s", k, v)
		}
	}

	before := cliListKeys(t, cliList(t, root))
	// Bad values and inconsistent combinations are usage errors; nothing is stored.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--kconfig-hash", "xyz"}, `"xyz" is not 8 lowercase hex`},
		{[]string{"--kconfig-hash", "DEADBEEF"}, `"DEADBEEF" is not 8 lowercase hex`},
		{[]string{"--kconfig-hash", "deadbeef0"}, "not 8 lowercase hex"},
		{[]string{"--built-at", "yesterday"}, "RFC 3339"},
		{[]string{"--built-at", "2024-06-01 12:00:00"}, "RFC 3339"},
		{[]string{"--source", "tarball", "--ref", "x"}, "tarball source has no"},
		{[]string{"--source", "tarball", "--git-hash", "abc"}, "tarball source has no"},
		{[]string{"--source", "git", "--source-tree", tree}, "git source has no source tree"},
		{[]string{"--source-tree", tree, "--ref", "x", "--source", "local"}, "local source has no ref"},
		{[]string{"--source", "svn"}, `"svn" is not one of tarball, git, local`},
		{[]string{"--kconfig", fragment, "--kconfig-hash", "11111111"}, "kconfig"},
		{[]string{"--image-name", "vmlinux"}, "reserved"},
		{[]string{"--image-name", "a/b"}, "path separator"},
	} {
		args := append([]string{"store", "bad", "--image", img}, tc.args...)
		stdout, stderr := cliCode(t, root, 2, args...)
		if stdout != "" || !strings.Contains(stderr, tc.want) {
			t.Errorf("store %v: stdout %q stderr %q, want %q", tc.args, stdout, stderr, tc.want)
		}
	}
	// Unreadable inputs are plain errors naming the file.
	for _, flag := range []string{"--config", "--kconfig"} {
		_, stderr := cliCode(t, root, 1, "store", "bad", "--image", img, flag, filepath.Join(dir, "missing.cfg"))
		if !strings.Contains(stderr, flag+": ") || !strings.Contains(stderr, "missing.cfg") {
			t.Errorf("store %s missing: %q", flag, stderr)
		}
	}
	if after := cliListKeys(t, cliList(t, root)); !reflect.DeepEqual(after, before) {
		t.Errorf("failed stores changed the cache: %v -> %v", before, after)
	}

	// A rejected store on a missing root does not create it.
	missing := cliNewRoot(t)
	cliCode(t, missing, 2, "store", "k", "--image", img, "--built-at", "not a time")
	cliCode(t, missing, 2, "store", "k", "--image", img, "--kconfig-hash", "nothex!!")
	if cliExists(missing) {
		t.Error("a rejected store created the root")
	}
}

// ---- 6. show, pin, kconfig, version, completion ----

func TestCLIShowText(t *testing.T) {
	root := cliNewRoot(t)
	vml := cliWrite(t, t.TempDir(), "vmlinux", "not an ELF")
	cliOK(t, root, "kconfig", "set", "--hash", "11111111")
	cliOK(t, root, "store", "k", "--image", cliSampleImage, "--vmlinux", vml, "--arch", "aarch64",
		"--version", "6.14.2", "--ref", "v6.14", "--git-hash", "abc1234", "--kconfig-hash", "11111111",
		"--built-at", "2025-04-18T10:00:00Z")
	stdout, stderr := cliOK(t, root, "show", "k")
	got := map[string]string{}
	var order []string
	for _, line := range cliLines(stdout) {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			t.Fatalf("show line %q has no colon", line)
		}
		got[k] = strings.TrimSpace(v)
		order = append(order, k)
	}
	imgSHA, vmlSHA := cliSHA256(t, cliSampleImage), cliSHA256(t, vml)
	want := map[string]string{
		"key":          "k",
		"version":      "6.14.2",
		"source":       "git (git hash abc1234, ref v6.14)",
		"arch":         "aarch64",
		"built at":     "2025-04-18T10:00:00Z",
		"kconfig hash": "11111111 (matches)",
		"config hash":  "-",
		"image":        "bzImage, 64.0 KiB, sha256 " + imgSHA,
		"image path":   cliBlobPath(root, imgSHA),
		"vmlinux":      "unstripped, 10 B, sha256 " + vmlSHA,
		"vmlinux path": cliBlobPath(root, vmlSHA),
		"pinned":       "no",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("show %s: %q, want %q", k, got[k], v)
		}
	}
	wantOrder := []string{"key", "version", "source", "arch", "built at", "stored at", "last used",
		"kconfig hash", "config hash", "image", "image path", "vmlinux", "vmlinux path", "pinned"}
	if !reflect.DeepEqual(order, wantOrder) {
		t.Errorf("show rows %v, want %v", order, wantOrder)
	}
	if _, err := time.Parse(time.RFC3339Nano, got["stored at"]); err != nil {
		t.Errorf("stored at %q: %v", got["stored at"], err)
	}
	// show is not a use of the entry: no unstripped warning, and last_used
	// stays unset (the store does not set it either).
	if stderr != "" {
		t.Errorf("show stderr %q; want nothing", stderr)
	}
	if got["last used"] != "-" {
		t.Errorf("show set last used: %q", got["last used"])
	}
	// The values line up in one column.
	valueCol := func(line string) int {
		i := strings.Index(line, ":") + 1
		return i + len(line[i:]) - len(strings.TrimLeft(line[i:], " "))
	}
	lines := cliLines(stdout)
	for _, line := range lines {
		if valueCol(line) != valueCol(lines[0]) {
			t.Errorf("show row %q does not align with %q", line, lines[0])
		}
	}

	cliOK(t, root, "store", "plain", "--image", cliSampleImage)
	stdout, _ = cliOK(t, root, "show", "plain")
	for _, w := range []string{"\nvmlinux:", "\nsource:", "\nkconfig hash:"} {
		if !strings.Contains(stdout, w) {
			t.Fatalf("show plain lacks %q:\n%s", w, stdout)
		}
	}
	if !regexp.MustCompile(`(?m)^vmlinux: +-$`).MatchString(stdout) || !regexp.MustCompile(`(?m)^source: +tarball$`).MatchString(stdout) ||
		!regexp.MustCompile(`(?m)^kconfig hash: +- \(untracked\)$`).MatchString(stdout) || strings.Contains(stdout, "vmlinux path") {
		t.Errorf("show plain:\n%s", stdout)
	}
}

func TestCLIPin(t *testing.T) {
	root := cliNewRoot(t)
	cliStore(t, root, "k")
	pinned := func() bool {
		e, _ := cliEntryOf(t, cliList(t, root), "k")
		return e.Pinned
	}
	if pinned() {
		t.Fatal("pinned before pin")
	}
	if out, _ := cliOK(t, root, "pin", "k", "--reason", "bisect base"); out != "pinned k\n" {
		t.Errorf("pin: %q", out)
	}
	if !pinned() {
		t.Error("not pinned after pin")
	}
	if out, _ := cliOK(t, root, "show", "k"); !regexp.MustCompile(`(?m)^pinned: +yes \(bisect base\)$`).MatchString(out) {
		t.Errorf("show after pin:\n%s", out)
	}
	// A pin outlives a replacement of the entry, and store reports it.
	img := cliWrite(t, t.TempDir(), "bzImage", "new image")
	out, _ := cliOK(t, root, "store", "k", "--image", img, "--json")
	if v := cliField(t, []byte(out), "pinned"); string(v) != "true" {
		t.Errorf("store --json of a pinned key: pinned %s", v)
	}
	if !pinned() {
		t.Error("pin lost by store")
	}
	if out, _ := cliOK(t, root, "unpin", "k"); out != "unpinned k\n" {
		t.Errorf("unpin: %q", out)
	}
	if pinned() {
		t.Error("pinned after unpin")
	}
	out, stderr := cliOK(t, root, "unpin", "k")
	if out != "" || stderr != "kcache: k was not pinned\n" {
		t.Errorf("second unpin: stdout %q stderr %q", out, stderr)
	}
	if out, _ := cliOK(t, root, "show", "--json", "k"); string(cliField(t, []byte(out), "pin_reason")) != "null" {
		t.Errorf("pin_reason of an unpinned entry: %s", out)
	}
	// rm refuses a pinned entry without --force (exit 4, says how), and
	// drops the pin with the entry: a new entry under the key is not pinned.
	cliOK(t, root, "pin", "k")
	if _, stderr := cliCode(t, root, 4, "rm", "k"); !strings.Contains(stderr, "is pinned") || !strings.Contains(stderr, "--force") {
		t.Errorf("rm of a pinned entry: %q", stderr)
	}
	cliOK(t, root, "rm", "--force", "k")
	cliStore(t, root, "k")
	if pinned() {
		t.Error("a removed entry's pin applies to its successor")
	}
	cliCode(t, root, 2, "pin", "../k")
	cliCode(t, root, 2, "unpin", ".k")
}

func TestCLIKconfig(t *testing.T) {
	root := cliNewRoot(t)
	frag := "CONFIG_SCHED_CLASS_EXT=y\nCONFIG_BPF_JIT=y\n"
	file := cliWrite(t, t.TempDir(), "fragment", frag)
	crc := fmt.Sprintf("%08x", crc32.ChecksumIEEE([]byte(frag)))

	if out, _ := cliOK(t, root, "kconfig", "show"); out != "" {
		t.Errorf("kconfig show on a missing root: %q", out)
	}
	if out, _ := cliOK(t, root, "kconfig", "show", "--json"); out != "{\n  \"current_kconfig_hash\": null\n}\n" {
		t.Errorf("kconfig show --json on a missing root: %q", out)
	}
	if cliExists(root) {
		t.Error("kconfig show created the root")
	}
	if out, _ := cliOK(t, root, "kconfig", "set", "--file", file); out != crc+"\n" {
		t.Errorf("kconfig set --file: %q, want %s", out, crc)
	}
	if out, _ := cliOK(t, root, "kconfig", "show"); out != crc+"\n" {
		t.Errorf("kconfig show: %q, want %s", out, crc)
	}
	if out, _ := cliOK(t, root, "kconfig", "show", "--json"); out != "{\n  \"current_kconfig_hash\": \""+crc+"\"\n}\n" {
		t.Errorf("kconfig show --json: %q", out)
	}
	if l := cliList(t, root); l.Current == nil || *l.Current != crc {
		t.Errorf("list current_kconfig_hash %v, want %s", l.Current, crc)
	}
	// --kconfig FILE on list overrides the stored hash.
	// store --json compares the new entry with the current hash like list does.
	out, _ := cliOK(t, root, "store", "k", "--image", cliSampleImage, "--kconfig", file, "--json")
	if v := cliField(t, []byte(out), "kconfig_status"); string(v) != `"matches"` {
		t.Errorf("store --json kconfig_status %s, want \"matches\"", v)
	}
	other := cliWrite(t, t.TempDir(), "other", "CONFIG_X=y\n")
	if e, _ := cliEntryOf(t, cliList(t, root, "--kconfig", other), "k"); e.KconfigStatus == nil || *e.KconfigStatus != "stale" {
		t.Errorf("list --kconfig other: %v", e.KconfigStatus)
	}
	if e, _ := cliEntryOf(t, cliList(t, root), "k"); e.KconfigStatus == nil || *e.KconfigStatus != "matches" {
		t.Errorf("list: %v", e.KconfigStatus)
	}

	if out, _ := cliOK(t, root, "kconfig", "set", "--hash", "0badc0de"); out != "0badc0de\n" {
		t.Errorf("kconfig set --hash: %q", out)
	}
	for _, args := range [][]string{
		{"kconfig", "set"},
		{"kconfig", "set", "--hash", "XYZ"},
		{"kconfig", "set", "--hash", "0BADC0DE"},
		{"kconfig", "set", "--hash", "11111111", "--file", file},
		{"list", "--kconfig-hash", "XYZ"},
		{"list", "--kconfig", file, "--kconfig-hash", "11111111"},
	} {
		if stdout, _ := cliCode(t, root, 2, args...); stdout != "" {
			t.Errorf("kcache %v: stdout %q", args, stdout)
		}
	}
	if out, _ := cliOK(t, root, "kconfig", "show"); out != "0badc0de\n" {
		t.Errorf("a rejected set changed the hash: %q", out)
	}
	if out, _ := cliOK(t, root, "kconfig", "clear"); out != "" {
		t.Errorf("kconfig clear printed %q", out)
	}
	if out, _ := cliOK(t, root, "kconfig", "show"); out != "" {
		t.Errorf("kconfig show after clear: %q", out)
	}
	if l := cliList(t, root); l.Current != nil {
		t.Errorf("current_kconfig_hash after clear: %s", *l.Current)
	}
}

func TestCLIVersion(t *testing.T) {
	root := cliNewRoot(t)
	out, _ := cliOK(t, root, "version")
	re := regexp.MustCompile(fmt.Sprintf(`^kcache \S+ \(go1\.[0-9.]+\S*, index schema %d\)\nS3 remote: built in\n$`, index.SchemaVersion))
	if !re.MatchString(out) {
		t.Errorf("version: %q", out)
	}
	out, _ = cliOK(t, root, "version", "--json")
	if got := cliKeys(t, []byte(out)); !reflect.DeepEqual(got, []string{"version", "go", "index_schema", "s3_remote"}) {
		t.Errorf("version --json keys %v", got)
	}
	var v struct {
		Version string `json:"version"`
		Go      string `json:"go"`
		Schema  int    `json:"index_schema"`
	}
	cliOneJSON(t, out, &v)
	if v.Version == "" || !strings.HasPrefix(v.Go, "go1.") || v.Schema != index.SchemaVersion {
		t.Errorf("version --json: %+v", v)
	}
	if cliExists(root) {
		t.Error("version created the root")
	}
}

func TestCLICompletion(t *testing.T) {
	root := cliNewRoot(t)
	for _, shell := range []string{"bash", "zsh", "fish"} {
		out, _ := cliOK(t, root, "completion", shell)
		if !strings.Contains(out, "__complete") || !strings.Contains(out, "kcache") {
			t.Errorf("completion %s does not look like a completion script:\n%.300s", shell, out)
		}
	}
	// No cache yet: nothing to offer, nothing created.
	if out, _ := cliOK(t, root, "__complete", "lookup", ""); out != ":4\n" {
		t.Errorf("__complete on a missing root: %q", out)
	}
	if cliExists(root) {
		t.Error("completion created the root")
	}
	for _, k := range []string{"beta", "alpha", "bravo"} {
		cliStore(t, root, k)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"lookup", ""}, "alpha\nbeta\nbravo\n:4\n"},
		{[]string{"lookup", "b"}, "beta\nbravo\n:4\n"},
		{[]string{"rm", ""}, "alpha\nbeta\nbravo\n:4\n"},
		{[]string{"show", "al"}, "alpha\n:4\n"},
		{[]string{"pin", "z"}, ":4\n"},
	} {
		out, _ := cliOK(t, root, append([]string{"__complete"}, tc.args...)...)
		if out != tc.want {
			t.Errorf("__complete %v = %q, want %q", tc.args, out, tc.want)
		}
	}
}

// ---- 7. locks ----

func TestCLILocksIdle(t *testing.T) {
	check := func(t *testing.T, root string) {
		t.Helper()
		out, _ := cliOK(t, root, "locks", "--json")
		want := fmt.Sprintf("{\n  \"root\": %q,\n  \"index\": {\n    \"path\": %q,\n    \"holders\": []\n  },\n  \"locks\": []\n}\n",
			root, filepath.Join(root, "index.db"))
		if out != want {
			t.Errorf("locks --json:\n%s\nwant:\n%s", out, want)
		}
		if out, _ := cliOK(t, root, "locks"); out != "no locks held.\n" {
			t.Errorf("locks: %q", out)
		}
	}
	root := cliNewRoot(t)
	check(t, root)
	if cliExists(root) {
		t.Error("locks created the root")
	}
	cliStore(t, root, "k")
	cliOK(t, root, "lookup", "k")
	check(t, root)
}

// mustOpen is kcache.Open for tests, whose roots are temporary directories:
// an error there is a bug in the test, so it panics with it.
func mustOpen(root string, opt *kcache.Options) *kcache.Cache {
	c, err := kcache.Open(root, opt)
	if err != nil {
		panic(err)
	}
	return c
}
