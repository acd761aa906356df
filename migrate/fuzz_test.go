package migrate_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/kcache/kcache/index"
	"github.com/kcache/kcache/migrate"
)

// kinds are the error_kind words ParseMetadata may report (migrate.Kind*
// that come from the metadata text; missing and image_missing come from the
// file system, unknown from ClassifyReason only).
var kinds = map[string]bool{
	migrate.KindUnreadable: true, migrate.KindSchemaDrift: true, migrate.KindMalformed: true,
	migrate.KindTruncated: true, migrate.KindParseError: true,
}

// FuzzParseMetadata: ParseMetadata never panics; it returns exactly one of
// metadata or a corruption whose kind is one of the documented words and
// agrees with ClassifyReason of its reason; and an accepted document,
// written back the way export writes it (MarshalMetadata of MetadataOf the record),
// parses to the same metadata. Seeded with the test documents.
func FuzzParseMetadata(f *testing.F) {
	for _, s := range []string{
		goodMeta,
		`{"source":{"type":"local","future":1},"arch":"aarch64","image_name":"Image","built_at":"x","has_vmlinux":true,"vmlinux_stripped":true,"source_vmlinux_size":5,"source_vmlinux_mtime_secs":-3}`,
		`{"source":{"ref":"v6.15","type":"git","git_hash":null,"source_tree_path":"/ignored"},"arch":"x86_64","image_name":"bzImage","built_at":"b","has_vmlinux":false,"vmlinux_stripped":false}`,
		`{"source":`, `{"arch": "x86`, `{"arch": x}`, `{}`, `[]`, `null`, ``, " ", "\xff",
		`{"source":{"type":"tarball"},"has_vmlinux":true}`,
		strings.Replace(goodMeta, `"6.14.2"`, `1.5`, 1),
		strings.Replace(goodMeta, `"source_vmlinux_size": null`, `"source_vmlinux_size": -1`, 1),
		goodMeta + "x",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, c := migrate.ParseMetadata(data)
		if (m == nil) == (c == nil) {
			t.Fatalf("metadata %v and corruption %v: want exactly one", m, c)
		}
		if c != nil {
			if !kinds[c.Kind] {
				t.Fatalf("kind %q is not a documented error_kind (reason %q)", c.Kind, c.Reason)
			}
			if got := migrate.ClassifyReason(c.Reason); got != c.Kind {
				t.Fatalf("ClassifyReason(%q) = %q, want %q", c.Reason, got, c.Kind)
			}
			return
		}
		rec := &index.Record{
			Version: m.Version, Source: index.Source(m.Source), Arch: m.Arch, ImageName: m.ImageName,
			ConfigHash: m.ConfigHash, BuiltAt: m.BuiltAt, KconfigHash: m.KtstrKconfigHash,
			HasVmlinux: m.HasVmlinux, VmlinuxStripped: m.VmlinuxStripped,
			SourceVmlinuxSize: m.SourceVmlinuxSize, SourceVmlinuxMtimeSecs: m.SourceVmlinuxMtimeSecs,
		}
		out, err := migrate.MarshalMetadata(migrate.MetadataOf(rec))
		if err != nil {
			t.Fatalf("accepted metadata does not marshal: %v", err)
		}
		back, c := migrate.ParseMetadata(out)
		if c != nil {
			t.Fatalf("exported metadata does not parse: %s\n%s", c.Reason, out)
		}
		want := *m
		want.VmlinuxStripped = m.HasVmlinux && m.VmlinuxStripped
		if !reflect.DeepEqual(back, &want) {
			t.Fatalf("round trip changed the metadata:\n got %+v\nwant %+v\n%s", back, &want, out)
		}
	})
}
