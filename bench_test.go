package kcache_test

// Benchmarks of Store, Lookup and List on a 1000-entry cache, each run side by
// side against ktstr's per-directory layout (internal/legacy) in the same
// `go test -bench` run: every benchmark has the sub-benchmarks impl=kcache and
// impl=legacy. BENCHMARKS.md has the commands, the numbers and what they mean;
// bench/run.sh reproduces them.
//
// Fixtures: each top-level benchmark builds its 1000-entry caches (one per
// implementation, through the implementation's own Store, fsyncs included)
// the first time the sub-benchmark runs and reuses them for every later
// invocation, -count repetitions included; the build is never timed. Every
// stored kernel has distinct bytes, so kcache's content addressing does not
// turn the fixture into two shared blobs.
//
// kcache's Lookup opens the bbolt index per call (by design) and rewrites
// last_used when it is more than an hour old, which takes a read-write open
// and an fsynced commit. The Lookup fixture looks every key up once before
// timing starts and checks that last_used was recorded, so the timed lookups
// are the steady state: read-only open, one read transaction, two blob stats.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kcache/kcache"
	"github.com/kcache/kcache/internal/legacy"
)

const benchEntries = 1000

// benchSeq numbers every stored kernel in the process, so no two stores
// ever see the same bytes (see benchInputs.stamp).
var benchSeq atomic.Uint64

// benchInputs is an image and a vmlinux file that Store copies in.
type benchInputs struct {
	image, vmlinux *os.File
}

func benchNewInputs(b *testing.B, imageSize, vmlinuxSize int) *benchInputs {
	b.Helper()
	dir := b.TempDir()
	rng := rand.NewChaCha8([32]byte{1})
	mk := func(name string, size int) *os.File {
		buf := make([]byte, size)
		_, _ = rng.Read(buf)
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, buf, 0o644); err != nil {
			b.Fatal(err)
		}
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { f.Close() })
		return f
	}
	return &benchInputs{image: mk("bzImage", imageSize), vmlinux: mk("vmlinux", vmlinuxSize)}
}

// stamp writes n over the first 8 bytes of both files (two 8-byte pwrites,
// timed alike for both implementations).
func (in *benchInputs) stamp(b *testing.B, n uint64) {
	var buf [8]byte
	binary.LittleEndian.PutUint64(buf[:], n)
	for _, f := range []*os.File{in.image, in.vmlinux} {
		if _, err := f.WriteAt(buf[:], 0); err != nil {
			b.Fatal(err)
		}
	}
}

func benchKey(prefix string, i int) string {
	return fmt.Sprintf("%s6.14.%d-tarball-x86_64-kcc0bd848c", prefix, i)
}

var benchBase = time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)

func benchPtr[T any](v T) *T { return &v }

// benchImpl is one cache implementation under test.
type benchImpl struct {
	name   string
	store  func(key string, in *benchInputs, builtAt time.Time) error
	lookup func(key string) error
	list   func() (int, error)
	remove func(key string) error
	warm   func(keys []string) error // make the steady state before timing
}

func benchImpls(dir string) []*benchImpl {
	kroot, lroot := filepath.Join(dir, "kcache"), filepath.Join(dir, "legacy")
	c := mustOpen(kroot, &kcache.Options{})
	kstore := func(key string, in *benchInputs, at time.Time) error {
		_, err := c.Store(context.Background(), key, kcache.Artifacts{Image: in.image.Name(), Vmlinux: in.vmlinux.Name()}, kcache.Metadata{
			Version: benchPtr("6.14.2"), Source: kcache.Source{Type: "tarball"}, Arch: "x86_64", ImageName: "bzImage",
			ConfigHash: benchPtr("1f2e3d4c"), BuiltAt: at.Format(time.RFC3339), KconfigHash: benchPtr("c0bd848c"),
		})
		return err
	}
	lstore := func(key string, in *benchInputs, at time.Time) error {
		_, err := legacy.Store(lroot, key, in.image.Name(), in.vmlinux.Name(), legacy.Metadata{
			Version: benchPtr("6.14.2"), Source: legacy.Source{Type: "tarball"}, Arch: "x86_64", ImageName: "bzImage",
			ConfigHash: benchPtr("1f2e3d4c"), BuiltAt: at.Format("2006-01-02T15:04:05Z"), KtstrKconfigHash: benchPtr("c0bd848c"),
		})
		return err
	}
	return []*benchImpl{
		{
			name:  "kcache",
			store: kstore,
			lookup: func(key string) error {
				_, err := c.Lookup(context.Background(), key)
				return err
			},
			list: func() (int, error) {
				l, err := c.List(context.Background(), kcache.ListOptions{})
				if err != nil {
					return 0, err
				}
				for _, e := range l.Entries {
					if e.Corrupt != nil {
						return 0, e.Corrupt
					}
				}
				return len(l.Entries), nil
			},
			remove: func(key string) error { return c.Remove(context.Background(), key, kcache.RemoveOptions{}) },
			warm: func(keys []string) error {
				for _, k := range keys {
					if _, err := c.Lookup(context.Background(), k); err != nil {
						return err
					}
				}
				// Every later lookup must be read-only: last_used is fresh.
				for _, k := range keys {
					e, err := c.Lookup(context.Background(), k)
					if err != nil {
						return err
					}
					if at, err := time.Parse(time.RFC3339, e.LastUsed); err != nil || time.Since(at) > 30*time.Minute {
						return fmt.Errorf("%s: last_used %q not recorded by the first lookup; timed lookups would write", k, e.LastUsed)
					}
				}
				return nil
			},
		},
		{
			name:  "legacy",
			store: lstore,
			lookup: func(key string) error {
				_, err := legacy.Lookup(lroot, key)
				return err
			},
			list: func() (int, error) {
				l, err := legacy.List(lroot)
				for _, e := range l {
					if e.Entry == nil {
						return 0, errors.New(e.Key + ": " + e.Corrupt)
					}
				}
				return len(l), err
			},
			remove: func(key string) error { return os.RemoveAll(filepath.Join(lroot, key)) },
			warm: func(keys []string) error {
				for _, k := range keys {
					if _, err := legacy.Lookup(lroot, k); err != nil {
						return err
					}
				}
				return nil
			},
		},
	}
}

// populate stores benchEntries small kernels (4 KiB image, 16 KiB vmlinux,
// distinct bytes each) with built_at in shuffled order, and returns the keys.
func (impl *benchImpl) populate(b *testing.B) []string {
	b.Helper()
	start := time.Now()
	in := benchNewInputs(b, 4<<10, 16<<10)
	order := rand.New(rand.NewPCG(1, 2)).Perm(benchEntries)
	keys := make([]string, benchEntries)
	for i := range keys {
		keys[i] = benchKey("", i)
		in.stamp(b, benchSeq.Add(1))
		if err := impl.store(keys[i], in, benchBase.Add(time.Duration(order[i])*time.Minute)); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("built a %d-entry %s cache in %s", benchEntries, impl.name, time.Since(start).Round(time.Millisecond))
	return keys
}

// BenchmarkStore stores one kernel (64 KiB image, 256 KiB vmlinux, new bytes
// every time) into a cache that holds 1000 entries: op=new under a fresh key,
// op=replace over the same key. Keys added by op=new are removed (untimed)
// after each run, so every run starts from the 1000 entries.
func BenchmarkStore(b *testing.B) {
	dir := b.TempDir()
	for _, impl := range benchImpls(dir) {
		in := benchNewInputs(b, 64<<10, 256<<10)
		ready := false
		setup := func(b *testing.B) {
			if ready {
				return
			}
			ready = true
			impl.populate(b)
			in.stamp(b, benchSeq.Add(1))
			if err := impl.store("bench-replace", in, benchBase); err != nil {
				b.Fatal(err)
			}
		}
		b.Run("impl="+impl.name+"/op=new", func(b *testing.B) {
			setup(b)
			var added []string
			b.Cleanup(func() {
				for _, k := range added {
					if err := impl.remove(k); err != nil {
						b.Error(err)
					}
				}
			})
			b.ReportAllocs()
			for b.Loop() {
				n := benchSeq.Add(1)
				in.stamp(b, n)
				key := benchKey("new-", int(n))
				if err := impl.store(key, in, benchBase); err != nil {
					b.Fatal(err)
				}
				added = append(added, key)
			}
		})
		b.Run("impl="+impl.name+"/op=replace", func(b *testing.B) {
			setup(b)
			b.ReportAllocs()
			for b.Loop() {
				in.stamp(b, benchSeq.Add(1))
				if err := impl.store("bench-replace", in, benchBase); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkLookup looks up one key of a 1000-entry cache per iteration,
// walking all keys in a fixed random order. For kcache this is a whole
// library call: validate, read-only bbolt open, read transaction, stat of
// both blobs, close.
func BenchmarkLookup(b *testing.B) {
	dir := b.TempDir()
	for _, impl := range benchImpls(dir) {
		var keys []string
		b.Run("impl="+impl.name, func(b *testing.B) {
			if keys == nil {
				keys = impl.populate(b)
				if err := impl.warm(keys); err != nil {
					b.Fatal(err)
				}
				rand.New(rand.NewPCG(3, 4)).Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if err := impl.lookup(keys[i%len(keys)]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// BenchmarkList lists all 1000 entries, newest first, per iteration.
func BenchmarkList(b *testing.B) {
	dir := b.TempDir()
	for _, impl := range benchImpls(dir) {
		var ready bool
		b.Run("impl="+impl.name, func(b *testing.B) {
			if !ready {
				impl.populate(b)
				ready = true
			}
			b.ReportAllocs()
			for b.Loop() {
				n, err := impl.list()
				if err != nil {
					b.Fatal(err)
				}
				if n != benchEntries {
					b.Fatalf("listed %d entries, want %d", n, benchEntries)
				}
			}
		})
	}
}
