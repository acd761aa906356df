package main

import (
	"bytes"
	"debug/elf"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const fixtureX86 = "../../testdata/elf/vmlinux-x86_64"

// expectedBuildID reads a fixture's build ID from testdata/elf/EXPECTED.json.
func expectedBuildID(t *testing.T, fixture string) string {
	t.Helper()
	data, err := os.ReadFile("../../testdata/elf/EXPECTED.json")
	if err != nil {
		t.Fatal(err)
	}
	var exp struct {
		Fixtures []struct {
			File    string `json:"file"`
			BuildID string `json:"build_id"`
		} `json:"fixtures"`
	}
	if err := json.Unmarshal(data, &exp); err != nil {
		t.Fatal(err)
	}
	id := ""
	for _, f := range exp.Fixtures {
		if f.File == fixture {
			id = f.BuildID
		}
	}
	if id == "" {
		t.Fatalf("no build_id for %s in EXPECTED.json", fixture)
	}
	return id
}

// TestCLIStoreStripsAndRecords: store strips the vmlinux, records the build
// ID and CONFIG_HZ, and config, lookup --build-id find them.
func TestCLIStoreStripsAndRecords(t *testing.T) {
	root := t.TempDir()
	img := cliWrite(t, t.TempDir(), "bzImage", "boot image")
	_, stderr, code := runIn(t, root, "store", "k", "--image", img, "--vmlinux", fixtureX86)
	if code != 0 || stderr != "" {
		t.Fatalf("store: exit %d, stderr %q", code, stderr)
	}
	stdout, stderr, code := runIn(t, root, "show", "--json", "k")
	if code != 0 {
		t.Fatalf("show: %d %s", code, stderr)
	}
	var e struct {
		Stripped    bool    `json:"vmlinux_stripped"`
		Size        int64   `json:"vmlinux_size"`
		Original    int64   `json:"vmlinux_original_size"`
		BuildID     *string `json:"build_id"`
		ConfigHZ    *uint64 `json:"config_hz"`
		VmlinuxPath string  `json:"vmlinux_path"`
	}
	if err := json.Unmarshal([]byte(stdout), &e); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(fixtureX86)
	want := expectedBuildID(t, "vmlinux-x86_64")
	if !e.Stripped || e.Size >= fi.Size() || e.Original != fi.Size() || e.BuildID == nil || *e.BuildID != want || e.ConfigHZ == nil || *e.ConfigHZ != 250 {
		t.Fatalf("entry %+v (build id %v, hz %v); want stripped, smaller, build id %s, hz 250", e, e.BuildID, e.ConfigHZ, want)
	}
	if _, err := elf.Open(e.VmlinuxPath); err != nil {
		t.Fatalf("cached vmlinux does not parse: %v", err)
	}
	// lookup of a stripped entry does not warn.
	if _, stderr, code := runIn(t, root, "lookup", "k"); code != 0 || stderr != "" {
		t.Errorf("lookup: exit %d stderr %q", code, stderr)
	}
	out, _, code := runIn(t, root, "config", "k", "--get", "HZ")
	if code != 0 || out != "250\n" {
		t.Errorf("config --get HZ = %q (exit %d)", out, code)
	}
	out, _, code = runIn(t, root, "config", "k", "--get", "CONFIG_LOCALVERSION")
	if code != 0 || !strings.Contains(out, "kcache") {
		t.Errorf("config --get CONFIG_LOCALVERSION = %q (exit %d)", out, code)
	}
	if _, _, code = runIn(t, root, "config", "k", "--get", "NOT_AN_OPTION"); code != exitNotFound {
		t.Errorf("config --get of an unset option: exit %d, want 3", code)
	}
	full, _, _ := runIn(t, root, "config", "k")
	if want, _ := os.ReadFile("../../testdata/elf/config"); full != string(want) {
		t.Errorf("config = %q; want testdata/elf/config", full)
	}
	paths, _, code := runIn(t, root, "lookup", "--build-id", strings.ToUpper(want))
	if code != 0 || !strings.Contains(paths, e.VmlinuxPath) {
		t.Errorf("lookup --build-id = %q (exit %d)", paths, code)
	}
	if _, stderr, code := runIn(t, root, "lookup", "--build-id", "00112233"); code != exitNotFound || !strings.Contains(stderr, "00112233") {
		t.Errorf("lookup of an unknown build ID: exit %d %q", code, stderr)
	}
	if _, _, code := runIn(t, root, "lookup", "--build-id", "xyz"); code != exitUsage {
		t.Errorf("lookup --build-id xyz: exit %d, want 2", code)
	}
	if _, _, code := runIn(t, root, "lookup", "k", "--build-id", want); code != exitUsage {
		t.Errorf("lookup KEY --build-id: exit %d, want 2", code)
	}
	// A kernel without IKCONFIG: a clear error.
	runIn(t, root, "store", "noik", "--image", img, "--vmlinux", "../../testdata/elf/vmlinux-x86_64-noikconfig")
	if _, stderr, code := runIn(t, root, "config", "noik"); code != exitError || !strings.Contains(stderr, "CONFIG_IKCONFIG") {
		t.Errorf("config of a kernel without IKCONFIG: exit %d %q", code, stderr)
	}
	runIn(t, root, "store", "novml", "--image", img)
	if _, stderr, code := runIn(t, root, "config", "novml"); code != exitError || !strings.Contains(stderr, "no vmlinux") {
		t.Errorf("config of an entry without vmlinux: exit %d %q", code, stderr)
	}
}

// TestCLIStoreFallsBackToRaw: a vmlinux that cannot be stripped is stored
// whole, with one warning at store time naming the key and the reason.
func TestCLIStoreFallsBackToRaw(t *testing.T) {
	root := t.TempDir()
	dir := t.TempDir()
	img := cliWrite(t, dir, "bzImage", "boot image")
	// An ELF without a symbol table: both rewrites refuse it.
	data, err := os.ReadFile(fixtureX86)
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	idx := slices.IndexFunc(f.Sections, func(s *elf.Section) bool { return s.Type == elf.SHT_SYMTAB })
	if idx < 0 {
		t.Fatalf("%s has no symbol table", fixtureX86)
	}
	shoff := f.ByteOrder.Uint64(data[40:])
	data[shoff+uint64(idx*64)+4] = 1 // SHT_PROGBITS
	vml := cliWrite(t, dir, "vmlinux", string(data))
	_, stderr, code := runIn(t, root, "store", "raw", "--image", img, "--vmlinux", vml)
	if code != 0 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, `"raw"`) || !strings.Contains(stderr, "symbol table") {
		t.Fatalf("store: exit %d, stderr %q; want one warning naming the key and the reason", code, stderr)
	}
	stdout, _, _ := runIn(t, root, "lookup", "raw")
	got, _ := os.ReadFile(strings.Split(stdout, "\n")[1])
	if !bytes.Equal(got, data) {
		t.Error("the raw fallback did not store the vmlinux byte for byte")
	}
}

func TestCLIStrip(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	stdout, stderr, code := runIn(t, dir, "strip", fixtureX86, "-o", out, "--json")
	if code != 0 {
		t.Fatalf("strip: exit %d %s", code, stderr)
	}
	var r map[string]any
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"input", "output", "mode", "input_size", "output_size", "sections_kept", "sections_nobits", "sections_deleted", "symbols_in", "symbols_out", "elapsed_seconds"} {
		if _, ok := r[k]; !ok {
			t.Errorf("strip --json lacks %q: %s", k, stdout)
		}
	}
	fi, err := os.Stat(out)
	if err != nil || float64(fi.Size()) != r["output_size"].(float64) || r["mode"] != "keep-list" {
		t.Fatalf("output %v (%v); report %s", fi, err, stdout)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("strip left temporary files: %v", ents)
	}
	// Without -o nothing is written; the report still comes.
	stdout, _, code = runIn(t, dir, "strip", fixtureX86)
	if code != 0 || !strings.Contains(stdout, "(not written)") || !strings.Contains(stdout, "keep-list") {
		t.Errorf("strip without -o: exit %d %q", code, stdout)
	}
	// A non-ELF input is an error and leaves the old output alone.
	bad := cliWrite(t, dir, "bad", "not an elf")
	before, _ := os.ReadFile(out)
	if _, stderr, code := runIn(t, dir, "strip", bad, "-o", out); code != exitError || !strings.Contains(stderr, "not an ELF") {
		t.Errorf("strip of a non-ELF file: exit %d %q", code, stderr)
	}
	if after, _ := os.ReadFile(out); !bytes.Equal(before, after) {
		t.Error("a failed strip changed the existing output")
	}
	if _, stderr, code := runIn(t, dir, "strip", fixtureX86, "-o", dir); code != exitError || !strings.Contains(stderr, "not a regular file") {
		t.Errorf("strip -o DIR: exit %d %q", code, stderr)
	}
}

// TestCLIConfigHZ: config_hz comes from the kernel's embedded config, else
// from --config, else it is null.
func TestCLIConfigHZ(t *testing.T) {
	root := t.TempDir()
	dir := t.TempDir()
	img := cliWrite(t, dir, "bzImage", "boot image")
	cfg := cliWrite(t, dir, ".config", "CONFIG_HZ_1000=y\nCONFIG_HZ=1000\n")
	for _, tc := range []struct {
		key, vmlinux string
		config       bool
		want         string
	}{
		{"embedded-wins", fixtureX86, true, "250"},
		{"from-dot-config", "../../testdata/elf/vmlinux-x86_64-noikconfig", true, "1000"},
		{"none", "../../testdata/elf/vmlinux-x86_64-noikconfig", false, "null"},
	} {
		args := []string{"store", tc.key, "--image", img, "--vmlinux", tc.vmlinux, "--json"}
		if tc.config {
			args = append(args, "--config", cfg)
		}
		out, stderr, code := runIn(t, root, args...)
		if code != 0 {
			t.Fatalf("%s: exit %d %s", tc.key, code, stderr)
		}
		var e map[string]json.RawMessage
		if err := json.Unmarshal([]byte(out), &e); err != nil {
			t.Fatal(err)
		}
		if got := string(e["config_hz"]); got != tc.want {
			t.Errorf("%s: config_hz = %s, want %s", tc.key, got, tc.want)
		}
	}
}
