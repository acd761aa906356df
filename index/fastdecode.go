package index

import (
	"encoding/binary"
	"math"
)

// decodeFast decodes data into r (which must be zero) without reflection
// when data is a record exactly as encodeRecord writes it: a msgpack map of
// known field names, each at most once, with values of the types the
// encoder writes. Anything else — another shape, an unknown or repeated
// field, a nil where the encoder never writes one, a bin instead of a str,
// bytes cut short — returns false and leaves r to be reset: decodeRecord
// then decodes with msgpack, so every input decodes exactly as msgpack
// decodes it (FuzzDecodeFast holds the two to that). Bytes after the map are
// ignored, as msgpack.Unmarshal ignores them.
//
// All the record's strings share one copy of data, and its pointer fields
// point into one allocation: three allocations per record instead of
// msgpack's dozens. Every length is checked against data before it is used,
// so hostile bytes cost no more than their own size.
func decodeFast(data []byte, r *Record) bool {
	d := fastDecoder{b: data}
	n, ok := d.mapLen()
	if !ok {
		return false
	}
	d.s = string(data)
	var seen uint32
	for range n {
		name, ok := d.str()
		if !ok {
			return false
		}
		var bit uint32
		switch name {
		case "key":
			bit = 1 << 0
			r.Key, ok = d.str()
		case "version":
			bit = 1 << 1
			r.Version, ok = d.strPtr(&d.arena().version)
		case "source":
			bit = 1 << 2
			ok = d.source(&r.Source)
		case "arch":
			bit = 1 << 3
			r.Arch, ok = d.str()
		case "image_name":
			bit = 1 << 4
			r.ImageName, ok = d.str()
		case "config_hash":
			bit = 1 << 5
			r.ConfigHash, ok = d.strPtr(&d.arena().configHash)
		case "built_at":
			bit = 1 << 6
			r.BuiltAt, ok = d.str()
		case "kconfig_hash":
			bit = 1 << 7
			r.KconfigHash, ok = d.strPtr(&d.arena().kconfigHash)
		case "has_vmlinux":
			bit = 1 << 8
			r.HasVmlinux, ok = d.bool()
		case "vmlinux_stripped":
			bit = 1 << 9
			r.VmlinuxStripped, ok = d.bool()
		case "source_vmlinux_size":
			bit = 1 << 10
			r.SourceVmlinuxSize, ok = d.uintPtr(&d.arena().sourceVmlinuxSize)
		case "source_vmlinux_mtime_secs":
			bit = 1 << 11
			r.SourceVmlinuxMtimeSecs, ok = d.intPtr(&d.arena().sourceVmlinuxMtime)
		case "image":
			bit = 1 << 12
			ok = d.blob(&r.Image)
		case "vmlinux":
			bit = 1 << 13
			if d.nil() {
				r.Vmlinux = nil
			} else {
				r.Vmlinux = &d.arena().vmlinux
				ok = d.blob(r.Vmlinux)
			}
		case "vmlinux_original_size":
			bit = 1 << 14
			r.VmlinuxOriginalSize, ok = d.intPtr(&d.arena().vmlinuxOriginalSize)
		case "build_id":
			bit = 1 << 15
			r.BuildID, ok = d.strPtr(&d.arena().buildID)
		case "config_hz":
			bit = 1 << 16
			r.ConfigHZ, ok = d.uintPtr(&d.arena().configHZ)
		case "stored_at":
			bit = 1 << 17
			r.StoredAt, ok = d.str()
		case "manifest":
			bit = 1 << 18
			ok = d.blob(&r.Manifest)
		case "last_used":
			bit = 1 << 19
			r.LastUsed, ok = d.str()
		case "corrupt":
			bit = 1 << 20
			if d.nil() {
				r.Corrupt = nil
			} else {
				r.Corrupt = new(CorruptMark)
				ok = d.corruptMark(r.Corrupt)
			}
		case "migrated":
			bit = 1 << 21
			if d.nil() {
				r.Migrated = nil
			} else {
				r.Migrated = new(Migrated)
				ok = d.migrated(r.Migrated)
			}
		default:
			return false // an unknown field
		}
		if !ok || seen&bit != 0 {
			return false
		}
		seen |= bit
	}
	return true
}

// fastArena holds what a decoded record's pointer fields point to.
type fastArena struct {
	version, configHash, kconfigHash, buildID string
	sourceVmlinuxSize, configHZ               uint64
	sourceVmlinuxMtime, vmlinuxOriginalSize   int64
	gitHash, ref, sourceTreePath              string
	vmlinux                                   Blob
}

type fastDecoder struct {
	b   []byte
	s   string // string(b): strings are sliced from it
	off int
	a   *fastArena
}

func (d *fastDecoder) arena() *fastArena {
	if d.a == nil {
		d.a = new(fastArena)
	}
	return d.a
}

// need reports whether n more bytes are there.
func (d *fastDecoder) need(n uint64) bool { return uint64(len(d.b)-d.off) >= n }

// nil consumes a msgpack nil if one is next.
func (d *fastDecoder) nil() bool {
	if d.off < len(d.b) && d.b[d.off] == 0xc0 {
		d.off++
		return true
	}
	return false
}

// mapLen reads a map header (fixmap, map16, map32).
func (d *fastDecoder) mapLen() (int, bool) {
	if !d.need(1) {
		return 0, false
	}
	c := d.b[d.off]
	switch {
	case c >= 0x80 && c <= 0x8f:
		d.off++
		return int(c & 0x0f), true
	case c == 0xde && d.need(3):
		n := binary.BigEndian.Uint16(d.b[d.off+1:])
		d.off += 3
		return int(n), true
	case c == 0xdf && d.need(5):
		n := binary.BigEndian.Uint32(d.b[d.off+1:])
		d.off += 5
		if uint64(n) > uint64(len(d.b)) { // every pair takes at least two bytes
			return 0, false
		}
		return int(n), true
	}
	return 0, false
}

// strBytes reads a str (fixstr, str8, str16, str32) and returns its offset
// and length in b.
func (d *fastDecoder) strBytes() (off, n int, ok bool) {
	if !d.need(1) {
		return 0, 0, false
	}
	c := d.b[d.off]
	var h int
	var l uint64
	switch {
	case c >= 0xa0 && c <= 0xbf:
		h, l = 1, uint64(c&0x1f)
	case c == 0xd9 && d.need(2):
		h, l = 2, uint64(d.b[d.off+1])
	case c == 0xda && d.need(3):
		h, l = 3, uint64(binary.BigEndian.Uint16(d.b[d.off+1:]))
	case c == 0xdb && d.need(5):
		h, l = 5, uint64(binary.BigEndian.Uint32(d.b[d.off+1:]))
	default:
		return 0, 0, false
	}
	if !d.need(uint64(h) + l) {
		return 0, 0, false
	}
	off = d.off + h
	d.off = off + int(l)
	return off, int(l), true
}

// str reads a str (a value or a map key) as a slice of s.
func (d *fastDecoder) str() (string, bool) {
	off, n, ok := d.strBytes()
	if !ok {
		return "", false
	}
	return d.s[off : off+n], true
}

// strPtr reads nil or a str; a str is stored in *slot.
func (d *fastDecoder) strPtr(slot *string) (*string, bool) {
	if d.nil() {
		return nil, true
	}
	s, ok := d.str()
	if !ok {
		return nil, false
	}
	*slot = s
	return slot, true
}

func (d *fastDecoder) bool() (bool, bool) {
	if !d.need(1) {
		return false, false
	}
	switch d.b[d.off] {
	case 0xc2:
		d.off++
		return false, true
	case 0xc3:
		d.off++
		return true, true
	}
	return false, false
}

// int reads any msgpack integer as msgpack's DecodeInt64 does; unsigned
// values above math.MaxInt64 are refused (msgpack would wrap them).
func (d *fastDecoder) int() (int64, bool) {
	if !d.need(1) {
		return 0, false
	}
	c := d.b[d.off]
	if c <= 0x7f || c >= 0xe0 {
		d.off++
		return int64(int8(c)), true
	}
	var size uint64
	switch c {
	case 0xcc, 0xd0:
		size = 1
	case 0xcd, 0xd1:
		size = 2
	case 0xce, 0xd2:
		size = 4
	case 0xcf, 0xd3:
		size = 8
	default:
		return 0, false
	}
	if !d.need(1 + size) {
		return 0, false
	}
	p := d.b[d.off+1:]
	d.off += 1 + int(size)
	be := binary.BigEndian
	switch c {
	case 0xcc:
		return int64(p[0]), true
	case 0xd0:
		return int64(int8(p[0])), true
	case 0xcd:
		return int64(be.Uint16(p)), true
	case 0xd1:
		return int64(int16(be.Uint16(p))), true
	case 0xce:
		return int64(be.Uint32(p)), true
	case 0xd2:
		return int64(int32(be.Uint32(p))), true
	case 0xcf:
		v := be.Uint64(p)
		return int64(v), v <= math.MaxInt64
	default: // 0xd3
		return int64(be.Uint64(p)), true
	}
}

// uint reads a non-negative msgpack integer as msgpack's DecodeUint64 does;
// negative values are refused (msgpack would wrap them).
func (d *fastDecoder) uint() (uint64, bool) {
	if !d.need(1) {
		return 0, false
	}
	if c := d.b[d.off]; c == 0xcf {
		if !d.need(9) {
			return 0, false
		}
		v := binary.BigEndian.Uint64(d.b[d.off+1:])
		d.off += 9
		return v, true
	}
	v, ok := d.int()
	return uint64(v), ok && v >= 0
}

func (d *fastDecoder) intPtr(slot *int64) (*int64, bool) {
	if d.nil() {
		return nil, true
	}
	v, ok := d.int()
	*slot = v
	return slot, ok
}

func (d *fastDecoder) uintPtr(slot *uint64) (*uint64, bool) {
	if d.nil() {
		return nil, true
	}
	v, ok := d.uint()
	*slot = v
	return slot, ok
}

// fields reads a map of string keys, calling field for each value; a key
// repeated or unknown to field (false) fails.
func (d *fastDecoder) fields(field func(name string) (bit uint8, ok bool)) bool {
	n, ok := d.mapLen()
	if !ok {
		return false
	}
	var seen uint8
	for range n {
		name, ok := d.str()
		if !ok {
			return false
		}
		bit, ok := field(name)
		if !ok || seen&bit != 0 {
			return false
		}
		seen |= bit
	}
	return true
}

func (d *fastDecoder) source(s *Source) bool {
	return d.fields(func(name string) (uint8, bool) {
		var ok bool
		switch name {
		case "type":
			s.Type, ok = d.str()
			return 1, ok
		case "git_hash":
			s.GitHash, ok = d.strPtr(&d.arena().gitHash)
			return 2, ok
		case "ref":
			s.Ref, ok = d.strPtr(&d.arena().ref)
			return 4, ok
		case "source_tree_path":
			s.SourceTreePath, ok = d.strPtr(&d.arena().sourceTreePath)
			return 8, ok
		}
		return 0, false
	})
}

func (d *fastDecoder) blob(b *Blob) bool {
	return d.fields(func(name string) (uint8, bool) {
		var ok bool
		switch name {
		case "sha256":
			b.Digest, ok = d.str()
			return 1, ok
		case "size":
			b.Size, ok = d.int()
			return 2, ok
		}
		return 0, false
	})
}

func (d *fastDecoder) corruptMark(m *CorruptMark) bool {
	return d.fields(func(name string) (uint8, bool) {
		var ok bool
		switch name {
		case "kind":
			m.Kind, ok = d.str()
			return 1, ok
		case "reason":
			m.Reason, ok = d.str()
			return 2, ok
		case "at":
			m.At, ok = d.str()
			return 4, ok
		}
		return 0, false
	})
}

func (d *fastDecoder) migrated(m *Migrated) bool {
	return d.fields(func(name string) (uint8, bool) {
		var ok bool
		switch name {
		case "from":
			m.From, ok = d.str()
			return 1, ok
		case "image_sha256":
			m.ImageSHA256, ok = d.str()
			return 2, ok
		case "vmlinux_sha256":
			m.VmlinuxSHA256, ok = d.str()
			return 4, ok
		case "vmlinux_size":
			m.VmlinuxSize, ok = d.int()
			return 8, ok
		case "legacy_stripped":
			m.LegacyStripped, ok = d.bool()
			return 16, ok
		case "migrated_at":
			m.MigratedAt, ok = d.str()
			return 32, ok
		}
		return 0, false
	})
}
