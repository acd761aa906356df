// Package strip shrinks a vmlinux to what tools still read from it: the
// symbol table, BTF, .rodata (which holds the embedded kernel config), and
// the notes (build ID). It rewrites the ELF file rather than patching it:
//
//   - keep bytes: the null section, the section name table, .symtab and its
//     string table, .symtab_shndx, .BTF, .rodata and every SHT_NOTE section;
//   - every other SHF_ALLOC section becomes SHT_NOBITS with its original
//     sh_size, address and flags, so every symbol that points into it
//     survives and GNU addr2line still resolves addresses;
//   - every other section is deleted (DWARF, .comment, all relocation
//     sections by type, .BTF.ext, ...), and the remaining sections are
//     renumbered: st_shndx (including SHN_XINDEX), sh_link, sh_info,
//     e_shstrndx and extended numbering are rewritten;
//   - PT_LOAD segments keep their addresses with zero file size; PT_NOTE
//     points at the kept notes.
//
// If that fails (or would leave no named symbol) a second mode deletes only
// DWARF, .comment and relocation sections and keeps everything else byte for
// byte. Only the kept bytes are read (ReadAt); sections that are dropped are
// never parsed, so malformed relocations in real kernels do not matter.
// Every output is re-parsed with debug/elf before it is accepted.
//
// The package is pure: an io.ReaderAt in, an io.Writer out, no files, no
// knowledge of the cache.
package strip

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"sort"
	"strings"
	"time"
)

// Mode names which rewrite produced an output.
type Mode string

const (
	// KeepList is the primary rewrite (see the package doc).
	KeepList Mode = "keep-list"
	// DebugOnly deletes only DWARF, .comment and relocation sections.
	DebugOnly Mode = "debug-only"
)

// Result describes one strip.
type Result struct {
	Mode            Mode   `json:"mode"`
	InputSize       int64  `json:"input_size"`
	OutputSize      int64  `json:"output_size"`
	SectionsKept    int    `json:"sections_kept"`
	SectionsNobits  int    `json:"sections_nobits"`
	SectionsDeleted int    `json:"sections_deleted"`
	SymbolsIn       int    `json:"symbols_in"`
	SymbolsOut      int    `json:"symbols_out"`
	BuildID         string `json:"build_id,omitempty"`
	// IKConfig is the kernel config embedded in the kept .rodata, "" when
	// the kernel has none.
	IKConfig string        `json:"-"`
	Elapsed  time.Duration `json:"elapsed_ns"`
	// KeepListError says why the keep-list rewrite was not used, when Mode
	// is DebugOnly.
	KeepListError string `json:"keep_list_error,omitempty"`
}

// Strip writes a stripped copy of the ELF file in (size bytes) to out. It
// tries the keep-list rewrite, then the debug-only one; the error is the
// reason both failed, and nothing has been written to out then.
func Strip(in io.ReaderAt, size int64, out io.Writer) (Result, error) {
	start := time.Now()
	f, err := parse(in, size)
	if err != nil {
		return Result{}, err
	}
	res, buf, err := f.rewrite(KeepList)
	if err != nil {
		res2, buf2, err2 := f.rewrite(DebugOnly)
		if err2 != nil {
			return Result{}, fmt.Errorf("keep-list strip: %v; debug-only strip: %w", err, err2)
		}
		res, buf = res2, buf2
		res.KeepListError = err.Error()
	}
	res.InputSize, res.OutputSize = size, int64(len(buf))
	if _, err := out.Write(buf); err != nil {
		return Result{}, fmt.Errorf("write stripped ELF: %w", err)
	}
	res.Elapsed = time.Since(start)
	return res, nil
}

// action is what happens to one input section.
type action int

const (
	drop   action = iota // not in the output
	keep                 // header and bytes
	nobits               // header only, as SHT_NOBITS
)

// keepNames are the sections whose bytes the keep-list mode keeps.
var keepNames = map[string]bool{".BTF": true, ".rodata": true}

func isReloc(typ uint32) bool {
	return typ == shtRel || typ == shtRela || typ == shtRelr || typ == shtCrel
}

func isDebug(name string) bool {
	return strings.HasPrefix(name, ".debug_") || strings.HasPrefix(name, ".zdebug_") || name == ".comment" ||
		name == ".gnu_debuglink" || name == ".gnu_debugaltlink"
}

// classify decides each section's fate.
func (f *file) classify(mode Mode) ([]action, int, error) {
	acts := make([]action, len(f.secs))
	symtab := -1
	for i, s := range f.secs {
		if s.typ == shtSymtab {
			symtab = i
			break
		}
	}
	if symtab < 0 {
		return nil, 0, errors.New("no symbol table (.symtab)")
	}
	strtab := int(f.secs[symtab].link)
	if strtab <= 0 || strtab >= len(f.secs) {
		return nil, 0, formatErr("symbol table links to section %d, out of range", strtab)
	}
	for i, s := range f.secs {
		switch {
		case i == 0:
			acts[i] = keep
		case uint64(i) == f.h.realShstrndx, i == symtab, i == strtab:
			acts[i] = keep
		case s.typ == shtSymtabShndx && int(s.link) == symtab:
			acts[i] = keep
		case s.typ == shtNull || isReloc(s.typ) || s.typ == shtGroup:
			acts[i] = drop
		case mode == DebugOnly:
			if isDebug(s.name) || s.name == ".BTF.ext" {
				acts[i] = drop
			} else {
				acts[i] = keep
			}
		case s.typ == shtNote || keepNames[s.name]:
			acts[i] = keep
		case s.flags&shfAlloc != 0:
			acts[i] = nobits
		default:
			acts[i] = drop
		}
		if acts[i] == keep && s.typ == shtNobits {
			acts[i] = nobits
		}
	}
	return acts, symtab, nil
}

// outSection is a section of the output.
type outSection struct {
	old   int
	s     section
	bytes bool   // the output holds its bytes
	data  []byte // bytes rewritten in memory (symbol tables); else copied from the input
}

// rewrite builds the whole output in one buffer (it is the small part of
// the input), reading each kept section straight into its place, and checks
// it before returning.
func (f *file) rewrite(mode Mode) (Result, []byte, error) {
	res := Result{Mode: mode}
	acts, symtab, err := f.classify(mode)
	if err != nil {
		return res, nil, err
	}
	newIndex := make([]uint32, len(f.secs))
	var outs []*outSection
	for i, a := range acts {
		switch a {
		case drop:
			res.SectionsDeleted++
			continue
		case nobits:
			res.SectionsNobits++
		default:
			res.SectionsKept++
		}
		newIndex[i] = uint32(len(outs))
		o := &outSection{old: i, s: f.secs[i], bytes: a == keep && i != 0}
		if a == nobits {
			o.s.typ = shtNobits
		}
		outs = append(outs, o)
	}
	// A fixed prefix keeps the loaded image byte for byte at its original
	// offsets, so program headers stay valid (debug-only mode only).
	prefix := uint64(0)
	if mode == DebugOnly && len(f.progs) > 0 {
		prefix = f.loadedEnd(acts)
	}
	// Validate everything whose bytes are kept before reading any of it.
	// Kept sections do not overlap in a sane file, so together they fit in
	// it; this bounds the output buffer by the input's size.
	var kept uint64
	for _, o := range outs {
		if !o.bytes {
			continue
		}
		if kept += o.s.size; kept > uint64(f.size) || kept < o.s.size {
			return res, nil, formatErr("kept sections add up to more than the file's %d bytes (overlapping sections)", f.size)
		}
		if end, carry := bits.Add64(o.s.off, o.s.size, 0); carry != 0 || end > uint64(f.size) {
			return res, nil, formatErr("section %s (offset %d, size %d) runs past the end of the file", o.s.name, o.s.off, o.s.size)
		}
		if o.s.align > 1 && o.s.align&(o.s.align-1) != 0 {
			return res, nil, formatErr("section %s alignment %d is not a power of two", o.s.name, o.s.align)
		}
	}
	if err := f.rewriteSymbols(outs, newIndex, symtab, &res); err != nil {
		return res, nil, err
	}
	for _, o := range outs {
		f.remapLinks(o, newIndex, acts)
	}
	buf, err := f.write(outs, newIndex, prefix)
	if err != nil {
		return res, nil, err
	}
	if mode == KeepList && !hasNamedSymbol(f, outs, symtab, buf) {
		return res, nil, errors.New("no named symbol would remain")
	}
	if err := f.selfCheck(buf); err != nil {
		return res, nil, fmt.Errorf("self-check of the %s output: %w", mode, err)
	}
	res.BuildID = buildIDFromSections(f, outs, buf)
	for _, o := range outs {
		if o.s.name == ".rodata" && o.bytes {
			res.IKConfig, _ = IKConfig(buf[o.s.off : o.s.off+o.s.size])
			break
		}
	}
	return res, buf, nil
}

// loadedEnd is the end of the part of the file that segments map or that
// holds kept allocated sections.
func (f *file) loadedEnd(acts []action) uint64 {
	var end uint64
	for _, p := range f.progs {
		if p.typ != ptNull && p.off+p.filesz > end && p.off+p.filesz <= uint64(f.size) {
			end = p.off + p.filesz
		}
	}
	for i, s := range f.secs {
		if acts[i] == keep && s.flags&shfAlloc != 0 && s.typ != shtNobits && s.off+s.size > end {
			end = s.off + s.size
		}
	}
	return min(end, uint64(f.size))
}

// remapLinks rewrites the section indices in one header.
func (f *file) remapLinks(o *outSection, newIndex []uint32, acts []action) {
	remap := func(v uint32) uint32 {
		if v == 0 || uint64(v) >= uint64(len(newIndex)) || acts[v] == drop {
			return 0
		}
		return newIndex[v]
	}
	old := f.secs[o.old]
	switch old.typ {
	case shtSymtab, shtDynsym, shtSymtabShndx, shtHash, shtGnuHash, shtGnuVersym,
		shtGnuVerdef, shtGnuVerneed, shtDynamic:
		o.s.link = remap(old.link)
	default:
		if old.flags&shfLinkOrder != 0 {
			o.s.link = remap(old.link)
		}
	}
	if old.flags&shfInfoLink != 0 {
		o.s.info = remap(old.info)
	}
}

// write lays the output out and serialises it: ELF header, program
// headers, sections (in original file order), section header table.
func (f *file) write(outs []*outSection, newIndex []uint32, prefix uint64) ([]byte, error) {
	wide := f.class == class64
	word := uint64(4)
	if wide {
		word = 8
	}
	phsize := uint64(len(f.progs) * f.l.phentsize)
	pos := max(uint64(f.l.ehsize), prefix)
	phoff := uint64(0)
	if len(f.progs) > 0 {
		if prefix > 0 && f.h.phoff >= uint64(f.l.ehsize) && f.h.phoff+phsize <= prefix {
			phoff = f.h.phoff // already inside the fixed prefix
		} else {
			phoff = alignUp(pos, word)
			pos = phoff + phsize
		}
	}
	inPrefix := func(o *outSection) bool { return prefix > 0 && f.secs[o.old].off+f.secs[o.old].size <= prefix }
	// Place sections in original offset order.
	order := append([]*outSection(nil), outs[1:]...)
	sort.SliceStable(order, func(i, j int) bool { return order[i].s.off < order[j].s.off })
	for _, o := range order {
		switch {
		case o.bytes && inPrefix(o) && o.data == nil:
			// bytes already in the prefix at their original offset
		case !o.bytes:
			// Occupies nothing; inside a fixed prefix it keeps its offset,
			// elsewhere it conventionally sits at the current position.
			if prefix == 0 || o.s.off > prefix {
				o.s.off = pos
			}
		default:
			o.s.off = alignUp(pos, max(o.s.align, 1))
			pos = o.s.off + o.s.size
		}
	}
	shoff := alignUp(pos, word)
	shnum := uint64(len(outs))
	end := shoff + shnum*uint64(f.l.shentsize)
	if !wide && end > 1<<32-1 {
		return nil, formatErr("output of %d bytes does not fit ELF32 offsets", end)
	}
	// Kept bytes and headers come from the input, so only alignment padding
	// can make the output outgrow it; huge sh_addralign values are hostile.
	if end > 2*uint64(f.size)+1<<20 || end < pos {
		return nil, formatErr("section alignments would make the output %d bytes from a %d-byte input", end, f.size)
	}
	buf := make([]byte, end)
	if prefix > 0 {
		if err := readFull(f.r, buf[:prefix], 0); err != nil {
			return nil, fmt.Errorf("read loaded image: %w", err)
		}
	}
	for _, o := range order {
		switch {
		case o.data != nil:
			copy(buf[o.s.off:], o.data)
		case o.bytes && !inPrefix(o):
			old := f.secs[o.old]
			if err := readFull(f.r, buf[o.s.off:o.s.off+o.s.size], old.off); err != nil {
				return nil, fmt.Errorf("read section %s: %w", old.name, err)
			}
		}
	}
	// Section 0 is rebuilt here: it carries the counts that do not fit the
	// header fields (extended numbering).
	shstrndx := uint64(newIndex[f.h.realShstrndx])
	s0 := &outs[0].s
	*s0 = section{}
	eShnum, eShstrndx, ePhnum := uint16(shnum), uint16(shstrndx), uint16(len(f.progs))
	if shnum >= shnLoreserve {
		s0.size, eShnum = shnum, 0
	}
	if shstrndx >= shnLoreserve {
		s0.link, eShstrndx = uint32(shstrndx), shnXindex
	}
	if len(f.progs) >= pnXnum {
		s0.info, ePhnum = uint32(len(f.progs)), pnXnum
	}
	e := &encoder{b: buf[shoff:shoff], bo: f.bo, wide: wide}
	for _, o := range outs {
		f.encodeSection(e, &o.s)
	}
	e = &encoder{b: buf[phoff:phoff], bo: f.bo, wide: wide}
	for _, p := range f.progs {
		q := f.retarget(p, outs, phoff, prefix)
		f.encodeProg(e, &q)
	}
	e = &encoder{b: buf[:0], bo: f.bo, wide: wide}
	e.b = append(e.b, f.h.ident[:]...)
	e.u16(f.h.typ)
	e.u16(f.h.machine)
	e.u32(f.h.version)
	e.addr(f.h.entry)
	e.addr(phoff)
	e.addr(shoff)
	e.u32(f.h.flags)
	e.u16(uint16(f.l.ehsize))
	if len(f.progs) > 0 {
		e.u16(uint16(f.l.phentsize))
	} else {
		e.u16(0)
	}
	e.u16(ePhnum)
	e.u16(uint16(f.l.shentsize))
	e.u16(eShnum)
	e.u16(eShstrndx)
	return buf, nil
}

// retarget adjusts one program header to the output layout.
func (f *file) retarget(p prog, outs []*outSection, phoff, prefix uint64) prog {
	if prefix > 0 && p.off+p.filesz <= prefix {
		if p.typ == ptPhdr {
			p.off = phoff
		}
		return p
	}
	switch p.typ {
	case ptNull:
		return p
	case ptLoad:
		p.filesz = 0
		if p.align > 1 {
			p.off = p.vaddr % p.align
		} else {
			p.off = 0
		}
		return p
	case ptPhdr:
		p.off, p.filesz = phoff, uint64(len(f.progs)*f.l.phentsize)
		return p
	}
	if p.filesz == 0 {
		return p
	}
	// Any other segment keeps its bytes only if kept sections cover it.
	var first, last *outSection
	covered := uint64(0)
	for _, o := range outs[1:] {
		old := f.secs[o.old]
		if !o.bytes || old.off < p.off || old.off+old.size > p.off+p.filesz {
			continue
		}
		if first == nil || o.s.off < first.s.off {
			first = o
		}
		if last == nil || o.s.off+o.s.size > last.s.off+last.s.size {
			last = o
		}
		covered += old.size
	}
	if first == nil || covered == 0 {
		p.typ, p.off, p.filesz, p.memsz = ptNull, 0, 0, 0
		return p
	}
	p.off = first.s.off
	p.filesz = last.s.off + last.s.size - first.s.off
	if p.typ == ptNote {
		p.memsz = p.filesz
	}
	return p
}

func alignUp(v, a uint64) uint64 {
	if a <= 1 {
		return v
	}
	return (v + a - 1) / a * a
}

// selfCheck re-parses the output with debug/elf, independently of our own
// parser, and compares what must survive.
func (f *file) selfCheck(out []byte) error {
	ef, err := elf.NewFile(bytes.NewReader(out))
	if err != nil {
		return fmt.Errorf("debug/elf cannot parse it: %w", err)
	}
	var symtab *elf.Section
	for _, s := range ef.Sections {
		if s.Type == elf.SHT_SYMTAB {
			symtab = s
			break
		}
	}
	// Symbols() would decode all of them; the count and the first real
	// entry are enough to show the table is there and readable.
	if symtab == nil || symtab.Entsize == 0 || symtab.Size/symtab.Entsize < 2 {
		return errors.New("symbol table is missing or empty")
	}
	if _, err := io.ReadFull(symtab.Open(), make([]byte, 2*symtab.Entsize)); err != nil {
		return fmt.Errorf("symbol table: %w", err)
	}
	for _, s := range f.secs {
		if s.name != ".BTF" || s.typ == shtNobits {
			continue
		}
		got := ef.Section(".BTF")
		if got == nil || got.Type == elf.SHT_NOBITS || got.Size != s.size {
			return errors.New(".BTF is missing or has another size")
		}
		if err := sameBytes(got.Open(), io.NewSectionReader(f.r, int64(s.off), int64(s.size))); err != nil {
			return fmt.Errorf(".BTF differs from the input's: %w", err)
		}
		break
	}
	return nil
}

// sameBytes compares two readers chunk by chunk, without holding either
// whole in memory.
func sameBytes(a, b io.Reader) error {
	ba, bb := make([]byte, 64<<10), make([]byte, 64<<10)
	for {
		na, ea := io.ReadFull(a, ba)
		nb, eb := io.ReadFull(b, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return errors.New("bytes differ")
		}
		if ea != nil || eb != nil {
			if (ea == io.EOF || ea == io.ErrUnexpectedEOF) && (eb == io.EOF || eb == io.ErrUnexpectedEOF) {
				return nil
			}
			return errors.Join(ea, eb)
		}
	}
}

// sectionBytes reads the bytes of the first section with the given name;
// nil and no error when there is none.
func (f *file) sectionBytes(name string) ([]byte, error) {
	for _, s := range f.secs {
		if s.name == name && s.typ != shtNobits {
			return f.readAt(s.off, s.size, "section "+name)
		}
	}
	return nil, nil
}
