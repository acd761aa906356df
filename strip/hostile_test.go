package strip_test

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/kcache/kcache/strip"
)

// mustNotCrash strips data and requires either an error or an output that
// debug/elf parses, and an allocation bounded by the input's size.
func mustNotCrash(t *testing.T, what string, data []byte) error {
	t.Helper()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	var out bytes.Buffer
	_, err := strip.Strip(bytes.NewReader(data), int64(len(data)), &out)
	runtime.ReadMemStats(&after)
	if err == nil {
		if _, perr := elf.NewFile(bytes.NewReader(out.Bytes())); perr != nil {
			t.Errorf("%s: Strip succeeded but its output does not parse: %v", what, perr)
		}
	} else if out.Len() != 0 {
		t.Errorf("%s: Strip failed (%v) after writing %d bytes", what, err, out.Len())
	}
	// Allocation grows with the input (headers, kept bytes, the output);
	// a hostile header must not make it grow with a number it claims.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16*uint64(len(data))+4<<20 {
		t.Errorf("%s: allocated %d bytes for a %d-byte input", what, alloc, len(data))
	}
	return err
}

// elf64 describes where header fields of an ELF64 little-endian file are.
type elf64 struct {
	data         []byte
	shoff, phoff uint64
	shnum, phnum int
	shentsize    int
	sections     map[string]int // name -> index
}

func load64(t *testing.T, path string) elf64 {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if f.Class != elf.ELFCLASS64 || f.ByteOrder != binary.LittleEndian {
		t.Fatalf("%s is not ELF64 LE", path)
	}
	le := binary.LittleEndian
	e := elf64{data: data, phoff: le.Uint64(data[32:]), shoff: le.Uint64(data[40:]),
		phnum: int(le.Uint16(data[56:])), shentsize: int(le.Uint16(data[58:])), shnum: int(le.Uint16(data[60:])),
		sections: map[string]int{}}
	for i, s := range f.Sections {
		e.sections[s.Name] = i
	}
	return e
}

// patched returns a copy with a little-endian value written at off.
func (e elf64) patched(off uint64, size int, v uint64) []byte {
	d := append([]byte{}, e.data...)
	switch size {
	case 1:
		d[off] = byte(v)
	case 2:
		binary.LittleEndian.PutUint16(d[off:], uint16(v))
	case 4:
		binary.LittleEndian.PutUint32(d[off:], uint32(v))
	case 8:
		binary.LittleEndian.PutUint64(d[off:], v)
	}
	return d
}

// field returns the file offset of a section header field (ELF64 layout).
func (e elf64) field(section string, off uint64) uint64 {
	return e.shoff + uint64(e.sections[section]*e.shentsize) + off
}

const (
	shName, shType, shFlags, shAddr, shOffset, shSize, shLink, shInfo, shAlign, shEntsize = 0, 4, 8, 16, 24, 32, 40, 44, 48, 56
)

func TestHostileTruncations(t *testing.T) {
	e := load64(t, "../testdata/elf/vmlinux-x86_64")
	cuts := map[uint64]bool{}
	for i := uint64(0); i <= 64; i++ {
		cuts[i] = true // every byte of the ELF header
	}
	for i := 0; i <= e.phnum; i++ {
		cuts[e.phoff+uint64(i*56)] = true
	}
	for i := 0; i <= e.shnum; i++ {
		cuts[e.shoff+uint64(i*e.shentsize)] = true
		cuts[e.shoff+uint64(i*e.shentsize)+1] = true
	}
	f, _ := elf.NewFile(bytes.NewReader(e.data))
	for _, s := range f.Sections {
		cuts[s.Offset] = true
		cuts[s.Offset+s.FileSize-1] = true
	}
	failed := 0
	for n := range cuts {
		if n >= uint64(len(e.data)) {
			continue
		}
		if mustNotCrash(t, "truncated", e.data[:n]) != nil {
			failed++
		}
	}
	if failed < len(cuts)/2 {
		t.Errorf("only %d of %d truncations were refused", failed, len(cuts))
	}
}

func TestHostileHeaders(t *testing.T) {
	e := load64(t, "../testdata/elf/vmlinux-x86_64")
	size := uint64(len(e.data))
	cases := map[string][]byte{
		"section table past EOF":         e.patched(40, 8, size-10),
		"section table offset overflows": e.patched(40, 8, ^uint64(0)-5),
		"e_shnum huge":                   e.patched(60, 2, 0xfeff),

		"e_shstrndx out of range":     e.patched(62, 2, uint64(e.shnum)+5),
		"e_shentsize too small":       e.patched(58, 2, 10),
		"e_phnum huge":                e.patched(56, 2, 0xfffe),
		"e_phoff past EOF":            e.patched(32, 8, size+100),
		"class 3":                     e.patched(4, 1, 3),
		"data encoding 0":             e.patched(5, 1, 0),
		"version 2":                   e.patched(6, 1, 2),
		"symtab offset overflows":     e.patched(e.field(".symtab", shOffset), 8, ^uint64(0)-100),
		"symtab past EOF":             e.patched(e.field(".symtab", shSize), 8, size),
		"symtab wrong entsize":        e.patched(e.field(".symtab", shEntsize), 8, 23),
		"symtab size not a multiple":  e.patched(e.field(".symtab", shSize), 8, 24*3+5),
		"symtab locals past the end":  e.patched(e.field(".symtab", shInfo), 4, 1<<30),
		"symtab link out of range":    e.patched(e.field(".symtab", shLink), 4, 1<<20),
		"BTF bad alignment":           e.patched(e.field(".BTF", shAlign), 8, 3),
		"BTF size huge":               e.patched(e.field(".BTF", shSize), 8, 1<<62),
		"shstrtab past EOF":           e.patched(e.field(".shstrtab", shOffset), 8, size-1),
		"section name offset outside": e.patched(e.field(".text", shName), 4, 1<<31),
		"PT_NOTE past EOF":            e.patched(e.phoff+4*56+32, 8, 1<<50),
	}
	// An unterminated name table: cut its size so the last name loses its NUL.
	cases["shstrtab unterminated"] = e.patched(e.field(".shstrtab", shSize), 8, uint64(sectionSize(t, e, ".shstrtab")-1))
	// Every kept section claims the whole file: the overlap bound must hold.
	d := append([]byte{}, e.data...)
	for _, name := range []string{".rodata", ".BTF", ".notes", ".strtab"} {
		if _, ok := e.sections[name]; ok {
			binary.LittleEndian.PutUint64(d[e.field(name, shOffset):], 0)
			binary.LittleEndian.PutUint64(d[e.field(name, shSize):], size)
		}
	}
	cases["kept sections overlap"] = d
	// Extended numbering claiming 2^40 sections.
	d = e.patched(60, 2, 0)
	binary.LittleEndian.PutUint64(d[e.shoff+shSize:], 1<<40)
	cases["e_shnum zero, sh0 size huge"] = d
	// .rodata claims the whole file, on top of the other kept sections.
	d = e.patched(e.field(".rodata", shOffset), 8, 0)
	binary.LittleEndian.PutUint64(d[e.field(".rodata", shSize):], size)
	cases["rodata overlaps everything"] = d
	// A symbol pointing at a section that does not exist.
	f, _ := elf.NewFile(bytes.NewReader(e.data))
	st := f.Section(".symtab")
	cases["symbol section out of range"] = e.patched(st.Offset+24+6, 2, 0xfe00)
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			if err := mustNotCrash(t, name, data); err == nil {
				switch name {
				case "e_phnum huge", "PT_NOTE past EOF", "section name offset outside":
					// tolerable: dropped/rewritten parts are not trusted
				default:
					t.Errorf("%s: accepted", name)
				}
			}
		})
	}
}

func sectionSize(t *testing.T, e elf64, name string) int {
	f, _ := elf.NewFile(bytes.NewReader(e.data))
	return int(f.Section(name).Size)
}

// TestRawFallbackInputs: a file with no symbol table cannot be stripped by
// the keep-list rewrite; the debug-only rewrite must still refuse it or
// produce a parseable file, never a broken one.
func TestNoSymtabIsRefused(t *testing.T) {
	e := load64(t, "../testdata/elf/vmlinux-x86_64")
	d := e.patched(e.field(".symtab", shType), 4, 1) // SHT_PROGBITS
	if err := mustNotCrash(t, "no symtab", d); err == nil {
		t.Error("a file without a symbol table was stripped")
	}
}

// shortAt is an input whose read at off returns half the bytes asked for
// and io.EOF, as a file truncated while it is being stripped does.
type shortAt struct {
	*bytes.Reader
	off int64
}

func (r shortAt) ReadAt(p []byte, off int64) (int, error) {
	if off != r.off || len(p) < 2 {
		return r.Reader.ReadAt(p, off)
	}
	n, _ := r.Reader.ReadAt(p[:len(p)/2], off)
	return n, io.EOF
}

// TestShortReadIsAnError: a read that ends early with io.EOF is an error,
// never a kept section whose tail is left as zeros. Here the keep-list
// rewrite, which reads .rodata on its own, must fail; the debug-only one
// reads .rodata as part of the loaded image and keeps it byte for byte.
func TestShortReadIsAnError(t *testing.T) {
	e := load64(t, "../testdata/elf/vmlinux-x86_64")
	f, err := elf.NewFile(bytes.NewReader(e.data))
	if err != nil {
		t.Fatal(err)
	}
	ro := f.Section(".rodata")
	want, err := ro.Data()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	res, err := strip.Strip(shortAt{bytes.NewReader(e.data), int64(ro.Offset)}, int64(len(e.data)), &out)
	if err != nil {
		return
	}
	if res.Mode != strip.DebugOnly {
		t.Errorf("a short read of .rodata gave a %s strip; want the keep-list rewrite to fail", res.Mode)
	}
	o, err := elf.NewFile(bytes.NewReader(out.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if got := sectionData(t, o, ".rodata"); !bytes.Equal(got, want) {
		t.Errorf("%s strip of a short read: .rodata differs from the input's (%d bytes, want %d)", res.Mode, len(got), len(want))
	}
}

// TestIKConfigELFUnreadableRodata: a .rodata that cannot be read is a
// malformed file, not a kernel built without CONFIG_IKCONFIG.
func TestIKConfigELFUnreadableRodata(t *testing.T) {
	e := load64(t, "../testdata/elf/vmlinux-x86_64")
	d := e.patched(e.field(".rodata", shOffset), 8, uint64(len(e.data))-1)
	_, err := strip.IKConfigELF(bytes.NewReader(d), int64(len(d)))
	var fe *strip.FormatError
	if errors.Is(err, strip.ErrNoIKConfig) || !errors.As(err, &fe) || !strings.Contains(err.Error(), ".rodata") {
		t.Errorf("IKConfigELF of a .rodata past the end of the file = %v; want a FormatError naming .rodata", err)
	}
}
