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
	Mode            Mode          `json:"mode"`
	InputSize       int64         `json:"input_size"`
	OutputSize      int64         `json:"output_size"`
	SectionsKept    int           `json:"sections_kept"`
	SectionsNobits  int           `json:"sections_nobits"`
	SectionsDeleted int           `json:"sections_deleted"`
	SymbolsIn       int           `json:"symbols_in"`
	SymbolsOut      int           `json:"symbols_out"`
	BuildID         string        `json:"build_id,omitempty"`
	Elapsed         time.Duration `json:"elapsed_ns"`
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
	old  int
	s    section
	data []byte // nil for NOBITS and for bytes copied in a fixed prefix
}

// rewrite builds the whole output in memory (it is the small part of the
// input) and checks it before returning.
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
		o := &outSection{old: i, s: f.secs[i]}
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
	for _, o := range outs {
		if o.s.typ == shtNobits || o.old == 0 || (prefix > 0 && o.s.off+o.s.size <= prefix) {
			continue
		}
		if o.s.align > 1 && o.s.align&(o.s.align-1) != 0 {
			return res, nil, formatErr("section %s alignment %d is not a power of two", o.s.name, o.s.align)
		}
		if o.data, err = f.readAt(o.s.off, o.s.size, "section "+o.s.name); err != nil {
			return res, nil, err
		}
	}
	symOut, err := f.rewriteSymbols(outs, newIndex, symtab, &res)
	if err != nil {
		return res, nil, err
	}
	if symOut == 0 && mode == KeepList {
		return res, nil, errors.New("no named symbol would remain")
	}
	for _, o := range outs {
		f.remapLinks(o, newIndex, acts)
	}
	buf, err := f.write(outs, newIndex, prefix)
	if err != nil {
		return res, nil, err
	}
	if err := f.selfCheck(buf); err != nil {
		return res, nil, fmt.Errorf("self-check of the %s output: %w", mode, err)
	}
	res.BuildID = buildIDFromSections(f, outs)
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

// rewriteSymbols rewrites .symtab (and .symtab_shndx) for the new section
// numbers, dropping symbols of deleted sections, and returns how many named
// symbols remain.
func (f *file) rewriteSymbols(outs []*outSection, newIndex []uint32, symtab int, res *Result) (int, error) {
	var st, shndx *outSection
	for _, o := range outs {
		if o.old == symtab {
			st = o
		}
		if o.s.typ == shtSymtabShndx && int(o.s.link) == symtab {
			shndx = o
		}
	}
	if st.data == nil {
		return 0, formatErr("symbol table has no bytes")
	}
	size := uint64(f.l.symsize)
	if st.s.entsize != size || st.s.size%size != 0 {
		return 0, formatErr("symbol table entry size %d (section size %d), want %d", st.s.entsize, st.s.size, size)
	}
	n := st.s.size / size
	res.SymbolsIn = int(n)
	if n == 0 {
		return 0, nil
	}
	if uint64(st.s.info) > n {
		return 0, formatErr("symbol table says %d locals but has %d symbols", st.s.info, n)
	}
	var xtab []byte
	if shndx != nil {
		if shndx.data == nil || uint64(len(shndx.data)) < n*4 {
			return 0, formatErr("extended section index table is shorter than the symbol table")
		}
		xtab = shndx.data
	}
	off := 14 // st_shndx in ELF32
	if f.class == class64 {
		off = 6
	}
	var names []byte
	for _, o := range outs {
		if o.old == int(f.secs[symtab].link) {
			names = o.data
		}
	}
	out := make([]byte, 0, len(st.data))
	var xout []byte
	locals, named := uint32(0), 0
	for i := uint64(0); i < n; i++ {
		ent := st.data[i*size : (i+1)*size]
		raw := uint32(f.bo.Uint16(ent[off:]))
		sec := raw
		if raw == shnXindex {
			if xtab == nil {
				return 0, formatErr("symbol %d uses SHN_XINDEX without a .symtab_shndx", i)
			}
			sec = f.bo.Uint32(xtab[i*4:])
		}
		newSec, newRaw, xval := raw, raw, uint32(0)
		if i > 0 && sec != shnUndef && (raw == shnXindex || raw < shnLoreserve) {
			if uint64(sec) >= uint64(len(f.secs)) {
				return 0, formatErr("symbol %d refers to section %d of %d", i, sec, len(f.secs))
			}
			if newIndex[sec] == 0 {
				continue // its section is gone
			}
			newSec = newIndex[sec]
			newRaw = newSec
			if newSec >= shnLoreserve {
				newRaw, xval = shnXindex, newSec
			}
		}
		_ = newSec
		e := append([]byte{}, ent...)
		f.bo.PutUint16(e[off:], uint16(newRaw))
		out = append(out, e...)
		if xtab != nil {
			xout = f.bo.AppendUint32(xout, xval)
		}
		if i < uint64(st.s.info) {
			locals++
		}
		if i > 0 && names != nil {
			if nameOff := f.bo.Uint32(ent[0:]); nameOff != 0 && uint64(nameOff) < uint64(len(names)) && names[nameOff] != 0 {
				named++
			}
		}
	}
	st.data, st.s.size, st.s.info = out, uint64(len(out)), locals
	if shndx != nil {
		shndx.data, shndx.s.size = xout, uint64(len(xout))
	}
	res.SymbolsOut = len(out) / int(size)
	return named, nil
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
	if o.old == 0 {
		o.s = section{} // rebuilt by write for extended numbering
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
	var buf []byte
	pos := uint64(f.l.ehsize)
	phoff := uint64(0)
	if len(f.progs) > 0 {
		if prefix > 0 && f.h.phoff+uint64(len(f.progs)*f.l.phentsize) <= prefix && f.h.phoff >= uint64(f.l.ehsize) {
			phoff = f.h.phoff
		} else {
			phoff = alignUp(max(pos, prefix), word)
		}
	}
	if prefix > 0 {
		pre, err := f.readAt(0, prefix, "loaded image")
		if err != nil {
			return nil, err
		}
		buf = pre
		pos = prefix
	}
	if phoff >= pos {
		pos = phoff + uint64(len(f.progs)*f.l.phentsize)
	}
	// Place sections in original offset order.
	order := append([]*outSection(nil), outs[1:]...)
	sort.SliceStable(order, func(i, j int) bool { return order[i].s.off < order[j].s.off })
	for _, o := range order {
		switch {
		case prefix > 0 && o.data == nil && o.s.typ != shtNobits:
			// bytes already in the prefix at their original offset
		case o.s.typ == shtNobits:
			// Occupies nothing; inside a fixed prefix it keeps its offset,
			// elsewhere it conventionally sits at the current position.
			if prefix == 0 || o.s.off > prefix {
				o.s.off = pos
			}
		default:
			o.s.off = alignUp(pos, max(o.s.align, 1))
			pos = o.s.off + uint64(len(o.data))
		}
	}
	shoff := alignUp(pos, word)
	shnum := uint64(len(outs))
	end := shoff + shnum*uint64(f.l.shentsize)
	if !wide && end > 1<<32-1 {
		return nil, formatErr("output of %d bytes does not fit ELF32 offsets", end)
	}
	if uint64(len(buf)) < end {
		buf = append(buf, make([]byte, end-uint64(len(buf)))...)
	}
	for _, o := range order {
		if o.data != nil {
			copy(buf[o.s.off:], o.data)
		}
	}
	// Section 0 carries the counts that do not fit the header fields.
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
	e := &encoder{bo: f.bo, wide: wide}
	for _, o := range outs {
		f.encodeSection(e, &o.s)
	}
	copy(buf[shoff:], e.b)
	// Program headers.
	e = &encoder{bo: f.bo, wide: wide}
	for _, p := range f.progs {
		q := f.retarget(p, outs, phoff, prefix)
		f.encodeProg(e, &q)
	}
	copy(buf[phoff:], e.b)
	// ELF header.
	e = &encoder{bo: f.bo, wide: wide}
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
	copy(buf, e.b)
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
		if o.data == nil || old.typ == shtNobits || old.off < p.off || old.off+old.size > p.off+p.filesz {
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
	syms, err := ef.Symbols()
	if err != nil {
		return fmt.Errorf("symbol table: %w", err)
	}
	if len(syms) == 0 {
		return errors.New("symbol table is empty")
	}
	if btfIn := f.sectionBytes(".BTF"); btfIn != nil {
		s := ef.Section(".BTF")
		if s == nil {
			return errors.New(".BTF is missing")
		}
		got, err := s.Data()
		if err != nil || !bytes.Equal(got, btfIn) {
			return fmt.Errorf(".BTF bytes differ from the input's (err %v)", err)
		}
	}
	return nil
}

// sectionBytes reads the bytes of the first section with the given name,
// or nil when there is none or it cannot be read.
func (f *file) sectionBytes(name string) []byte {
	for _, s := range f.secs {
		if s.name == name && s.typ != shtNobits {
			b, err := f.readAt(s.off, s.size, name)
			if err != nil {
				return nil
			}
			return b
		}
	}
	return nil
}
