package main

import (
	"bufio"
	"io"
	"strconv"
	"unicode/utf8"

	"github.com/kcache/kcache"
)

// listJSONWriter streams `kcache list --json` byte for byte as writeJSON
// would print the listing with toEntryJSON's and toCorruptJSON's schema
// (encoding/json, two-space indent, HTML not escaped; listjson_test.go holds
// it to that), one entry at a time, without reflection: the listing of a
// large cache is written as it is read.
type listJSONWriter struct {
	w       *bufio.Writer
	buf     []byte
	current string
	n       int // entries written
}

func newListJSONWriter(w io.Writer, root, current string) *listJSONWriter {
	j := &listJSONWriter{w: bufio.NewWriterSize(w, 64<<10), current: current}
	b := append(j.buf[:0], "{\n  \"root\": "...)
	b = appendJSONString(b, root)
	b = append(b, ",\n  \"current_kconfig_hash\": "...)
	if current == "" {
		b = append(b, "null"...)
	} else {
		b = appendJSONString(b, current)
	}
	b = append(b, ",\n  \"entries\": ["...)
	j.buf = b
	return j
}

// add writes one row.
func (j *listJSONWriter) add(l kcache.Listed) error {
	b := j.buf
	if j.n > 0 {
		b = append(b, ',')
	}
	j.n++
	b = append(b, "\n    {\n      \"key\": "...)
	if c := l.Corrupt; c != nil {
		b = appendJSONString(b, c.Key)
		b = append(b, ",\n      \"error\": "...)
		b = appendJSONString(b, c.Reason)
		b = append(b, ",\n      \"error_kind\": "...)
		b = appendJSONString(b, c.Kind)
	} else {
		b = j.appendEntry(b, l.Entry)
	}
	b = append(b, "\n    }"...)
	if _, err := j.w.Write(b); err != nil {
		return err
	}
	j.buf = b[:0]
	return nil
}

// finish closes the document and flushes it.
func (j *listJSONWriter) finish() error {
	b := j.buf
	if j.n > 0 {
		b = append(b, "\n  "...)
	}
	b = append(b, "]\n}\n"...)
	if _, err := j.w.Write(b); err != nil {
		return err
	}
	return j.w.Flush()
}

// appendEntry appends the fields of entryJSON after "key": (see toEntryJSON).
func (j *listJSONWriter) appendEntry(b []byte, e *kcache.Entry) []byte {
	b = appendJSONString(b, e.Key)
	b = append(b, ",\n      \"version\": "...)
	b = appendJSONStringPtr(b, e.Version)
	b = append(b, ",\n      \"source\": {\n        \"type\": "...)
	b = appendString(b, e.Source.Type, true)
	switch e.Source.Type {
	case "git":
		b = append(b, ",\n        \"git_hash\": "...)
		b = appendSourceString(b, e.Source.GitHash)
		b = append(b, ",\n        \"ref\": "...)
		b = appendSourceString(b, e.Source.Ref)
	case "local":
		b = append(b, ",\n        \"source_tree_path\": "...)
		b = appendSourceString(b, e.Source.SourceTreePath)
		b = append(b, ",\n        \"git_hash\": "...)
		b = appendSourceString(b, e.Source.GitHash)
	}
	b = append(b, "\n      },\n      \"arch\": "...)
	b = appendJSONString(b, e.Arch)
	b = append(b, ",\n      \"built_at\": "...)
	b = appendJSONString(b, e.BuiltAt)
	b = append(b, ",\n      \"kconfig_hash\": "...)
	b = appendJSONStringPtr(b, e.KconfigHash)
	b = append(b, ",\n      \"kconfig_status\": "...)
	if st := e.KconfigStatus(j.current); st != "" {
		b = appendJSONString(b, st)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, ",\n      \"config_hash\": "...)
	b = appendJSONStringPtr(b, e.ConfigHash)
	b = append(b, ",\n      \"image_name\": "...)
	b = appendJSONString(b, e.ImageName)
	b = append(b, ",\n      \"image_path\": "...)
	b = appendJSONString(b, e.ImagePath)
	b = append(b, ",\n      \"image_sha256\": "...)
	b = appendJSONString(b, e.Image.Digest)
	b = append(b, ",\n      \"image_size\": "...)
	b = strconv.AppendInt(b, e.Image.Size, 10)
	b = append(b, ",\n      \"has_vmlinux\": "...)
	b = strconv.AppendBool(b, e.HasVmlinux)
	b = append(b, ",\n      \"vmlinux_stripped\": "...)
	b = strconv.AppendBool(b, e.VmlinuxStripped)
	if v := e.Vmlinux; v != nil {
		b = append(b, ",\n      \"vmlinux_path\": "...)
		b = appendJSONString(b, e.VmlinuxPath)
		b = append(b, ",\n      \"vmlinux_sha256\": "...)
		b = appendJSONString(b, v.Digest)
		b = append(b, ",\n      \"vmlinux_size\": "...)
		b = strconv.AppendInt(b, v.Size, 10)
	} else {
		b = append(b, ",\n      \"vmlinux_path\": null,\n      \"vmlinux_sha256\": null,\n      \"vmlinux_size\": null"...)
	}
	b = append(b, ",\n      \"vmlinux_original_size\": "...)
	b = appendIntPtr(b, e.VmlinuxOriginalSize)
	b = append(b, ",\n      \"build_id\": "...)
	b = appendJSONStringPtr(b, e.BuildID)
	b = append(b, ",\n      \"config_hz\": "...)
	b = appendUintPtr(b, e.ConfigHZ)
	b = append(b, ",\n      \"source_vmlinux_size\": "...)
	b = appendUintPtr(b, e.SourceVmlinuxSize)
	b = append(b, ",\n      \"source_vmlinux_mtime_secs\": "...)
	b = appendIntPtr(b, e.SourceVmlinuxMtimeSecs)
	b = append(b, ",\n      \"stored_at\": "...)
	b = appendJSONString(b, e.StoredAt)
	b = append(b, ",\n      \"last_used\": "...)
	if e.LastUsed != "" {
		b = appendJSONString(b, e.LastUsed)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, ",\n      \"pinned\": "...)
	b = strconv.AppendBool(b, e.Pinned)
	b = append(b, ",\n      \"pin_reason\": "...)
	if e.Pinned {
		b = appendJSONString(b, e.PinReason)
	} else {
		b = append(b, "null"...)
	}
	return b
}

func appendUintPtr(b []byte, p *uint64) []byte {
	if p == nil {
		return append(b, "null"...)
	}
	return strconv.AppendUint(b, *p, 10)
}

func appendIntPtr(b []byte, p *int64) []byte {
	if p == nil {
		return append(b, "null"...)
	}
	return strconv.AppendInt(b, *p, 10)
}

func appendJSONStringPtr(b []byte, p *string) []byte {
	if p == nil {
		return append(b, "null"...)
	}
	return appendJSONString(b, *p)
}

// appendSourceString is appendJSONString for the values of "source":
// sourceJSON.MarshalJSON quotes them with json.Marshal, which escapes <, >
// and & (as \u003c, \u003e, \u0026) whatever the encoder says.
func appendSourceString(b []byte, p *string) []byte {
	if p == nil {
		return append(b, "null"...)
	}
	return appendString(b, *p, true)
}

const jsonHex = "0123456789abcdef"

// plainPrefix returns how many leading bytes of s, a multiple of 8, need no
// escaping without HTML escaping (ASCII from 0x20 on, not " or \), eight
// at a time; appendString checks the rest byte by byte.
func plainPrefix(s string) int {
	i := 0
	for ; i+8 <= len(s); i += 8 {
		x := uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
			uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56
		if special8(x) {
			break
		}
	}
	return i
}

// special8 reports whether one of the eight bytes in x is below 0x20, a "
// or a \, or not ASCII (the usual SWAR tests: each is exact about whether
// any byte matches).
func special8(x uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	q := x ^ ('"' * ones)   // zero bytes where x has "
	bs := x ^ ('\\' * ones) // zero bytes where x has a backslash
	less := (x - 0x20*ones) &^ x
	return (less|(q-ones)&^q|(bs-ones)&^bs|x)&highs != 0
}

// jsonSafe and jsonSafeHTML tell the ASCII bytes that appendString copies as
// they are, without and with HTML escaping.
var jsonSafe, jsonSafeHTML = func() (plain, html [utf8.RuneSelf]bool) {
	for b := 0x20; b < utf8.RuneSelf; b++ {
		plain[b] = b != '"' && b != '\\'
		html[b] = plain[b] && b != '<' && b != '>' && b != '&'
	}
	return plain, html
}()

// appendJSONString appends s quoted as encoding/json does with HTML escaping
// off: `"` and `\` escaped, control characters as \b \f \n \r \t or \u00XX,
// invalid UTF-8 as \ufffd, U+2028 and U+2029 as \u2028 and \u2029; <, > and
// & as they are.
func appendJSONString(dst []byte, s string) []byte { return appendString(dst, s, false) }

func appendString(dst []byte, s string, escapeHTML bool) []byte {
	safe := &jsonSafe
	if escapeHTML {
		safe = &jsonSafeHTML
	}
	dst = append(dst, '"')
	start := 0
	i := 0
	if !escapeHTML {
		i = plainPrefix(s)
	}
	for i < len(s) {
		if b := s[i]; b < utf8.RuneSelf {
			if safe[b] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', jsonHex[b>>4], jsonHex[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		if c == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if c == '\u2028' || c == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', jsonHex[c&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
