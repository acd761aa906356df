package index

import (
	"bytes"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// fastSeedRecords are records of every shape kcache writes.
func fastSeedRecords() []*Record {
	s := func(v string) *string { return &v }
	u := uint64(123456)
	i := int64(-1700000000)
	hz := uint64(math.MaxUint64)
	osz := int64(math.MaxInt64)
	d := strings.Repeat("ab", 32)
	return []*Record{
		{Key: "k", Source: Source{Type: "tarball"}, Arch: "x86_64", ImageName: "bzImage",
			BuiltAt: "2026-04-18T10:00:00Z", Image: Blob{Digest: d, Size: 1},
			StoredAt: "2026-04-18T10:00:00.123456789Z"},
		{Key: "6.14-git", Version: s("6.14.2"), Source: Source{Type: "git", GitHash: s("abc"), Ref: s("v6.14")},
			Arch: "aarch64", ImageName: "Image", ConfigHash: s("1f2e3d4c"), BuiltAt: "2026-04-18T10:00:00Z",
			KconfigHash: s("c0bd848c"), HasVmlinux: true, VmlinuxStripped: true,
			SourceVmlinuxSize: &u, SourceVmlinuxMtimeSecs: &i,
			Image: Blob{Digest: d, Size: 10}, Vmlinux: &Blob{Digest: strings.Repeat("cd", 32), Size: 20},
			VmlinuxOriginalSize: &osz, BuildID: s("deadbeef"), ConfigHZ: &hz,
			StoredAt: "2026-04-18T10:00:00Z", Manifest: Blob{Digest: strings.Repeat("ef", 32), Size: 300},
			LastUsed: "2026-04-19T00:00:00Z",
			Corrupt:  &CorruptMark{Kind: CorruptBlobMissing, Reason: "image blob gone", At: "2026-04-19T00:00:00Z"},
			Migrated: &Migrated{From: "/root/.cache/ktstr", ImageSHA256: d, VmlinuxSize: -5, LegacyStripped: true, MigratedAt: "x"}},
		{Key: "local", Source: Source{Type: "local", SourceTreePath: s(strings.Repeat("/src/linux", 30)), GitHash: s("")},
			Arch: "x86_64", ImageName: "bzImage", BuiltAt: "b", Image: Blob{Digest: d, Size: 70000}},
	}
}

// TestDecodeFastTakesEncodedRecords: every record encodeRecord writes takes
// the fast path and decodes to itself.
func TestDecodeFastTakesEncodedRecords(t *testing.T) {
	for _, want := range fastSeedRecords() {
		data, err := encodeRecord(want)
		if err != nil {
			t.Fatal(err)
		}
		var got Record
		if !decodeFast(data, &got) {
			t.Fatalf("record %q left the fast path", want.Key)
		}
		if !reflect.DeepEqual(&got, want) {
			t.Fatalf("fast decode:\n got %+v\nwant %+v", &got, want)
		}
		// Also as the default encoder writes it (no compact ints).
		data, err = msgpack.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		got = Record{}
		if !decodeFast(data, &got) || !reflect.DeepEqual(&got, want) {
			t.Fatalf("fast decode of msgpack.Marshal's record %q: %+v", want.Key, &got)
		}
	}
}

// FuzzDecodeFast: on any bytes decodeFast either declines or gives exactly
// the record msgpack.Unmarshal gives (which then must succeed), and it never
// panics.
func FuzzDecodeFast(f *testing.F) {
	for _, r := range fastSeedRecords() {
		data, err := encodeRecord(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
		f.Add(data[:len(data)/2])
		f.Add(bytes.Replace(data, []byte("\xa3key"), []byte("\xa3kez"), 1))
	}
	for _, v := range []any{nil, 1, "x", []any{1, "a"}, map[string]any{"key": 1},
		map[string]any{"key": "k", "source": "tarball"},
		map[string]any{"image": map[string]any{"size": -1}, "config_hz": -1, "has_vmlinux": nil}} {
		data, _ := msgpack.Marshal(v)
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var fast Record
		if !decodeFast(data, &fast) {
			return
		}
		var slow Record
		if err := msgpack.Unmarshal(data, &slow); err != nil {
			t.Fatalf("fast path accepted what msgpack refuses (%v): %+v", err, &fast)
		}
		if !reflect.DeepEqual(&fast, &slow) {
			t.Fatalf("fast and msgpack decodes differ:\nfast    %+v\nmsgpack %+v", &fast, &slow)
		}
		if _, err := checkBounds(data, 0); err != nil {
			t.Fatalf("fast path accepted what checkBounds refuses: %v", err)
		}
	})
}

func benchRecord(b *testing.B) []byte {
	rs := fastSeedRecords()
	data, err := encodeRecord(rs[1])
	if err != nil {
		b.Fatal(err)
	}
	return data
}

func BenchmarkDecodeRecordFast(b *testing.B) {
	data := benchRecord(b)
	b.ReportAllocs()
	var r Record
	for b.Loop() {
		if err := decodeRecordInto("k", data, &r); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeRecordMsgpack(b *testing.B) {
	data := benchRecord(b)
	b.ReportAllocs()
	for b.Loop() {
		var r Record
		if _, err := checkBounds(data, 0); err != nil {
			b.Fatal(err)
		}
		if err := msgpack.Unmarshal(data, &r); err != nil {
			b.Fatal(err)
		}
		if err := r.check(); err != nil {
			b.Fatal(err)
		}
	}
}
