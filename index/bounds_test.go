package index

import (
	"runtime"
	"testing"
)

// TestDamagedLengthsAllocateNothingHuge: a record whose bytes declare a
// multi-gigabyte string, binary, array or map is refused as malformed before
// msgpack allocates anything of that size.
func TestDamagedLengthsAllocateNothingHuge(t *testing.T) {
	for name, data := range map[string][]byte{
		"bin32 key of 1.6 GiB": []byte("\x82\xc6d\x7fd\x7f0\x840"),
		"str32 of 4 GiB":       []byte("\x81\xa3key\xdb\xff\xff\xff\xff"),
		"array32 of 4G":        []byte("\x81\xa3key\xdd\xff\xff\xff\xff\x01"),
		"map32 of 4G":          []byte("\xdf\xff\xff\xff\xff"),
		"ext32 of 4 GiB":       []byte("\xc9\xff\xff\xff\xff\x01"),
		"cut header":           []byte("\x81\xa3key\xdb\xff"),
		"deep nesting":         append(make([]byte, 0, 64), []byte("\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\xc0")...),
	} {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, err := decodeRecord("k", data)
		runtime.ReadMemStats(&after)
		de, ok := err.(*DecodeError)
		if !ok || de.Kind != "malformed" {
			t.Errorf("%s: %v; want a malformed DecodeError", name, err)
		}
		if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
			t.Errorf("%s: allocated %d bytes", name, n)
		}
	}
	// A real record still passes the check and decodes.
	data, err := encodeRecord(&Record{Key: "k", Source: Source{Type: "tarball"}, Arch: "x86_64", ImageName: "bzImage",
		BuiltAt: "2026-01-01T00:00:00Z", Image: Blob{Digest: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", Size: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := checkBounds(data, 0); err != nil || n != len(data) {
		t.Fatalf("checkBounds of a real record = %d, %v; want %d", n, err, len(data))
	}
	if _, err := decodeRecord("k", data); err != nil {
		t.Fatal(err)
	}
}
