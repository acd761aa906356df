package strip

import (
	"io"
	"os"
	"testing"
)

func BenchmarkRealVmlinux(b *testing.B) {
	p := os.Getenv("KCACHE_REAL_VMLINUX")
	if p == "" {
		b.Skip()
	}
	f, _ := os.Open(p)
	fi, _ := f.Stat()
	for b.Loop() {
		if _, err := Strip(f, fi.Size(), io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}
