package strip

import (
	"encoding/hex"
	"io"
)

const ntGnuBuildID = 3

// buildIDFromSections returns the GNU build ID from the output's note
// sections, or "".
func buildIDFromSections(f *file, outs []*outSection, buf []byte) string {
	for _, o := range outs {
		if o.s.typ != shtNote || !o.bytes {
			continue
		}
		if id := findBuildID(buf[o.s.off:o.s.off+o.s.size], f.bo, o.s.align); id != "" {
			return id
		}
	}
	return ""
}

// findBuildID walks the notes in data (each: namesz, descsz, type, name,
// desc, padded to align) and returns the hex of the first NT_GNU_BUILD_ID
// whose name is "GNU".
func findBuildID(data []byte, bo byteOrder, align uint64) string {
	if align != 8 {
		align = 4
	}
	for len(data) >= 12 {
		namesz, descsz, typ := uint64(bo.Uint32(data)), uint64(bo.Uint32(data[4:])), bo.Uint32(data[8:])
		nameEnd := 12 + alignUp(namesz, 4)
		descEnd := alignUp(nameEnd+descsz, align)
		if nameEnd > uint64(len(data)) || nameEnd+descsz > uint64(len(data)) {
			return ""
		}
		if typ == ntGnuBuildID && namesz == 4 && string(data[12:16]) == "GNU\x00" && descsz > 0 {
			return hex.EncodeToString(data[nameEnd : nameEnd+descsz])
		}
		if descEnd > uint64(len(data)) {
			return ""
		}
		data = data[descEnd:]
	}
	return ""
}

// BuildID returns the GNU build ID of an ELF file ("" when it has none),
// reading only its headers and note sections.
func BuildID(in io.ReaderAt, size int64) (string, error) {
	f, err := parse(in, size)
	if err != nil {
		return "", err
	}
	for _, s := range f.secs {
		if s.typ != shtNote {
			continue
		}
		data, err := f.readAt(s.off, s.size, "notes "+s.name)
		if err != nil {
			return "", err
		}
		if id := findBuildID(data, f.bo, s.align); id != "" {
			return id, nil
		}
	}
	return "", nil
}
