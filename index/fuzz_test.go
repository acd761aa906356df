package index_test

import (
	"bytes"
	"reflect"
	"strings"
	"testing"

	"github.com/kcache/kcache/index"
	"github.com/vmihailenco/msgpack/v5"
)

// manifestMagic is the first line of every manifest blob (index.EncodeManifest).
const manifestMagic = "KCACHE-MANIFEST v1\n"

// fuzzSeedRecords are records of every shape kcache writes: tarball, git and
// local sources, with and without a vmlinux, nullable fields set and unset,
// a corrupt mark and a migration note.
func fuzzSeedRecords() []*index.Record {
	s := func(v string) *string { return &v }
	u := uint64(123456)
	i := int64(1700000000)
	hz := uint64(250)
	osz := int64(99999)
	d := strings.Repeat("ab", 32)
	return []*index.Record{
		{Key: "k", Source: index.Source{Type: "tarball"}, Arch: "x86_64", ImageName: "bzImage",
			BuiltAt: "2026-04-18T10:00:00Z", Image: index.Blob{Digest: d, Size: 1},
			StoredAt: "2026-04-18T10:00:00.123456789Z"},
		{Key: "6.14-git", Version: s("6.14.2"), Source: index.Source{Type: "git", GitHash: s("abc"), Ref: s("v6.14")},
			Arch: "aarch64", ImageName: "Image", ConfigHash: s("1f2e3d4c"), BuiltAt: "2026-04-18T10:00:00Z",
			KconfigHash: s("c0bd848c"), HasVmlinux: true, VmlinuxStripped: true,
			SourceVmlinuxSize: &u, SourceVmlinuxMtimeSecs: &i,
			Image: index.Blob{Digest: d, Size: 10}, Vmlinux: &index.Blob{Digest: strings.Repeat("cd", 32), Size: 20},
			VmlinuxOriginalSize: &osz, BuildID: s("deadbeef"), ConfigHZ: &hz,
			StoredAt: "2026-04-18T10:00:00Z", Manifest: index.Blob{Digest: strings.Repeat("ef", 32), Size: 300},
			LastUsed: "2026-04-19T00:00:00Z",
			Corrupt:  &index.CorruptMark{Kind: index.CorruptBlobMissing, Reason: "image blob gone", At: "2026-04-19T00:00:00Z"},
			Migrated: &index.Migrated{From: "/root/.cache/ktstr", ImageSHA256: d, VmlinuxSize: 5, MigratedAt: "x"}},
		{Key: "local", Source: index.Source{Type: "local", SourceTreePath: s("/src/linux")}, Arch: "x86_64",
			ImageName: "bzImage", BuiltAt: "b", Image: index.Blob{Digest: d}},
	}
}

// FuzzDecodeRecord: the index's record decoder (reached through
// DecodeManifest, which is decodeRecord behind the magic line) never panics
// on any bytes, and a record it accepts survives an encode/decode round trip
// unchanged. Seeded with records of every shape, msgpack of wrong shapes and
// truncations of a valid record.
func FuzzDecodeRecord(f *testing.F) {
	for _, r := range fuzzSeedRecords() {
		data, err := msgpack.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
		f.Add(data[:len(data)/2])
	}
	for _, v := range []any{nil, 1, "x", []any{1, "a"}, map[string]any{"key": 1}, map[string]any{"key": "k", "source": "tarball"}} {
		data, _ := msgpack.Marshal(v)
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rec, err := index.DecodeManifest(append([]byte(manifestMagic), data...))
		if err != nil {
			if rec != nil {
				t.Fatalf("error %v with a record", err)
			}
			return
		}
		checkRoundTrip(t, rec)
	})
}

// FuzzDecodeManifest: DecodeManifest never panics on any bytes (bad magic,
// a magic prefix, garbage after it), and an accepted manifest re-encodes to
// a manifest that decodes to the same record.
func FuzzDecodeManifest(f *testing.F) {
	for _, r := range fuzzSeedRecords() {
		data, err := index.EncodeManifest(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
		f.Add(data[:len(data)-1])
	}
	f.Add([]byte(manifestMagic))
	f.Add([]byte(manifestMagic[:5]))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		rec, err := index.DecodeManifest(data)
		if err != nil {
			if rec != nil {
				t.Fatalf("error %v with a record", err)
			}
			return
		}
		if !bytes.HasPrefix(data, []byte(manifestMagic)) {
			t.Fatal("accepted a manifest without the magic line")
		}
		checkRoundTrip(t, rec)
	})
}

// checkRoundTrip: EncodeManifest of an accepted record decodes to the same
// record, minus the fields a manifest leaves out.
func checkRoundTrip(t *testing.T, rec *index.Record) {
	t.Helper()
	enc, err := index.EncodeManifest(rec)
	if err != nil {
		t.Fatalf("accepted record does not encode: %v", err)
	}
	back, err := index.DecodeManifest(enc)
	if err != nil {
		t.Fatalf("re-encoded record does not decode: %v", err)
	}
	want := *rec
	want.Manifest, want.LastUsed, want.Corrupt = index.Blob{}, "", nil
	if !reflect.DeepEqual(back, &want) {
		t.Fatalf("round trip changed the record:\n got %+v\nwant %+v", back, &want)
	}
}
