package kcache_test

// BenchmarkGC: gc removing 1,000 entries of a 10,000-entry cache
// (`--keep 9000`). The fixture is written straight through the index package
// plus real blob files (an image of 4 KiB and a manifest per entry; no
// fsyncs), because 10,000 fsynced Stores would take minutes; the cache it
// makes is one kcache opens like any other. It is rebuilt, untimed, for every
// iteration. Metrics: ns/op is the whole gc (planning, 1,000 entry locks, the
// index transaction, 2,000 unlinks, the forget transaction, the sweep's walk
// of the blob directory, the stats update); index-held-ms is how long the
// removal held the index file for writing (the target is ≤ 100 ms; unlinks
// happen after it).
//
//	go test -run '^$' -bench BenchmarkGC -benchtime 3x .

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kcache/kcache"
	"github.com/kcache/kcache/index"
)

const (
	benchGCEntries = 10_000
	benchGCKeep    = 9_000
)

// benchGCFixture writes an n-entry cache into root.
func benchGCFixture(b *testing.B, root string, n int) {
	b.Helper()
	blobDir := filepath.Join(root, "blobs", "sha256")
	write := func(data []byte) index.Blob {
		s := sha256.Sum256(data)
		d := hex.EncodeToString(s[:])
		dir := filepath.Join(blobDir, d[:2])
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, d), data, 0o444); err != nil {
			b.Fatal(err)
		}
		return index.Blob{Digest: d, Size: int64(len(data))}
	}
	var recs []*index.Record
	img := make([]byte, 4096)
	stored := time.Now().UTC().Format(time.RFC3339Nano)
	for i := range n {
		copy(img, fmt.Sprintf("bench-gc image %d\n", i))
		v := fmt.Sprintf("6.14.%d", i)
		rec := &index.Record{Key: benchKey("gc-", i), Version: &v, Source: index.Source{Type: "tarball"},
			Arch: "x86_64", ImageName: "bzImage", BuiltAt: benchBase.Add(time.Duration(i) * time.Minute).Format("2006-01-02T15:04:05Z"),
			Image: write(img), StoredAt: stored}
		m, err := index.EncodeManifest(rec)
		if err != nil {
			b.Fatal(err)
		}
		rec.Manifest = write(m)
		recs = append(recs, rec)
	}
	db, err := index.Open(filepath.Join(root, "index.db"), index.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *index.Tx) error {
		for _, r := range recs {
			if _, err := tx.Put(r, func(string) bool { return true }); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
}

func BenchmarkGC(b *testing.B) {
	var held, total time.Duration
	removed := 0
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		root := filepath.Join(b.TempDir(), "cache")
		benchGCFixture(b, root, benchGCEntries)
		c := mustOpen(root, &kcache.Options{})
		b.StartTimer()
		start := time.Now()
		rep, err := c.GC(context.Background(), kcache.GCOptions{Keep: benchPtr(benchGCKeep)})
		total += time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if len(rep.Removed) != benchGCEntries-benchGCKeep {
			b.Fatalf("removed %d entries, want %d", len(rep.Removed), benchGCEntries-benchGCKeep)
		}
		held += rep.IndexHeld
		removed += len(rep.Removed)
		_ = os.RemoveAll(root)
	}
	b.ReportMetric(float64(held.Microseconds())/1000/float64(b.N), "index-held-ms")
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "gc-ms")
	b.ReportMetric(float64(removed)/float64(b.N), "removed/op")
}
