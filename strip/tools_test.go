package strip_test

import (
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// run runs a client tool and returns stdout, stderr and its error.
func run(t testing.TB, name string, args ...string) (string, string, error) {
	t.Helper()
	var o, e bytes.Buffer
	cmd := exec.Command(tool(t, name), args...)
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	return o.String(), e.String(), err
}

// btfTypes counts the types bpftool dumps from a file's .BTF.
func btfTypes(t testing.TB, path string) int {
	t.Helper()
	out, stderr, err := run(t, "bpftool", "btf", "dump", "file", path, "format", "raw")
	if err != nil {
		t.Fatalf("bpftool btf dump file %s: %v\n%s", path, err, stderr)
	}
	return len(regexp.MustCompile(`(?m)^\[\d+\] `).FindAllString(out, -1))
}

// checkClients runs the client tools on a stripped output.
func checkClients(t *testing.T, inPath, outPath string) {
	in, err := elf.Open(inPath)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if _, stderr, err := run(t, "readelf", "-hSlW", outPath); err != nil || stderr != "" {
		t.Errorf("readelf -hSlW: %v, stderr %q", err, stderr)
	}
	hasNotes := false
	for _, s := range in.Sections {
		hasNotes = hasNotes || s.Type == elf.SHT_NOTE
	}
	if hasNotes {
		out, stderr, err := run(t, "readelf", "-n", outPath)
		if err != nil || stderr != "" {
			t.Errorf("readelf -n: %v, stderr %q", err, stderr)
		}
		if in.Type == elf.ET_EXEC && !strings.Contains(out, "Build ID") {
			t.Errorf("readelf -n shows no build ID:\n%s", out)
		}
	}
	var schedule *elf.Symbol
	syms, _ := in.Symbols()
	for i := range syms {
		if syms[i].Name == "schedule" {
			schedule = &syms[i]
		}
	}
	if schedule != nil {
		out, _, err := run(t, "nm", outPath)
		if err != nil || !regexp.MustCompile(`(?m) T schedule$`).MatchString(out) {
			t.Errorf("nm does not list schedule as T (%v):\n%s", err, out)
		}
		if in.Type != elf.ET_REL && schedule.Size > 1 {
			addr := fmt.Sprintf("%#x", schedule.Value+schedule.Size/2)
			out, stderr, err := run(t, "addr2line", "-f", "-e", outPath, addr)
			if err != nil || strings.SplitN(out, "\n", 2)[0] != "schedule" {
				t.Errorf("addr2line -f %s: %v %q %q; want schedule", addr, err, out, stderr)
			}
		}
	}
	if s := in.Section(".BTF"); s != nil {
		if got, want := btfTypes(t, outPath), btfTypes(t, inPath); got != want || got == 0 {
			t.Errorf("bpftool sees %d BTF types in the output, %d in the input", got, want)
		}
		if in.ByteOrder.String() == "LittleEndian" {
			// pahole reads BTF in the host's byte order only.
			if out, stderr, err := run(t, "pahole", "-F", "btf", outPath); err != nil || strings.TrimSpace(out) == "" {
				t.Errorf("pahole -F btf: %v %q %q", err, out, stderr)
			}
		}
	}
}

func writeStripped(t *testing.T, path string) string {
	t.Helper()
	out, _ := stripFile(t, path)
	p := filepath.Join(t.TempDir(), "out")
	if err := os.WriteFile(p, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestClientToolsOnFixtures(t *testing.T) {
	for _, path := range fixtures(t) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			checkClients(t, path, writeStripped(t, path))
		})
	}
}

func TestClientToolsOnRealVmlinux(t *testing.T) {
	path := realVmlinux(t, true)
	out := writeStripped(t, path)
	checkClients(t, path, out)
	if o, _, err := run(t, "pahole", "-F", "btf", "-C", "task_struct", out); err != nil || !strings.Contains(o, "struct task_struct {") {
		t.Errorf("pahole -F btf -C task_struct: %v", err)
	}
}

// runCmd runs a command and returns its combined output.
func runCmd(name string, args ...string) ([]byte, error) {
	return exec.Command(name, args...).CombinedOutput()
}
