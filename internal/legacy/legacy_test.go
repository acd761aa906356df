package legacy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func ptr[T any](v T) *T { return &v }

func writeInput(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func meta(builtAt string) Metadata {
	return Metadata{
		Source: Source{Type: "local", SourceTreePath: ptr("/home/u/linux"), GitHash: ptr("deadbee")},
		Arch:   "x86_64", ImageName: "bzImage", ConfigHash: ptr("1f2e3d4c"),
		BuiltAt: builtAt, KtstrKconfigHash: ptr("c0bd848c"),
		SourceVmlinuxSize: ptr(uint64(587788136)), SourceVmlinuxMtimeSecs: ptr(int64(1751464200)),
	}
}

// The file matches the example of ktstr-cache.md §1.4 byte for byte.
func TestMetadataFormat(t *testing.T) {
	root := t.TempDir()
	img, vml := writeInput(t, "bzImage", "img"), writeInput(t, "vmlinux", "elf")
	if _, err := Store(root, "k", img, vml, meta("2026-04-18T10:00:00Z")); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(root, "k", "metadata.json"))
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
  "vmlinux_stripped": false,
  "source_vmlinux_size": 587788136,
  "source_vmlinux_mtime_secs": 1751464200
}`
	if string(got) != want {
		t.Errorf("metadata.json:\n%s\nwant:\n%s", got, want)
	}
	m := meta("2026-04-18T10:00:00Z")
	m.Source = Source{Type: "tarball"}
	if _, err := Store(root, "t", img, "", m); err != nil {
		t.Fatal(err)
	}
	got, _ = os.ReadFile(filepath.Join(root, "t", "metadata.json"))
	if !strings.Contains(string(got), "\"source\": {\n    \"type\": \"tarball\"\n  },") || !strings.Contains(string(got), `"has_vmlinux": false`) {
		t.Errorf("tarball metadata.json:\n%s", got)
	}
}

// <, > and & are written as they are, as ktstr's serde_json writes them
// (encoding/json would escape them as \u003c...), and read back.
func TestMetadataNoHTMLEscape(t *testing.T) {
	root := t.TempDir()
	m := meta("2026-04-18T10:00:00Z")
	m.Source.SourceTreePath = ptr("/home/u/a&b<c>")
	if _, err := Store(root, "k", writeInput(t, "bzImage", "img"), "", m); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(root, "k", "metadata.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(got), `"source_tree_path": "/home/u/a&b<c>",`) {
		t.Errorf("metadata.json:\n%s", got)
	}
	e, err := Lookup(root, "k")
	if err != nil || *e.Meta.Source.SourceTreePath != "/home/u/a&b<c>" {
		t.Errorf("lookup: %+v, %v", e, err)
	}
}

func TestStoreLookupReplaceList(t *testing.T) {
	root := t.TempDir()
	if _, err := Lookup(root, "a"); err == nil {
		t.Fatal("lookup in an empty cache succeeded")
	}
	for i, k := range []string{"a", "b", "c"} {
		img := writeInput(t, "bzImage", "image "+k)
		if _, err := Store(root, k, img, "", meta("2026-04-1"+string(rune('1'+i))+"T10:00:00Z")); err != nil {
			t.Fatal(err)
		}
	}
	// Replace a: goes through RENAME_EXCHANGE and removes the old entry.
	e, err := Store(root, "a", writeInput(t, "bzImage", "new image"), writeInput(t, "vmlinux", "elf"), meta("2026-04-19T10:00:00Z"))
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(e.ImagePath()); string(b) != "new image" {
		t.Errorf("image after replace = %q", b)
	}
	if e, err := Lookup(root, "a"); err != nil || !e.Meta.HasVmlinux || e.Meta.BuiltAt != "2026-04-19T10:00:00Z" {
		t.Errorf("lookup after replace: %+v, %v", e, err)
	}
	// A directory without metadata and staging debris of a dead process.
	if err := os.Mkdir(filepath.Join(root, "zz-stray"), 0o755); err != nil {
		t.Fatal(err)
	}
	dead := filepath.Join(root, ".tmp-x-2147483646")
	if err := os.Mkdir(dead, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Store(root, "d", writeInput(t, "bzImage", "d"), "", meta("2026-04-10T10:00:00Z")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Errorf("orphan staging dir survived the sweep: %v", err)
	}
	ents, _ := os.ReadDir(root)
	for _, d := range ents {
		if strings.HasPrefix(d.Name(), ".tmp-") {
			t.Errorf("staging dir left behind: %s", d.Name())
		}
	}
	l, err := List(root)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, r := range l {
		keys = append(keys, r.Key)
	}
	if got := strings.Join(keys, ","); got != "a,c,b,d,zz-stray" {
		t.Errorf("list order = %s, want a,c,b,d,zz-stray", got)
	}
	if last := l[len(l)-1]; last.Entry != nil || last.Corrupt != "metadata.json missing" {
		t.Errorf("stray dir listed as %+v", last)
	}
}
