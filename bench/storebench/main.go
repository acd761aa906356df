// Command storebench is bench/store.sh's helper for small-entry store
// throughput. It is a benchmark helper, not a tool:
//
//	storebench gen DIR N IMAGE_BYTES VMLINUX_BYTES
//	    writes DIR/image.I and DIR/vmlinux.I for I in 0..N-1: random bytes,
//	    distinct per I (so no store deduplicates against another)
//	storebench lib ROOT DIR N
//	    stores those N pairs through the library (kcache.Open + Store, fsyncs
//	    as always) in one process and prints the wall time in seconds
package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/kcache/kcache"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "storebench:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	switch {
	case len(args) == 5 && args[0] == "gen":
		n, err1 := strconv.Atoi(args[2])
		isz, err2 := strconv.Atoi(args[3])
		vsz, err3 := strconv.Atoi(args[4])
		if err1 != nil || err2 != nil || err3 != nil {
			return fmt.Errorf("bad number in %v", args)
		}
		for i := range n {
			for _, f := range []struct {
				name string
				size int
			}{{"image", isz}, {"vmlinux", vsz}} {
				b := make([]byte, f.size)
				_, _ = rand.Read(b)
				if err := os.WriteFile(filepath.Join(args[1], f.name+"."+strconv.Itoa(i)), b, 0o644); err != nil {
					return err
				}
			}
		}
		return nil
	case len(args) == 4 && args[0] == "lib":
		n, err := strconv.Atoi(args[3])
		if err != nil {
			return err
		}
		c, err := kcache.Open(args[1], &kcache.Options{})
		if err != nil {
			return err
		}
		start := time.Now()
		for i := range n {
			s := strconv.Itoa(i)
			_, err := c.Store(context.Background(), "bench-"+s, kcache.Artifacts{
				Image:   filepath.Join(args[2], "image."+s),
				Vmlinux: filepath.Join(args[2], "vmlinux."+s),
			}, kcache.Metadata{Arch: "x86_64", ImageName: "bzImage", Source: kcache.Source{Type: "tarball"}})
			if err != nil {
				return err
			}
		}
		fmt.Printf("%.6f\n", time.Since(start).Seconds())
		return nil
	}
	return fmt.Errorf("usage: storebench gen DIR N IMAGE_BYTES VMLINUX_BYTES | lib ROOT DIR N")
}
