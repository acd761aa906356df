package strip_test

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"os"
	"testing"

	"github.com/kcache/kcache/strip"
)

// FuzzStrip: whatever the input, Strip returns an error or an output that
// debug/elf parses; it never panics. Seeded with every fixture.
// CI runs it for 30 s: go test -run '^$' -fuzz FuzzStrip -fuzztime 30s ./strip
func FuzzStrip(f *testing.F) {
	for _, p := range fixtures(f) {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var out bytes.Buffer
		res, err := strip.Strip(bytes.NewReader(data), int64(len(data)), &out)
		if err != nil {
			if out.Len() != 0 {
				t.Fatalf("failed strip wrote %d bytes", out.Len())
			}
			return
		}
		if _, err := elf.NewFile(bytes.NewReader(out.Bytes())); err != nil {
			t.Fatalf("output does not parse: %v", err)
		}
		if res.OutputSize != int64(out.Len()) {
			t.Fatalf("result says %d bytes, wrote %d", res.OutputSize, out.Len())
		}
	})
}

// FuzzIKConfig: the IKCONFIG reader never panics and never returns more
// than its bound. Seeded with the fixtures and framed configs.
func FuzzIKConfig(f *testing.F) {
	for _, p := range fixtures(f) {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte("CONFIG_HZ=250\n# CONFIG_X is not set\n"))
	zw.Close()
	f.Add(append(append([]byte("junkIKCFG_ST"), gz.Bytes()...), []byte("IKCFG_ED")...))
	f.Add(append([]byte("IKCFG_ST"), gz.Bytes()[:10]...))
	f.Add([]byte("IKCFG_STIKCFG_ED"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := strip.IKConfig(data)
		if err == nil && len(cfg) > 16<<20 {
			t.Fatalf("config of %d bytes", len(cfg))
		}
		strip.ConfigValue(cfg, "HZ")
	})
}
