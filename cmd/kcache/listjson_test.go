package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/kcache/kcache"
	"github.com/kcache/kcache/index"
)

// listJSON is the list schema as encoding/json prints it: the reference the
// streamed writer is held to.
type listJSON struct {
	Root               string  `json:"root"`
	CurrentKconfigHash *string `json:"current_kconfig_hash"`
	Entries            []any   `json:"entries"`
}

func listingJSON(l *kcache.Listing) listJSON {
	out := listJSON{Root: l.Root, Entries: []any{}}
	if l.CurrentKconfigHash != "" {
		out.CurrentKconfigHash = &l.CurrentKconfigHash
	}
	for _, le := range l.Entries {
		if le.Corrupt != nil {
			out.Entries = append(out.Entries, toCorruptJSON(le.Corrupt))
		} else {
			out.Entries = append(out.Entries, toEntryJSON(le.Entry, l.CurrentKconfigHash))
		}
	}
	return out
}

// The streamed list JSON is byte for byte what encoding/json prints for
// listJSON, also for strings that need escaping.
func TestListJSONWriterMatchesEncodingJSON(t *testing.T) {
	odd := "a<b>&c\"d\\e\x00\x01\b\f\n\r\t\x1f\x7f é \u2028\u2029 \xff\xfe end"
	p := func(s string) *string { return &s }
	i64 := func(v int64) *int64 { return &v }
	u64 := func(v uint64) *uint64 { return &v }
	full := &kcache.Entry{Record: index.Record{
		Key: "k" + odd, Version: p(odd), Source: index.Source{Type: "git", GitHash: p("abc<&>"), Ref: p(odd)},
		Arch: "x86_64", ImageName: odd, ConfigHash: p("12345678"), BuiltAt: "2026-01-01T00:00:00Z",
		KconfigHash: p("11111111"), HasVmlinux: true, VmlinuxStripped: true, SourceVmlinuxSize: u64(1 << 63),
		SourceVmlinuxMtimeSecs: i64(-5), Image: index.Blob{Digest: "ab", Size: 12},
		Vmlinux: &index.Blob{Digest: "cd", Size: 1 << 40}, VmlinuxOriginalSize: i64(7), BuildID: p(odd),
		ConfigHZ: u64(250), StoredAt: odd, LastUsed: "2026-02-02T00:00:00Z",
	}, ImagePath: "/x/" + odd, VmlinuxPath: "/y/" + odd, Pinned: true, PinReason: odd}
	local := &kcache.Entry{Record: index.Record{Key: "l", Source: index.Source{Type: "local", SourceTreePath: p(odd)},
		KconfigHash: p("22222222")}}
	bare := &kcache.Entry{Record: index.Record{Key: "t", Source: index.Source{Type: "tarball"}}, Pinned: true}
	for _, l := range []*kcache.Listing{
		{Root: "/r" + odd},
		{Root: "/r", CurrentKconfigHash: "11111111", Entries: []kcache.Listed{
			{Key: full.Key, Entry: full}, {Key: "l", Entry: local}, {Key: "t", Entry: bare},
			{Key: "bad" + odd, Corrupt: &kcache.CorruptError{Key: "bad" + odd, Kind: "malformed", Reason: odd}},
		}},
		{Root: "/r", Entries: []kcache.Listed{{Key: "l", Entry: local}}},
	} {
		var want, got bytes.Buffer
		if err := writeJSON(&want, listingJSON(l)); err != nil {
			t.Fatal(err)
		}
		w := newListJSONWriter(&got, l.Root, l.CurrentKconfigHash)
		for _, le := range l.Entries {
			if err := w.add(le); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.finish(); err != nil {
			t.Fatal(err)
		}
		if got.String() != want.String() {
			t.Errorf("streamed:\n%s\nencoding/json:\n%s", got.String(), want.String())
		}
	}
}

// appendJSONString quotes like encoding/json without HTML escaping, for
// strings of every length around the eight-byte steps, with a special byte
// at every position.
func TestAppendJSONStringMatchesEncodingJSON(t *testing.T) {
	specials := []string{"\"", "\\", "\x00", "\x1f", "\n", "\x7f", "é", "\xff", "\u2028", "<", "&", " ", "~"}
	for n := range 26 {
		base := strings.Repeat("abcdefgh", 4)[:n]
		for _, sp := range specials {
			for pos := 0; pos <= n; pos++ {
				s := base[:pos] + sp + base[pos:]
				var want bytes.Buffer
				enc := json.NewEncoder(&want)
				enc.SetEscapeHTML(false)
				if err := enc.Encode(s); err != nil {
					t.Fatal(err)
				}
				if got := string(appendJSONString(nil, s)) + "\n"; got != want.String() {
					t.Fatalf("appendJSONString(%q) = %s, encoding/json %s", s, got, want.String())
				}
			}
		}
		if got, want := string(appendJSONString(nil, base)), `"`+base+`"`; got != want {
			t.Fatalf("appendJSONString(%q) = %s", base, got)
		}
	}
}
