package kcache_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kcache/kcache"
	"github.com/kcache/kcache/lock"
)

// ktstrKeys are metadata.json's keys in the order ktstr writes them, and
// whether each is required by ktstr's reader (§1.2 of ktstr-cache.md).
var ktstrKeys = []struct {
	name     string
	required bool
}{
	{"version", false}, {"source", true}, {"arch", true}, {"image_name", true},
	{"config_hash", false}, {"built_at", true}, {"ktstr_kconfig_hash", false},
	{"has_vmlinux", true}, {"vmlinux_stripped", true}, {"source_vmlinux_size", false},
	{"source_vmlinux_mtime_secs", false},
}

var ktstrSourceKeys = map[string][]string{
	"tarball": {"type"},
	"git":     {"type", "git_hash", "ref"},
	"local":   {"type", "source_tree_path", "git_hash"},
}

// checkKtstrShape parses data with ktstr's rules made strict: every key
// present, in ktstr's order, nothing extra, no duplicate, the right JSON
// type (null only for optional fields), the source object's keys in its
// variant's order, and no trailing newline. It returns the values by key.
func checkKtstrShape(t *testing.T, data []byte) map[string]json.RawMessage {
	t.Helper()
	if bytes.HasSuffix(data, []byte("\n")) {
		t.Errorf("metadata.json ends with a newline")
	}
	keys, vals := orderedObject(t, data)
	if len(keys) != len(ktstrKeys) {
		t.Fatalf("metadata.json has keys %v, want the %d of ktstr", keys, len(ktstrKeys))
	}
	for i, k := range ktstrKeys {
		if keys[i] != k.name {
			t.Fatalf("metadata.json key %d is %q, want %q (keys %v)", i, keys[i], k.name, keys)
		}
		v := vals[k.name]
		if string(v) == "null" && k.required {
			t.Errorf("required key %q is null", k.name)
		}
	}
	var str = func(k string) {
		var s *string
		if err := json.Unmarshal(vals[k], &s); err != nil {
			t.Errorf("%s: %v", k, err)
		}
	}
	for _, k := range []string{"version", "arch", "image_name", "config_hash", "built_at", "ktstr_kconfig_hash"} {
		str(k)
	}
	for _, k := range []string{"has_vmlinux", "vmlinux_stripped"} {
		var b bool
		if err := json.Unmarshal(vals[k], &b); err != nil {
			t.Errorf("%s: %v", k, err)
		}
	}
	var size *uint64
	var mtime *int64
	if err := json.Unmarshal(vals["source_vmlinux_size"], &size); err != nil {
		t.Errorf("source_vmlinux_size: %v", err)
	}
	if err := json.Unmarshal(vals["source_vmlinux_mtime_secs"], &mtime); err != nil {
		t.Errorf("source_vmlinux_mtime_secs: %v", err)
	}
	if len(vals["built_at"]) != 22 { // 20 characters and the quotes
		t.Errorf("built_at %s is not YYYY-MM-DDTHH:MM:SSZ", vals["built_at"])
	}
	skeys, svals := orderedObject(t, vals["source"])
	var typ string
	if err := json.Unmarshal(svals["type"], &typ); err != nil {
		t.Fatalf("source.type: %v", err)
	}
	if want := ktstrSourceKeys[typ]; fmt.Sprint(skeys) != fmt.Sprint(want) {
		t.Errorf("source keys %v, want %v", skeys, want)
	}
	for _, k := range skeys[1:] {
		var s *string
		if err := json.Unmarshal(svals[k], &s); err != nil {
			t.Errorf("source.%s: %v", k, err)
		}
	}
	return vals
}

// orderedObject reads one JSON object with a token decoder and returns its
// keys in order and its raw values; a duplicate key or trailing data fails.
func orderedObject(t *testing.T, data []byte) ([]string, map[string]json.RawMessage) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not a JSON object: %v %v\n%s", tok, err, data)
	}
	var keys []string
	vals := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		k := tok.(string)
		if _, dup := vals[k]; dup {
			t.Fatalf("duplicate key %q", k)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			t.Fatal(err)
		}
		keys, vals[k] = append(keys, k), raw
	}
	if _, err := dec.Token(); err != nil {
		t.Fatal(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		t.Fatalf("trailing data after the object: %v", err)
	}
	return keys, vals
}

func sameBytes(t *testing.T, a, b string) {
	t.Helper()
	da, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	db, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(da, db) {
		t.Errorf("%s (%d bytes) differs from %s (%d bytes)", a, len(da), b, len(db))
	}
}

// A local build with a stripped vmlinux: metadata.json is exactly what ktstr
// writes (ktstr-cache.md §1.4's example with these values), and the image
// and vmlinux have the blobs' bytes but are not hard links to them.
func TestExportKtstrLayoutExactBytes(t *testing.T) {
	c, _ := newCache(t)
	size, mtime := uint64(587788136), int64(1751464200)
	meta := kcache.Metadata{
		Source: kcache.Source{Type: "local", SourceTreePath: ptr("/home/u/linux"), GitHash: ptr("deadbee")},
		Arch:   "x86_64", ImageName: "bzImage", ConfigHash: ptr("1f2e3d4c"),
		BuiltAt: "2026-04-18T10:00:00Z", KconfigHash: ptr("c0bd848c"),
		SourceVmlinuxSize: &size, SourceVmlinuxMtimeSecs: &mtime,
	}
	key := "local-deadbee-x86_64-kcc0bd848c"
	art := kcache.Artifacts{Image: "testdata/sample/bzImage", Vmlinux: "testdata/sample/vmlinux"}
	e, err := c.Store(context.Background(), key, art, meta)
	if err != nil {
		t.Fatal(err)
	}
	if !e.VmlinuxStripped {
		t.Fatal("the sample vmlinux was not stripped")
	}
	dir := filepath.Join(t.TempDir(), "ktstr")
	rep, err := c.Export(context.Background(), kcache.ExportOptions{Keys: []string{key}, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Failed) != 0 || len(rep.Exported) != 1 || rep.Exported[0].Linked || rep.Exported[0].Path != filepath.Join(dir, key) {
		t.Fatalf("report %+v", rep)
	}
	got, err := os.ReadFile(filepath.Join(dir, key, "metadata.json"))
	if err != nil {
		t.Fatal(err)
	}
	want := `{
  "version": null,
  "source": {
    "type": "local",
    "source_tree_path": "/home/u/linux",
    "git_hash": "deadbee"
  },
  "arch": "x86_64",
  "image_name": "bzImage",
  "config_hash": "1f2e3d4c",
  "built_at": "2026-04-18T10:00:00Z",
  "ktstr_kconfig_hash": "c0bd848c",
  "has_vmlinux": true,
  "vmlinux_stripped": true,
  "source_vmlinux_size": 587788136,
  "source_vmlinux_mtime_secs": 1751464200
}`
	if string(got) != want {
		t.Errorf("metadata.json:\n%s\nwant:\n%s", got, want)
	}
	checkKtstrShape(t, got)
	sameBytes(t, filepath.Join(dir, key, "bzImage"), e.ImagePath)
	sameBytes(t, filepath.Join(dir, key, "vmlinux"), e.VmlinuxPath)
	for _, name := range []string{"bzImage", "vmlinux"} {
		a, _ := os.Stat(filepath.Join(dir, key, name))
		b, _ := os.Stat(map[string]string{"bzImage": e.ImagePath, "vmlinux": e.VmlinuxPath}[name])
		if a == nil || b == nil || os.SameFile(a, b) {
			t.Errorf("%s is a hard link to its blob (or missing)", name)
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("export dir holds %d names, want only the entry (no staging left)", len(ents))
	}
}

// Every source variant and every optional field left unset: all keys are
// still present, as explicit nulls, in ktstr's order.
func TestExportAllVariantsStrictShape(t *testing.T) {
	c, _ := newCache(t)
	src := t.TempDir()
	img := writeFile(t, src, "Image", []byte("an arm64 image"))
	metas := map[string]kcache.Metadata{
		"6.14.2-tarball-aarch64": {Version: ptr("6.14.2"), Source: kcache.Source{Type: "tarball"}, Arch: "aarch64", ImageName: "Image"},
		"v6.15-git-a1b2c3d-x86_64": {Source: kcache.Source{Type: "git", GitHash: ptr("a1b2c3d")}, Arch: "x86_64", ImageName: "Image",
			BuiltAt: "2026-01-02T03:04:05Z"},
		"local-x": {Source: kcache.Source{Type: "local"}, Arch: "x86_64", ImageName: "Image", BuiltAt: "2025-01-02T03:04:05Z"},
	}
	for k, m := range metas {
		if _, err := c.Store(context.Background(), k, kcache.Artifacts{Image: img}, m); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	rep, err := c.Export(context.Background(), kcache.ExportOptions{All: true, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Exported) != 3 || len(rep.Failed) != 0 {
		t.Fatalf("report %+v", rep)
	}
	for k, m := range metas {
		data, err := os.ReadFile(filepath.Join(dir, k, "metadata.json"))
		if err != nil {
			t.Fatal(err)
		}
		vals := checkKtstrShape(t, data)
		if string(vals["has_vmlinux"]) != "false" || string(vals["vmlinux_stripped"]) != "false" {
			t.Errorf("%s: has_vmlinux %s vmlinux_stripped %s", k, vals["has_vmlinux"], vals["vmlinux_stripped"])
		}
		for _, opt := range []string{"config_hash", "ktstr_kconfig_hash", "source_vmlinux_size", "source_vmlinux_mtime_secs"} {
			if string(vals[opt]) != "null" {
				t.Errorf("%s: %s = %s, want null", k, opt, vals[opt])
			}
		}
		if m.Source.Type == "git" && !strings.Contains(string(vals["source"]), `"ref": null`) {
			t.Errorf("%s: source %s lacks an explicit null ref", k, vals["source"])
		}
		if _, err := os.Stat(filepath.Join(dir, k, "vmlinux")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: a vmlinux was written for an entry without one", k)
		}
		sameBytes(t, filepath.Join(dir, k, "Image"), img)
	}
}

// Exporting over an existing entry replaces it as a whole (no stale file of
// the old one survives), waits for a ktstr reader holding the entry's lock
// shared, and reports missing keys without stopping.
func TestExportReplacesAndRespectsKtstrLock(t *testing.T) {
	c, _ := newCache(t)
	src := t.TempDir()
	img := writeFile(t, src, "bzImage", []byte("new image"))
	if _, err := c.Store(context.Background(), "k", kcache.Artifacts{Image: img}, tarball); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	old := filepath.Join(dir, "k")
	if err := os.MkdirAll(old, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, old, "vmlinux", []byte("stale"))
	writeFile(t, old, "metadata.json", []byte(`{"image_name":"bzImage"}`))
	// A ktstr reader holds the entry shared for a moment.
	reader, err := lock.Acquire(context.Background(), filepath.Join(dir, ".locks", "k.lock"), lock.Shared, 0, "ktstr reader")
	if err != nil {
		t.Fatal(err)
	}
	released := make(chan time.Time, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		released <- time.Now()
		reader.Release()
	}()
	rep, err := c.Export(context.Background(), kcache.ExportOptions{Keys: []string{"k", "absent"}, Dir: dir})
	done := time.Now()
	if err != nil {
		t.Fatal(err)
	}
	if at := <-released; done.Before(at) {
		t.Errorf("export finished before the ktstr reader released its lock")
	}
	if len(rep.Exported) != 1 || len(rep.Failed) != 1 || rep.Failed[0].Key != "absent" || !errors.Is(rep.Failed[0].Err, kcache.ErrNotFound) {
		t.Fatalf("report %+v", rep)
	}
	if _, err := os.Stat(filepath.Join(old, "vmlinux")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the old entry's vmlinux survived the replacement")
	}
	sameBytes(t, filepath.Join(old, "bzImage"), img)
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".tmp-") {
			t.Errorf("staging directory %s left behind", e.Name())
		}
	}
}

// On another filesystem (or wherever linking fails) the blobs are copied
// and the report says so.
func TestExportCopiesAcrossFilesystems(t *testing.T) {
	shm := "/dev/shm"
	var a, b syscall.Stat_t
	if syscall.Stat(shm, &a) != nil || syscall.Stat(os.TempDir(), &b) != nil || a.Dev == b.Dev {
		t.Skip("no second filesystem (/dev/shm) beside the temp dir")
	}
	c, _ := newCache(t)
	src := t.TempDir()
	img := writeFile(t, src, "bzImage", []byte("image"))
	e, err := c.Store(context.Background(), "k", kcache.Artifacts{Image: img}, tarball)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp(shm, "kcache-export-")
	if err != nil {
		t.Skip(err)
	}
	defer os.RemoveAll(dir)
	rep, err := c.Export(context.Background(), kcache.ExportOptions{Keys: []string{"k"}, Dir: dir})
	if err != nil || len(rep.Exported) != 1 || rep.Exported[0].Linked {
		t.Fatalf("report %+v, %v; want one copied entry", rep, err)
	}
	sameBytes(t, filepath.Join(dir, "k", "bzImage"), e.ImagePath)
}
