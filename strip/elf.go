package strip

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
)

// ELF constants used here (debug/elf has them, typed; plain integers keep
// the arithmetic on raw header fields simple).
const (
	shtNull        = 0
	shtSymtab      = 2
	shtStrtab      = 3
	shtRela        = 4
	shtHash        = 5
	shtDynamic     = 6
	shtNote        = 7
	shtNobits      = 8
	shtRel         = 9
	shtDynsym      = 11
	shtGroup       = 17
	shtSymtabShndx = 18
	shtRelr        = 19
	shtCrel        = 0x40000014
	shtGnuHash     = 0x6ffffff6
	shtGnuVerdef   = 0x6ffffffd
	shtGnuVerneed  = 0x6ffffffe
	shtGnuVersym   = 0x6fffffff

	shfAlloc      = 0x2
	shfInfoLink   = 0x40
	shfLinkOrder  = 0x80
	shfCompressed = 0x800

	shnUndef     = 0
	shnLoreserve = 0xff00
	shnXindex    = 0xffff

	ptNull  = 0
	ptLoad  = 1
	ptNote  = 4
	ptPhdr  = 6
	pnXnum  = 0xffff
	elfMag  = "\x7fELF"
	class32 = 1
	class64 = 2
)

// ErrNotELF is matched by errors for inputs that are not ELF at all.
var ErrNotELF = errors.New("not an ELF file")

// FormatError is an input that claims to be ELF but is malformed where it
// matters.
type FormatError struct{ msg string }

func (e *FormatError) Error() string { return "malformed ELF: " + e.msg }

func formatErr(format string, args ...any) error {
	return &FormatError{msg: fmt.Sprintf(format, args...)}
}

// byteOrder reads and appends in the file's byte order.
type byteOrder interface {
	binary.ByteOrder
	binary.AppendByteOrder
}

// layout holds the sizes that differ between ELF32 and ELF64.
type layout struct {
	ehsize, phentsize, shentsize, symsize int
}

var layouts = map[byte]layout{
	class32: {52, 32, 40, 16},
	class64: {64, 56, 64, 24},
}

// header is a decoded ELF file header.
type header struct {
	ident                              [16]byte
	typ, machine                       uint16
	version                            uint32
	entry, phoff, shoff                uint64
	flags                              uint32
	ehsize, phentsize, phnum           uint16
	shentsize, shnum, shstrndx         uint16
	realShnum, realShstrndx, realPhnum uint64
	sh0Size, sh0Link, sh0Info          uint64 // extended numbering carriers
}

type section struct {
	name                   string
	nameOff                uint32
	typ                    uint32
	flags, addr, off, size uint64
	link, info             uint32
	align, entsize         uint64
}

type prog struct {
	typ, flags                              uint32
	off, vaddr, paddr, filesz, memsz, align uint64
}

// file is a parsed input: headers only, read through ReaderAt.
type file struct {
	r     io.ReaderAt
	size  int64
	class byte
	bo    byteOrder
	l     layout
	h     header
	secs  []section
	progs []prog
}

// readAt reads n bytes at off, checking that the range lies inside the file.
func (f *file) readAt(off, n uint64, what string) ([]byte, error) {
	end, carry := bits.Add64(off, n, 0)
	if carry != 0 || end > uint64(f.size) {
		return nil, formatErr("%s at offset %d size %d runs past the end of the file (%d bytes)", what, off, n, f.size)
	}
	buf := make([]byte, n)
	if err := readFull(f.r, buf, off); err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	return buf, nil
}

// readFull fills buf from r at off. A ReaderAt may return io.EOF along
// with a full buffer at the end of its input; io.EOF with fewer bytes means
// the input is shorter than the size it was given as (truncated while
// being read), and is an error rather than a buffer whose tail stays zero.
func readFull(r io.ReaderAt, buf []byte, off uint64) error {
	n, err := r.ReadAt(buf, int64(off))
	switch {
	case err == nil || (n == len(buf) && errors.Is(err, io.EOF)):
		return nil
	case errors.Is(err, io.EOF):
		return fmt.Errorf("got %d of %d bytes at offset %d; the input is shorter than its stated size (truncated while being read?): %w",
			n, len(buf), off, io.ErrUnexpectedEOF)
	}
	return err
}

// parse reads and checks the ELF header, the section header table, the
// section names and the program headers. Section contents are not read.
func parse(r io.ReaderAt, size int64) (*file, error) {
	f := &file{r: r, size: size}
	if size < 16 {
		return nil, fmt.Errorf("%w: %d bytes", ErrNotELF, size)
	}
	ident, err := f.readAt(0, 16, "ELF identification")
	if err != nil {
		return nil, err
	}
	if string(ident[:4]) != elfMag {
		return nil, fmt.Errorf("%w: bad magic %q", ErrNotELF, ident[:4])
	}
	copy(f.h.ident[:], ident)
	f.class = ident[4]
	l, ok := layouts[f.class]
	if !ok {
		return nil, formatErr("unknown class %d", f.class)
	}
	f.l = l
	switch ident[5] {
	case 1:
		f.bo = binary.LittleEndian
	case 2:
		f.bo = binary.BigEndian
	default:
		return nil, formatErr("unknown data encoding %d", ident[5])
	}
	if ident[6] != 1 {
		return nil, formatErr("unknown ELF version %d", ident[6])
	}
	hb, err := f.readAt(0, uint64(l.ehsize), "ELF header")
	if err != nil {
		return nil, err
	}
	d := decoder{b: hb[16:], bo: f.bo, wide: f.class == class64}
	h := &f.h
	h.typ, h.machine, h.version = d.u16(), d.u16(), d.u32()
	h.entry, h.phoff, h.shoff = d.addr(), d.addr(), d.addr()
	h.flags = d.u32()
	h.ehsize, h.phentsize, h.phnum = d.u16(), d.u16(), d.u16()
	h.shentsize, h.shnum, h.shstrndx = d.u16(), d.u16(), d.u16()
	if h.shoff == 0 {
		return nil, formatErr("no section header table")
	}
	sh0, err := f.readAt(h.shoff, uint64(l.shentsize), "section header 0")
	if err != nil {
		return nil, err
	}
	s0 := f.decodeSection(sh0)
	h.sh0Size, h.sh0Link, h.sh0Info = s0.size, uint64(s0.link), uint64(s0.info)
	h.realShnum, h.realShstrndx, h.realPhnum = uint64(h.shnum), uint64(h.shstrndx), uint64(h.phnum)
	if h.shnum == 0 {
		h.realShnum = s0.size
	}
	if h.shstrndx == shnXindex {
		h.realShstrndx = uint64(s0.link)
	}
	if h.phnum == pnXnum {
		h.realPhnum = uint64(s0.info)
	}
	if h.realShnum == 0 {
		return nil, formatErr("no sections")
	}
	if h.realShstrndx == shnUndef || h.realShstrndx >= h.realShnum {
		return nil, formatErr("section name table index %d out of range (%d sections)", h.realShstrndx, h.realShnum)
	}
	if f.secs, err = readTable(f, h.shoff, h.realShnum, h.shentsize, l.shentsize, "section header", f.decodeSection); err != nil {
		return nil, err
	}
	shstr := f.secs[h.realShstrndx]
	if shstr.typ == shtNobits {
		return nil, formatErr("section name table has no bytes")
	}
	names, err := f.readAt(shstr.off, shstr.size, "section name table")
	if err != nil {
		return nil, err
	}
	for i := range f.secs {
		n, err := cstring(names, f.secs[i].nameOff)
		if err != nil {
			return nil, formatErr("section %d name: %v", i, err)
		}
		f.secs[i].name = n
	}
	if h.realPhnum > 0 {
		if f.progs, err = readTable(f, h.phoff, h.realPhnum, h.phentsize, l.phentsize, "program header", f.decodeProg); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// readTable reads and decodes the header table of count entries of entsize
// bytes at off (what: "section header" or "program header"); an entry must
// hold at least minsize bytes. The count comes from a header and is checked
// against what the file can hold before anything is allocated.
func readTable[T any](f *file, off, count uint64, entsize uint16, minsize int, what string, decode func([]byte) T) ([]T, error) {
	if int(entsize) < minsize {
		return nil, formatErr("%s entry size %d, want at least %d", what, entsize, minsize)
	}
	what += " table"
	if room := (uint64(f.size) - min(off, uint64(f.size))) / uint64(entsize); count > room {
		return nil, formatErr("%s: %d entries do not fit in the file (room for %d)", what, count, room)
	}
	table, err := f.readAt(off, count*uint64(entsize), what)
	if err != nil {
		return nil, err
	}
	out := make([]T, count)
	for i := range out {
		out[i] = decode(table[uint64(i)*uint64(entsize):])
	}
	return out, nil
}

// cstring returns the NUL-terminated string at off in tab.
func cstring(tab []byte, off uint32) (string, error) {
	if uint64(off) >= uint64(len(tab)) {
		if off == 0 && len(tab) == 0 {
			return "", nil
		}
		return "", fmt.Errorf("offset %d outside the %d-byte string table", off, len(tab))
	}
	end := bytes.IndexByte(tab[off:], 0)
	if end < 0 {
		return "", fmt.Errorf("string at %d is not NUL-terminated", off)
	}
	return string(tab[off : int(off)+end]), nil
}

// decoder reads consecutive header fields.
type decoder struct {
	b    []byte
	bo   binary.ByteOrder
	wide bool
}

func (d *decoder) u16() uint16 { v := d.bo.Uint16(d.b); d.b = d.b[2:]; return v }
func (d *decoder) u32() uint32 { v := d.bo.Uint32(d.b); d.b = d.b[4:]; return v }
func (d *decoder) u64() uint64 { v := d.bo.Uint64(d.b); d.b = d.b[8:]; return v }
func (d *decoder) addr() uint64 { // Elf32_Addr/Off/Word-sized fields vs their 64-bit forms
	if d.wide {
		return d.u64()
	}
	return uint64(d.u32())
}

func (f *file) decodeSection(b []byte) section {
	d := decoder{b: b, bo: f.bo, wide: f.class == class64}
	var s section
	s.nameOff, s.typ = d.u32(), d.u32()
	s.flags, s.addr, s.off, s.size = d.addr(), d.addr(), d.addr(), d.addr()
	s.link, s.info = d.u32(), d.u32()
	s.align, s.entsize = d.addr(), d.addr()
	return s
}

func (f *file) decodeProg(b []byte) prog {
	d := decoder{b: b, bo: f.bo, wide: f.class == class64}
	var p prog
	p.typ = d.u32()
	if f.class == class64 {
		p.flags = d.u32()
		p.off, p.vaddr, p.paddr, p.filesz, p.memsz, p.align = d.u64(), d.u64(), d.u64(), d.u64(), d.u64(), d.u64()
	} else {
		p.off, p.vaddr, p.paddr, p.filesz, p.memsz = uint64(d.u32()), uint64(d.u32()), uint64(d.u32()), uint64(d.u32()), uint64(d.u32())
		p.flags = d.u32()
		p.align = uint64(d.u32())
	}
	return p
}

// encoder appends header fields in the file's byte order.
type encoder struct {
	b    []byte
	bo   byteOrder
	wide bool
}

func (e *encoder) u16(v uint16) { e.b = e.bo.AppendUint16(e.b, v) }
func (e *encoder) u32(v uint32) { e.b = e.bo.AppendUint32(e.b, v) }
func (e *encoder) u64(v uint64) { e.b = e.bo.AppendUint64(e.b, v) }
func (e *encoder) addr(v uint64) {
	if e.wide {
		e.u64(v)
	} else {
		e.u32(uint32(v))
	}
}

func (f *file) encodeSection(e *encoder, s *section) {
	e.u32(s.nameOff)
	e.u32(s.typ)
	e.addr(s.flags)
	e.addr(s.addr)
	e.addr(s.off)
	e.addr(s.size)
	e.u32(s.link)
	e.u32(s.info)
	e.addr(s.align)
	e.addr(s.entsize)
}

func (f *file) encodeProg(e *encoder, p *prog) {
	e.u32(p.typ)
	if f.class == class64 {
		e.u32(p.flags)
		e.u64(p.off)
		e.u64(p.vaddr)
		e.u64(p.paddr)
		e.u64(p.filesz)
		e.u64(p.memsz)
		e.u64(p.align)
		return
	}
	e.u32(uint32(p.off))
	e.u32(uint32(p.vaddr))
	e.u32(uint32(p.paddr))
	e.u32(uint32(p.filesz))
	e.u32(uint32(p.memsz))
	e.u32(p.flags)
	e.u32(uint32(p.align))
}
