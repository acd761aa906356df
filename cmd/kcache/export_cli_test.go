package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kcache/kcache"
	"github.com/kcache/kcache/internal/legacy"
)

// kcache export writes entries that a reader of ktstr's layout lists as
// usable, with ktstr's metadata; a missing key is reported and exits 3.
func TestExportCLIReadableAsKtstrCache(t *testing.T) {
	root := t.TempDir()
	key := "6.14.2-tarball-x86_64-kcc0bd848c"
	if _, stderr, code := runIn(t, root, "store", key, "--image", cliSampleImage, "--vmlinux", cliSampleVmlinux,
		"--version", "6.14.2", "--arch", "x86_64", "--built-at", "2026-04-18T10:00:00Z"); code != 0 {
		t.Fatalf("store: exit %d\n%s", code, stderr)
	}
	dir := filepath.Join(t.TempDir(), "ktstr-cache")
	stdout, stderr, code := runIn(t, root, "export", key, dir, "--json")
	if code != 0 {
		t.Fatalf("export: exit %d\n%s", code, stderr)
	}
	var rep kcache.ExportReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("%v\n%s", err, stdout)
	}
	if rep.Dir != dir || len(rep.Exported) != 1 || rep.Exported[0].Key != key || rep.Exported[0].Linked || len(rep.Failed) != 0 {
		t.Fatalf("report %s", stdout)
	}
	l, err := legacy.List(dir)
	if err != nil || len(l) != 1 || l[0].Entry == nil {
		t.Fatalf("the export does not list as a ktstr cache: %+v %v", l, err)
	}
	m := l[0].Entry.Meta
	if *m.Version != "6.14.2" || m.Source.Type != "tarball" || !m.HasVmlinux || !m.VmlinuxStripped || m.BuiltAt != "2026-04-18T10:00:00Z" {
		t.Errorf("metadata read back: %+v", m)
	}

	_, _, code = runIn(t, root, "export", key, "absent", dir)
	if code != exitNotFound {
		t.Errorf("export of a missing key: exit %d, want %d", code, exitNotFound)
	}
	// An invalid key outranks a missing one (the exit code is the most
	// serious failure), and every key is still tried.
	if stdout, _, code := runIn(t, root, "export", "absent", "..", key, dir); code != exitUsage || !strings.Contains(stdout, key) {
		t.Errorf("export of a missing, an invalid and a good key: exit %d, want %d; stdout %q", code, exitUsage, stdout)
	}
	if _, _, code = runIn(t, root, "export", dir); code != exitUsage {
		t.Errorf("export without a key: exit %d, want %d", code, exitUsage)
	}
	if _, _, code = runIn(t, root, "export", "--all", dir); code != 0 {
		t.Errorf("export --all: exit %d", code)
	}
}
