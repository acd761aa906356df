package strip_test

import (
	"io"
	"os"
	"testing"

	"github.com/kcache/kcache/strip"
)

// BenchmarkStripRealVmlinux strips the real kernel named by
// KCACHE_REAL_VMLINUX (bench/fetch-kernel.sh prints one) into io.Discard.
// bench/strip.sh compares the whole command with objcopy and eu-strip.
func BenchmarkStripRealVmlinux(b *testing.B) {
	path := realVmlinux(b, false)
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(fi.Size())
	for b.Loop() {
		if _, err := strip.Strip(f, fi.Size(), io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}
