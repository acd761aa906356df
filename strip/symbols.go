package strip

// The symbol table of the output: symbols remapped to the kept sections,
// and the checks on what survives.

// rewriteSymbols rewrites .symtab (and .symtab_shndx) in memory for the new
// section numbers, dropping symbols of deleted sections.
func (f *file) rewriteSymbols(outs []*outSection, newIndex []uint32, symtab int, res *Result) error {
	var st, shndx *outSection
	for _, o := range outs {
		if o.old == symtab {
			st = o
		}
		if o.s.typ == shtSymtabShndx && int(o.s.link) == symtab {
			shndx = o
		}
	}
	if !st.bytes {
		return formatErr("symbol table has no bytes")
	}
	if (st.s.flags|shndxFlags(shndx))&shfCompressed != 0 {
		return formatErr("compressed symbol tables are not supported")
	}
	size := uint64(f.l.symsize)
	if st.s.entsize != size || st.s.size%size != 0 {
		return formatErr("symbol table entry size %d (section size %d), want %d", st.s.entsize, st.s.size, size)
	}
	n := st.s.size / size
	res.SymbolsIn = int(n)
	if uint64(st.s.info) > n {
		return formatErr("symbol table says %d locals but has %d symbols", st.s.info, n)
	}
	var err error
	if st.data, err = f.readAt(f.secs[symtab].off, st.s.size, "symbol table"); err != nil {
		return err
	}
	var xtab []byte
	if shndx != nil {
		if shndx.bytes {
			if xtab, err = f.readAt(shndx.s.off, shndx.s.size, "extended section index table"); err != nil {
				return err
			}
		}
		if uint64(len(xtab)) < n*4 {
			return formatErr("extended section index table is shorter than the symbol table")
		}
	}
	off := 14 // st_shndx in ELF32
	if f.class == class64 {
		off = 6
	}
	// Compact in place: entry w of the output is written after entry i of
	// the input has been read, and w <= i.
	w, locals := uint64(0), uint32(0)
	for i := uint64(0); i < n; i++ {
		ent := st.data[i*size : (i+1)*size]
		raw := uint32(f.bo.Uint16(ent[off:]))
		sec, newRaw, xval := raw, raw, uint32(0)
		if raw == shnXindex {
			if xtab == nil {
				return formatErr("symbol %d uses SHN_XINDEX without a .symtab_shndx", i)
			}
			sec = f.bo.Uint32(xtab[i*4:])
			newRaw = 0 // resolved below; SHN_XINDEX only survives with a real index
		}
		if i > 0 && sec != shnUndef && (raw == shnXindex || raw < shnLoreserve) {
			if uint64(sec) >= uint64(len(f.secs)) {
				return formatErr("symbol %d refers to section %d of %d", i, sec, len(f.secs))
			}
			if newIndex[sec] == 0 {
				continue // its section is gone
			}
			newRaw = newIndex[sec]
			if newRaw >= shnLoreserve {
				newRaw, xval = shnXindex, newIndex[sec]
			}
		}
		dst := st.data[w*size : (w+1)*size]
		copy(dst, ent)
		f.bo.PutUint16(dst[off:], uint16(newRaw))
		if xtab != nil {
			f.bo.PutUint32(xtab[w*4:], xval)
		}
		if i < uint64(st.s.info) {
			locals++
		}
		w++
	}
	st.data, st.s.size, st.s.info = st.data[:w*size], w*size, locals
	if shndx != nil {
		shndx.data, shndx.s.size = xtab[:w*4], w*4
	}
	res.SymbolsOut = int(w)
	return nil
}

func shndxFlags(o *outSection) uint64 {
	if o == nil {
		return 0
	}
	return o.s.flags
}

// hasNamedSymbol reports whether the output's symbol table names anything.
func hasNamedSymbol(f *file, outs []*outSection, symtab int, buf []byte) bool {
	var st, names *outSection
	for _, o := range outs {
		if o.old == symtab {
			st = o
		}
		if o.old == int(f.secs[symtab].link) {
			names = o
		}
	}
	if names == nil || !names.bytes {
		return false
	}
	strtab := buf[names.s.off : names.s.off+names.s.size]
	size := uint64(f.l.symsize)
	for i := size; i+size <= uint64(len(st.data)); i += size {
		if off := uint64(f.bo.Uint32(st.data[i:])); off != 0 && off < uint64(len(strtab)) && strtab[off] != 0 {
			return true
		}
	}
	return false
}
