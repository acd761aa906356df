package migrate_test

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/kcache/kcache/internal/legacy"
	"github.com/kcache/kcache/migrate"
)

func sp(s string) *string { return &s }

const goodMeta = `{
  "version": "6.14.2",
  "source": {
    "type": "tarball"
  },
  "arch": "x86_64",
  "image_name": "bzImage",
  "config_hash": "1f2e3d4c",
  "built_at": "2026-04-18T10:00:00Z",
  "ktstr_kconfig_hash": "c0bd848c",
  "has_vmlinux": false,
  "vmlinux_stripped": false,
  "source_vmlinux_size": null,
  "source_vmlinux_mtime_secs": null
}`

// Every corruption class of reference/ktstr-cache.md §1.7 that comes from
// the metadata text, with ktstr's prefix and error_kind.
func TestParseMetadataClasses(t *testing.T) {
	cases := []struct {
		name, text, kind, contains string
	}{
		{"empty", "", migrate.KindTruncated, ""},
		{"whitespace", " \n\t ", migrate.KindTruncated, ""},
		{"lone brace", "{", migrate.KindTruncated, ""},
		{"cut after key", `{"source":`, migrate.KindTruncated, ""},
		{"cut in string", `{"arch": "x86`, migrate.KindTruncated, ""},
		{"not json", "not json", migrate.KindMalformed, ""},
		{"trailing garbage", goodMeta + " x", migrate.KindMalformed, fmt.Sprintf("trailing characters at byte %d", len(goodMeta)+1)},
		{"second document", goodMeta + "{}", migrate.KindMalformed, "trailing"},
		{"bad token", `{"arch": x}`, migrate.KindMalformed, ""},
		{"array", `[]`, migrate.KindSchemaDrift, "invalid type"},
		{"number", `5`, migrate.KindSchemaDrift, "invalid type"},
		{"null document", `null`, migrate.KindSchemaDrift, "invalid type"},
		{"empty object", `{}`, migrate.KindSchemaDrift, "missing field `source`"},
		{"no has_vmlinux", strings.Replace(goodMeta, `"has_vmlinux": false,`, ``, 1), migrate.KindSchemaDrift, "missing field `has_vmlinux`"},
		{"first missing named", `{"source":{"type":"tarball"},"has_vmlinux":true}`, migrate.KindSchemaDrift, "missing field `arch`"},
		{"null arch", strings.Replace(goodMeta, `"x86_64"`, `null`, 1), migrate.KindSchemaDrift, "null"},
		{"null source", strings.Replace(goodMeta, `{
    "type": "tarball"
  }`, `null`, 1), migrate.KindSchemaDrift, "null"},
		{"string bool", strings.Replace(goodMeta, `"has_vmlinux": false`, `"has_vmlinux": "false"`, 1), migrate.KindSchemaDrift, "has_vmlinux"},
		{"null bool", strings.Replace(goodMeta, `"vmlinux_stripped": false`, `"vmlinux_stripped": null`, 1), migrate.KindSchemaDrift, "vmlinux_stripped"},
		{"negative size", strings.Replace(goodMeta, `"source_vmlinux_size": null`, `"source_vmlinux_size": -1`, 1), migrate.KindSchemaDrift, "source_vmlinux_size"},
		{"fractional size", strings.Replace(goodMeta, `"source_vmlinux_size": null`, `"source_vmlinux_size": 1.5`, 1), migrate.KindSchemaDrift, "source_vmlinux_size"},
		{"number version", strings.Replace(goodMeta, `"6.14.2"`, `6`, 1), migrate.KindSchemaDrift, "version"},
		{"unknown source type", strings.Replace(goodMeta, `"tarball"`, `"svn"`, 1), migrate.KindSchemaDrift, "unknown variant `svn`"},
		{"source without type", strings.Replace(goodMeta, `"type": "tarball"`, `"ref": "x"`, 1), migrate.KindSchemaDrift, "missing field `type`"},
		{"source not object", strings.Replace(goodMeta, `{
    "type": "tarball"
  }`, `"tarball"`, 1), migrate.KindSchemaDrift, "invalid type"},
		{"duplicate key", strings.Replace(goodMeta, `"arch": "x86_64",`, `"arch": "x86_64", "arch": "aarch64",`, 1), migrate.KindSchemaDrift, "duplicate field `arch`"},
		{"not utf-8", "{\"arch\": \"\xff\"}", migrate.KindUnreadable, "UTF-8"},
	}
	prefix := map[string]string{
		migrate.KindTruncated: "metadata.json truncated: ", migrate.KindMalformed: "metadata.json malformed: ",
		migrate.KindSchemaDrift: "metadata.json schema drift: ", migrate.KindUnreadable: "metadata.json unreadable: ",
	}
	for _, tc := range cases {
		m, c := migrate.ParseMetadata([]byte(tc.text))
		if c == nil {
			t.Errorf("%s: parsed as %+v; want %s", tc.name, m, tc.kind)
			continue
		}
		if c.Kind != tc.kind || !strings.HasPrefix(c.Reason, prefix[tc.kind]) || !strings.Contains(c.Reason, tc.contains) {
			t.Errorf("%s: got %s %q; want %s with prefix %q containing %q", tc.name, c.Kind, c.Reason, tc.kind, prefix[tc.kind], tc.contains)
		}
		if k := migrate.ClassifyReason(c.Reason); k != c.Kind {
			t.Errorf("%s: ClassifyReason(%q) = %s; want %s", tc.name, c.Reason, k, c.Kind)
		}
	}
}

// Optional and payload keys may be absent; unknown keys are ignored; every
// field is read with its value.
func TestParseMetadataFields(t *testing.T) {
	m, c := migrate.ParseMetadata([]byte(goodMeta))
	if c != nil {
		t.Fatal(c)
	}
	want := &migrate.Metadata{Version: sp("6.14.2"), Source: migrate.Source{Type: "tarball"}, Arch: "x86_64",
		ImageName: "bzImage", ConfigHash: sp("1f2e3d4c"), BuiltAt: "2026-04-18T10:00:00Z", KtstrKconfigHash: sp("c0bd848c")}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("got %+v\nwant %+v", m, want)
	}
	minimal := `{"source":{"type":"local","future":1},"arch":"aarch64","image_name":"Image","built_at":"x",
		"has_vmlinux":true,"vmlinux_stripped":true,"new_field":{"a":[1]},"source_vmlinux_size":18446744073709551615,"source_vmlinux_mtime_secs":-5}`
	m, c = migrate.ParseMetadata([]byte(minimal))
	if c != nil {
		t.Fatal(c)
	}
	size, mtime := uint64(18446744073709551615), int64(-5)
	want = &migrate.Metadata{Source: migrate.Source{Type: "local"}, Arch: "aarch64", ImageName: "Image", BuiltAt: "x",
		HasVmlinux: true, VmlinuxStripped: true, SourceVmlinuxSize: &size, SourceVmlinuxMtimeSecs: &mtime}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("got %+v\nwant %+v", m, want)
	}
	git := `{"source":{"ref":"v6.15","type":"git","git_hash":null,"source_tree_path":"/ignored"},"arch":"x86_64","image_name":"bzImage","built_at":"b","has_vmlinux":false,"vmlinux_stripped":false}`
	if m, c = migrate.ParseMetadata([]byte(git)); c != nil {
		t.Fatal(c)
	}
	if (m.Source != migrate.Source{Type: "git", Ref: m.Source.Ref}) || m.Source.Ref == nil || *m.Source.Ref != "v6.15" {
		t.Fatalf("git source: %+v", m.Source)
	}
}

// The walk skips what ktstr's listing skips and classifies the entry-level
// classes (missing, unreadable, image_missing).
func TestReadLegacyWalk(t *testing.T) {
	root := t.TempDir()
	work := t.TempDir()
	image := filepath.Join(work, "bzImage")
	vmlinux := filepath.Join(work, "vmlinux")
	if err := os.WriteFile(image, []byte("image"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(vmlinux, []byte("vmlinux"), 0o644); err != nil {
		t.Fatal(err)
	}
	meta := legacy.Metadata{Source: legacy.Source{Type: "tarball"}, Arch: "x86_64", ImageName: "bzImage", BuiltAt: "2026-01-01T00:00:00Z"}
	for _, k := range []string{"good", "with-vmlinux", "no-image", "vmlinux-gone"} {
		v := ""
		if k != "good" {
			v = vmlinux
		}
		if _, err := legacy.Store(root, k, image, v, meta); err != nil {
			t.Fatal(err)
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Remove(filepath.Join(root, "no-image", "bzImage")))
	must(os.Remove(filepath.Join(root, "vmlinux-gone", "vmlinux")))
	must(os.Mkdir(filepath.Join(root, "stray"), 0o755))
	must(os.MkdirAll(filepath.Join(root, "dir-meta", "metadata.json"), 0o755))
	must(os.Mkdir(filepath.Join(root, "dangling"), 0o755))
	must(os.Symlink("/nonexistent", filepath.Join(root, "dangling", "metadata.json")))
	must(os.Mkdir(filepath.Join(root, ".hidden"), 0o755))
	must(os.Mkdir(filepath.Join(root, ".tmp-x-99999"), 0o755))
	must(os.WriteFile(filepath.Join(root, "plain-file"), nil, 0o644))
	must(os.Symlink(filepath.Join(root, "good"), filepath.Join(root, "linked")))
	must(os.Symlink("/nonexistent", filepath.Join(root, "dangling-link")))
	must(os.Mkdir(filepath.Join(root, "bad-\xff-name"), 0o755))

	got, err := migrate.ReadLegacy(root)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]string{}
	for _, e := range got {
		if e.Corrupt != nil {
			kinds[e.Key] = e.Corrupt.Kind
		} else {
			kinds[e.Key] = "valid"
		}
	}
	want := map[string]string{"good": "valid", "with-vmlinux": "valid", "no-image": "image_missing", "vmlinux-gone": "valid",
		"stray": "missing", "dir-meta": "unreadable", "dangling": "missing", "linked": "valid"}
	if !reflect.DeepEqual(kinds, want) {
		t.Fatalf("classified %v\nwant %v", kinds, want)
	}
	for _, e := range got {
		switch e.Key {
		case "good":
			if e.VmlinuxPath != "" || e.VmlinuxMissing || e.ImagePath != filepath.Join(root, "good", "bzImage") {
				t.Errorf("good: %+v", e)
			}
		case "with-vmlinux":
			if e.VmlinuxPath != filepath.Join(root, "with-vmlinux", "vmlinux") || e.VmlinuxMissing {
				t.Errorf("with-vmlinux: %+v", e)
			}
		case "vmlinux-gone":
			if e.VmlinuxPath != "" || !e.VmlinuxMissing {
				t.Errorf("vmlinux-gone: %+v", e)
			}
		case "no-image":
			if e.Corrupt.Reason != "image file bzImage missing from entry directory" || e.Metadata == nil {
				t.Errorf("no-image: %+v", e)
			}
		case "stray":
			if e.Corrupt.Reason != "metadata.json missing" {
				t.Errorf("stray: %q", e.Corrupt.Reason)
			}
		}
	}

	if got, err := migrate.ReadLegacy(filepath.Join(root, "absent")); err != nil || len(got) != 0 {
		t.Fatalf("missing root: %v, %v; want empty", got, err)
	}
}

func TestResolveKtstrRoot(t *testing.T) {
	cases := []struct {
		ktstr, xdg, home string
		unsetHome        bool
		want, errHas     string
	}{
		{ktstr: "rel/dir", xdg: "/x", home: "/h", want: "rel/dir"},
		{ktstr: "", xdg: "/x", home: "/h", want: "/x/ktstr/kernels"},
		{xdg: "relx", home: "/h", want: "relx/ktstr/kernels"},
		{home: "/h", want: "/h/.cache/ktstr/kernels"},
		{home: "//", want: "/.cache/ktstr/kernels"},
		{unsetHome: true, errHas: "HOME is unset"},
		{home: "", errHas: "HOME is set to the empty string"},
		{home: "/", errHas: "HOME is `/`"},
		{home: "tmp", errHas: `"tmp", which is not an absolute path`},
		{ktstr: "\xff", errHas: "non-UTF-8"},
	}
	for i, tc := range cases {
		t.Setenv("KTSTR_CACHE_DIR", tc.ktstr)
		t.Setenv("XDG_CACHE_HOME", tc.xdg)
		t.Setenv("HOME", tc.home)
		if tc.unsetHome {
			os.Unsetenv("HOME")
		}
		got, err := migrate.ResolveKtstrRoot()
		switch {
		case tc.errHas != "":
			if err == nil || !strings.Contains(err.Error(), tc.errHas) {
				t.Errorf("case %d: %q, %v; want error containing %q", i, got, err, tc.errHas)
			}
			if err != nil && !strings.Contains(err.Error(), "KTSTR_CACHE_DIR") && tc.ktstr == "" {
				t.Errorf("case %d: error does not name KTSTR_CACHE_DIR: %v", i, err)
			}
		case err != nil || got != tc.want:
			t.Errorf("case %d: %q, %v; want %q", i, got, err, tc.want)
		}
	}
}
