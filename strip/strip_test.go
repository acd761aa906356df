package strip_test

import (
	"bytes"
	"debug/elf"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/kcache/kcache/strip"
)

// requireTools is true in CI (CI=true) or when KCACHE_REQUIRE_TOOLS=1: a
// missing client tool or real kernel then fails the test instead of
// skipping it.
var requireTools = os.Getenv("CI") == "true" || os.Getenv("KCACHE_REQUIRE_TOOLS") == "1"

// tool returns the path of a client tool, skipping (or failing in CI) when
// it is not installed.
func tool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if requireTools {
			t.Fatalf("%s is not installed; .ci/run installs it (binutils, bpftool, dwarves, elfutils)", name)
		}
		t.Skipf("%s is not installed", name)
	}
	return p
}

// realVmlinux returns the path of a real distro vmlinux: KCACHE_REAL_VMLINUX,
// else the one bench/fetch-kernel.sh leaves in its cache.
func realVmlinux(t testing.TB, require bool) string {
	t.Helper()
	p := os.Getenv("KCACHE_REAL_VMLINUX")
	if p == "" {
		home, _ := os.UserHomeDir()
		p = filepath.Join(home, ".cache/kcache-bench/x/usr/lib/debug/boot/vmlinux-6.1.0-50-cloud-amd64")
	}
	if _, err := os.Stat(p); err != nil {
		if require && requireTools {
			t.Fatalf("no real vmlinux at %s (bench/fetch-kernel.sh fetches one; set KCACHE_REAL_VMLINUX): %v", p, err)
		}
		t.Skipf("no real vmlinux at %s; run bench/fetch-kernel.sh or set KCACHE_REAL_VMLINUX", p)
	}
	return p
}

// fixtures lists the committed ELF fixtures.
func fixtures(t testing.TB) []string {
	t.Helper()
	paths, _ := filepath.Glob("../testdata/elf/vmlinux-*")
	objs, _ := filepath.Glob("../testdata/elf/obj-*.o")
	paths = append(append(paths, objs...), "../testdata/sample/vmlinux")
	sort.Strings(paths)
	return paths
}

// stripFile strips path and returns the output bytes.
func stripFile(t testing.TB, path string) ([]byte, strip.Result) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	res, err := strip.Strip(f, fi.Size(), &out)
	if err != nil {
		t.Fatalf("Strip(%s): %v", path, err)
	}
	if res.OutputSize != int64(out.Len()) || res.InputSize != fi.Size() {
		t.Fatalf("Result sizes %d/%d, wrote %d of %d", res.OutputSize, res.InputSize, out.Len(), fi.Size())
	}
	return out.Bytes(), res
}

type symKey struct {
	name, section string
	value, size   uint64
	info          byte
}

// symbolsBySection returns a file's symbols with their section names.
func symbolsBySection(t testing.TB, f *elf.File) []symKey {
	t.Helper()
	syms, err := f.Symbols()
	if err != nil {
		t.Fatalf("symbols: %v", err)
	}
	var out []symKey
	for _, s := range syms {
		sec := ""
		switch {
		case s.Section == elf.SHN_UNDEF:
			sec = "UNDEF"
		case s.Section >= elf.SHN_LORESERVE:
			sec = s.Section.String()
		case int(s.Section) < len(f.Sections):
			sec = f.Sections[s.Section].Name
		}
		out = append(out, symKey{s.Name, sec, s.Value, s.Size, s.Info})
	}
	return out
}

func sectionData(t testing.TB, f *elf.File, name string) []byte {
	t.Helper()
	s := f.Section(name)
	if s == nil || s.Type == elf.SHT_NOBITS {
		return nil
	}
	b, err := s.Data()
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return b
}

// checkStripped asserts the acceptance invariants of one strip.
func checkStripped(t *testing.T, inPath string, out []byte, res strip.Result) {
	t.Helper()
	in, err := elf.Open(inPath)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	o, err := elf.NewFile(bytes.NewReader(out))
	if err != nil {
		t.Fatalf("debug/elf cannot parse the output: %v", err)
	}
	if res.Mode != strip.KeepList {
		t.Errorf("mode %s (%s); want keep-list", res.Mode, res.KeepListError)
	}
	fi, _ := os.Stat(inPath)
	if int64(len(out)) >= fi.Size() {
		t.Errorf("output %d bytes is not smaller than the input's %d", len(out), fi.Size())
	}
	if o.Class != in.Class || o.ByteOrder != in.ByteOrder || o.Type != in.Type || o.Machine != in.Machine {
		t.Errorf("header changed: %v %v %v %v", o.Class, o.ByteOrder, o.Type, o.Machine)
	}
	outNames := map[string]*elf.Section{}
	for _, s := range o.Sections {
		outNames[s.Name] = s
		if strings.HasPrefix(s.Name, ".debug_") || s.Name == ".comment" || s.Name == ".BTF.ext" {
			t.Errorf("section %s survived", s.Name)
		}
		switch s.Type {
		case elf.SHT_REL, elf.SHT_RELA, 19, 0x40000014: // 19: SHT_RELR
			t.Errorf("relocation section %s survived", s.Name)
		}
	}
	// Every symbol whose section survived is there, unchanged.
	want := map[symKey]int{}
	for _, s := range symbolsBySection(t, in) {
		if s.section == "UNDEF" || strings.HasPrefix(s.section, "SHN_") || outNames[s.section] != nil {
			want[s]++
		}
	}
	got := map[symKey]int{}
	for _, s := range symbolsBySection(t, o) {
		got[s]++
	}
	for s, n := range want {
		if got[s] != n {
			t.Errorf("symbol %+v: %d in output, want %d", s, got[s], n)
		}
	}
	if len(got) != len(want) {
		t.Errorf("output has %d distinct symbols, want %d", len(got), len(want))
	}
	// Allocated sections that survive keep address, size and flags.
	for _, s := range in.Sections {
		if os := outNames[s.Name]; os != nil && s.Flags&elf.SHF_ALLOC != 0 {
			if os.Addr != s.Addr || os.Size != s.Size || os.Flags != s.Flags {
				t.Errorf("section %s: addr/size/flags %#x/%d/%v, want %#x/%d/%v", s.Name, os.Addr, os.Size, os.Flags, s.Addr, s.Size, s.Flags)
			}
		}
	}
	for _, name := range []string{".BTF", ".rodata"} {
		if a, b := sectionData(t, in, name), sectionData(t, o, name); !bytes.Equal(a, b) {
			t.Errorf("%s differs (%d vs %d bytes)", name, len(a), len(b))
		}
	}
	inFile, _ := os.ReadFile(inPath)
	cfgIn, errIn := strip.IKConfig(inFile)
	cfgOut, errOut := strip.IKConfig(out)
	if cfgIn != cfgOut || (errIn == nil) != (errOut == nil) {
		t.Errorf("IKCONFIG differs: %q (%v) vs %q (%v)", cfgIn, errIn, cfgOut, errOut)
	}
	idIn, err1 := strip.BuildID(bytes.NewReader(inFile), int64(len(inFile)))
	idOut, err2 := strip.BuildID(bytes.NewReader(out), int64(len(out)))
	if err1 != nil || err2 != nil || idIn != idOut || idOut != res.BuildID {
		t.Errorf("build ID %q (%v) -> %q (%v), result %q", idIn, err1, idOut, err2, res.BuildID)
	}
}

func TestStripFixtures(t *testing.T) {
	for _, path := range fixtures(t) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			out, res := stripFile(t, path)
			checkStripped(t, path, out, res)
			// Stripping is deterministic and idempotent in what it keeps.
			again, _ := stripFile(t, path)
			if !bytes.Equal(out, again) {
				t.Error("two strips of the same input differ")
			}
		})
	}
}

func TestStripRealVmlinux(t *testing.T) {
	path := realVmlinux(t, true)
	out, res := stripFile(t, path)
	checkStripped(t, path, out, res)
	if res.SymbolsOut < 118000 || len(out) > 16<<20 {
		t.Errorf("real vmlinux: %d symbols, %d bytes; want >= 118000 and <= 16 MiB", res.SymbolsOut, len(out))
	}
}

func TestStripRejectsNonELF(t *testing.T) {
	for _, data := range [][]byte{nil, []byte("hello"), []byte("\x7fELF"), bytes.Repeat([]byte{0}, 4096)} {
		_, err := strip.Strip(bytes.NewReader(data), int64(len(data)), &bytes.Buffer{})
		if err == nil {
			t.Errorf("Strip(%q) succeeded", data)
		}
	}
	_, err := strip.Strip(bytes.NewReader([]byte("MZ\x90\x00 not elf at all....")), 24, &bytes.Buffer{})
	if !errors.Is(err, strip.ErrNotELF) {
		t.Errorf("Strip of a PE header = %v; want ErrNotELF", err)
	}
}

func TestIKConfig(t *testing.T) {
	for _, path := range fixtures(t) {
		data, _ := os.ReadFile(path)
		cfg, err := strip.IKConfig(data)
		if strings.Contains(path, "noikconfig") || strings.Contains(path, "sample") {
			if !errors.Is(err, strip.ErrNoIKConfig) {
				t.Errorf("%s: IKConfig = %v; want ErrNoIKConfig", path, err)
			}
			continue
		}
		if strings.Contains(path, "obj-") {
			continue
		}
		want, rerr := os.ReadFile("../testdata/elf/config")
		if rerr != nil {
			t.Fatal(rerr)
		}
		if err != nil || cfg != string(want) {
			t.Errorf("%s: IKConfig = %q, %v; want the text of testdata/elf/config", path, cfg, err)
		}
		if hz, ok := strip.ConfigValue(cfg, "HZ"); !ok || hz != "250" {
			t.Errorf("%s: CONFIG_HZ = %q, %v", path, hz, ok)
		}
	}
	for cfg, want := range map[string][2]string{
		"CONFIG_HZ=100\n": {"HZ", "100"},
		"# CONFIG_HZ_250 is not set\nCONFIG_HZ=300": {"CONFIG_HZ", "300"},
		"CONFIG_LOCALVERSION=\"-x\"\n":              {"LOCALVERSION", `"-x"`},
		"  CONFIG_A=y  \n":                          {"A", "y"},
		// A line longer than any scanner buffer does not hide what follows.
		"# " + strings.Repeat("x", 2<<20) + "\nCONFIG_HZ=1000\n": {"HZ", "1000"},
	} {
		if got, ok := strip.ConfigValue(cfg, want[0]); !ok || got != want[1] {
			if len(cfg) > 80 {
				cfg = cfg[:40] + "..." + cfg[len(cfg)-40:]
			}
			t.Errorf("ConfigValue(%q, %s) = %q, %v; want %q", cfg, want[0], got, ok, want[1])
		}
	}
	for name, want := range map[string]bool{"HZ_250": true, "FOO": false, "HZ": false} {
		if v, ok := strip.ConfigValue("# CONFIG_FOO is not set\nCONFIG_HZ_250=y\n", name); ok != want || (ok && v != "y") {
			t.Errorf("ConfigValue(%s) = %q, %v; want found %v", name, v, ok, want)
		}
	}
}
