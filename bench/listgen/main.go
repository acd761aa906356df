// Command listgen builds the two caches that bench/list10k.sh lists: the
// same N kernels in ktstr's directory layout (written directly, without
// fsyncs, as ktstr writes) and in a kcache cache (each stored through the
// kcache library's Store, so the index file has the shape N commits give
// it). It is a benchmark helper, not a tool:
//
//	listgen N KTSTR_ROOT KCACHE_ROOT
//
// Entry i has key 6.14.<i>-tarball-x86_64-kcc0bd848c, built_at one minute
// after entry i-1, its own 4 KiB image and 16 KiB vmlinux (random bytes,
// stamped with i, so nothing deduplicates; the vmlinux is not an ELF, so
// kcache stores it unstripped, as ktstr's raw-copy fallback would).
package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/kcache/kcache"
	"github.com/kcache/kcache/internal/legacy"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "listgen:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	direct := len(args) > 0 && args[0] == "-direct"
	if direct {
		args = args[1:]
	}
	if len(args) != 3 {
		return fmt.Errorf("usage: listgen [-direct] N KTSTR_ROOT KCACHE_ROOT")
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n <= 0 {
		return fmt.Errorf("entry count %q is not a positive number", args[0])
	}
	ktstr, kroot := args[1], args[2]
	if direct {
		return runDirect(n, ktstr, kroot)
	}
	c, err := kcache.Open(kroot, &kcache.Options{})
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(1, 2))
	base := make([]byte, 4096+16384)
	for i := range base {
		base[i] = byte(rng.Uint32())
	}
	version := "6.14.2"
	jobs := make(chan int)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for range 4 { // overlap the fsyncs of Store; the index commits serialise anyway
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				key := fmt.Sprintf("6.14.%d-tarball-x86_64-kcc0bd848c", i)
				dir := filepath.Join(ktstr, key)
				art := kcache.Artifacts{Image: filepath.Join(dir, "bzImage"), Vmlinux: filepath.Join(dir, "vmlinux")}
				meta := kcache.Metadata{Version: &version, Source: kcache.Source{Type: "tarball"}, Arch: "x86_64",
					ImageName: "bzImage", BuiltAt: time.Unix(1775000000+int64(i)*60, 0).UTC().Format(time.RFC3339)}
				if _, err := c.Store(context.Background(), key, art, meta); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	for i := range n {
		key := fmt.Sprintf("6.14.%d-tarball-x86_64-kcc0bd848c", i)
		dir := filepath.Join(ktstr, key)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		data := append([]byte{}, base...)
		binary.LittleEndian.PutUint64(data, uint64(i))
		binary.LittleEndian.PutUint64(data[4096:], uint64(i))
		if err := os.WriteFile(filepath.Join(dir, "bzImage"), data[:4096], 0o644); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "vmlinux"), data[4096:], 0o644); err != nil {
			return err
		}
		meta, err := legacy.MarshalMetadata(legacy.Metadata{
			Version: &version, Source: legacy.Source{Type: "tarball"}, Arch: "x86_64", ImageName: "bzImage",
			BuiltAt:    time.Unix(1775000000+int64(i)*60, 0).UTC().Format("2006-01-02T15:04:05Z"),
			HasVmlinux: true,
		})
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "metadata.json"), meta, 0o644); err != nil {
			return err
		}
		select {
		case err := <-errs:
			close(jobs)
			return err
		case jobs <- i:
		}
		if (i+1)%1000 == 0 {
			fmt.Fprintf(os.Stderr, "listgen: %d/%d\n", i+1, n)
		}
	}
	close(jobs)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
	}
	return nil
}
