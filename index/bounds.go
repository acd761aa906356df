package index

import (
	"encoding/binary"
	"fmt"
)

// maxDepth bounds nesting in checkBounds; records nest three levels deep.
const maxDepth = 32

// checkBounds walks a msgpack value and refuses any length that the data
// cannot hold. msgpack allocates a string or binary of the declared length
// before reading it, so a damaged record declaring a 4 GiB key would cost
// 4 GiB of memory; after this check every allocation is bounded by
// len(data). It returns the number of bytes the value occupies.
func checkBounds(data []byte, depth int) (int, error) {
	if len(data) == 0 {
		return 0, fmt.Errorf("msgpack: value cut short")
	}
	if depth > maxDepth {
		return 0, fmt.Errorf("msgpack: nested more than %d levels", maxDepth)
	}
	c := data[0]
	rest := len(data) - 1
	// span checks that a payload of n bytes after a header of h bytes fits.
	span := func(h int, n uint64) (int, error) {
		if uint64(rest-h) < n || rest < h {
			return 0, fmt.Errorf("msgpack: a %d-byte value in %d bytes", n, rest)
		}
		return 1 + h + int(n), nil
	}
	// items walks n elements (pairs count twice) after a header of h bytes.
	items := func(h int, n uint64) (int, error) {
		if rest < h || uint64(rest-h) < n { // every element takes at least a byte
			return 0, fmt.Errorf("msgpack: %d elements in %d bytes", n, rest)
		}
		off := 1 + h
		for range n {
			m, err := checkBounds(data[off:], depth+1)
			if err != nil {
				return 0, err
			}
			off += m
		}
		return off, nil
	}
	be := binary.BigEndian
	need := func(h int) bool { return rest >= h }
	switch {
	case c <= 0x7f, c >= 0xe0, c == 0xc0, c == 0xc2, c == 0xc3: // fixint, nil, bool
		return 1, nil
	case c >= 0x80 && c <= 0x8f: // fixmap
		return items(0, 2*uint64(c&0x0f))
	case c >= 0x90 && c <= 0x9f: // fixarray
		return items(0, uint64(c&0x0f))
	case c >= 0xa0 && c <= 0xbf: // fixstr
		return span(0, uint64(c&0x1f))
	}
	switch c {
	case 0xcc, 0xd0:
		return span(0, 1)
	case 0xcd, 0xd1:
		return span(0, 2)
	case 0xca, 0xce, 0xd2:
		return span(0, 4)
	case 0xcb, 0xcf, 0xd3:
		return span(0, 8)
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext 1, 2, 4, 8, 16 (+ type byte)
		return span(1, uint64(1)<<(c-0xd4))
	case 0xc4, 0xd9: // bin8, str8
		if !need(1) {
			break
		}
		return span(1, uint64(data[1]))
	case 0xc5, 0xda: // bin16, str16
		if !need(2) {
			break
		}
		return span(2, uint64(be.Uint16(data[1:])))
	case 0xc6, 0xdb: // bin32, str32
		if !need(4) {
			break
		}
		return span(4, uint64(be.Uint32(data[1:])))
	case 0xc7: // ext8
		if !need(1) {
			break
		}
		return span(2, uint64(data[1]))
	case 0xc8: // ext16
		if !need(2) {
			break
		}
		return span(3, uint64(be.Uint16(data[1:])))
	case 0xc9: // ext32
		if !need(4) {
			break
		}
		return span(5, uint64(be.Uint32(data[1:])))
	case 0xdc: // array16
		if !need(2) {
			break
		}
		return items(2, uint64(be.Uint16(data[1:])))
	case 0xdd: // array32
		if !need(4) {
			break
		}
		return items(4, uint64(be.Uint32(data[1:])))
	case 0xde: // map16
		if !need(2) {
			break
		}
		return items(2, 2*uint64(be.Uint16(data[1:])))
	case 0xdf: // map32
		if !need(4) {
			break
		}
		return items(4, 2*uint64(be.Uint32(data[1:])))
	default: // 0xc1 is never used
		return 0, fmt.Errorf("msgpack: invalid code %#x", c)
	}
	return 0, fmt.Errorf("msgpack: header of code %#x cut short", c)
}
