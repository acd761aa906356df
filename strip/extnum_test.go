package strip_test

import (
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// assemble writes an assembler file with debugSections non-alloc sections
// followed by codeSections code sections, each code section holding one
// global function fN, and assembles it into an ET_REL object.
func assemble(t *testing.T, debugSections, codeSections int) string {
	t.Helper()
	as := tool(t, "as")
	dir := t.TempDir()
	var src strings.Builder
	for i := range debugSections {
		fmt.Fprintf(&src, ".section .debug_x%d,\"\",@progbits\n.byte 1\n", i)
	}
	for i := range codeSections {
		fmt.Fprintf(&src, ".section .t.%d,\"ax\",@progbits\n.globl f%d\n.type f%d,@function\nf%d:\nret\n.size f%d,1\n", i, i, i, i, i)
	}
	s := filepath.Join(dir, "many.s")
	if err := os.WriteFile(s, []byte(src.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	obj := filepath.Join(dir, "many.o")
	if out, err := runCmd(as, "-o", obj, s); err != nil {
		t.Fatalf("as: %v\n%s", err, out)
	}
	return obj
}

// TestExtendedSectionNumbering strips objects with more than 65,279
// sections: one that stays above the limit (e_shnum 0, SHN_XINDEX symbols)
// and one whose deleted debug sections bring it back below.
func TestExtendedSectionNumbering(t *testing.T) {
	if testing.Short() {
		t.Skip("assembles two 65k-section objects")
	}
	for _, tc := range []struct {
		name         string
		debug, code  int
		wantExtended bool
	}{
		{"stays extended", 0, 65300, true},
		{"crosses back below 0xff00", 400, 65200, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obj := assemble(t, tc.debug, tc.code)
			raw, err := os.ReadFile(obj)
			if err != nil {
				t.Fatal(err)
			}
			if shnum := elfShnum(raw); shnum != 0 {
				t.Fatalf("input e_shnum = %d; the assembler did not use extended numbering", shnum)
			}
			out, res := stripFile(t, obj)
			if got := elfShnum(out) == 0; got != tc.wantExtended {
				t.Errorf("output e_shnum = %d; extended numbering %v, want %v", elfShnum(out), got, tc.wantExtended)
			}
			if res.SectionsDeleted < tc.debug {
				t.Errorf("deleted %d sections; want at least the %d debug ones", res.SectionsDeleted, tc.debug)
			}
			f, err := elf.NewFile(bytes.NewReader(out))
			if err != nil {
				t.Fatalf("debug/elf: %v", err)
			}
			syms, err := f.Symbols()
			if err != nil {
				t.Fatal(err)
			}
			// debug/elf leaves SHN_XINDEX unresolved; resolve it through
			// .symtab_shndx to check every fN still points at .t.N.
			shndx := sectionData(t, f, ".symtab_shndx")
			seen := 0
			for i, s := range syms {
				if !strings.HasPrefix(s.Name, "f") {
					continue
				}
				sec := uint32(s.Section)
				if s.Section == elf.SHN_XINDEX {
					if shndx == nil {
						t.Fatalf("%s uses SHN_XINDEX but there is no .symtab_shndx", s.Name)
					}
					sec = f.ByteOrder.Uint32(shndx[(i+1)*4:]) // Symbols() drops the null symbol
				}
				if int(sec) >= len(f.Sections) || f.Sections[sec].Name != ".t."+s.Name[1:] {
					t.Fatalf("symbol %s points at section %d, not .t.%s", s.Name, sec, s.Name[1:])
				}
				seen++
			}
			if seen != tc.code {
				t.Errorf("%d function symbols survived, want %d", seen, tc.code)
			}
		})
	}
}

// elfShnum reads e_shnum of an ELF64 little-endian file.
func elfShnum(b []byte) uint16 { return uint16(b[60]) | uint16(b[61])<<8 }
