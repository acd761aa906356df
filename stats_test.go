package kcache_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/kcache/kcache"
	"github.com/kcache/kcache/index"
)

// ---- helpers ----

// storeImage stores key with an image of the given content (and a vmlinux
// when vmlinux is not nil) and returns the entry.
func storeImage(t *testing.T, c *kcache.Cache, key string, image, vmlinux []byte) *kcache.Entry {
	t.Helper()
	src := t.TempDir()
	art := kcache.Artifacts{Image: writeFile(t, src, "bzImage", image)}
	if vmlinux != nil {
		art.Vmlinux = writeFile(t, src, "vmlinux", vmlinux)
	}
	e, err := c.Store(context.Background(), key, art, tarball)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// updateIndex runs fn in a write transaction on root's index, bypassing the
// cache (to set last_used or a counter to a chosen value).
func updateIndex(t *testing.T, root string, fn func(tx *index.Tx) error) {
	t.Helper()
	db, err := index.Open(filepath.Join(root, "index.db"), index.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
}

// treeState is every path under a root with its mode, mtime and size (and
// a regular file's sha256), plus the bytes of <root>/index.db: two equal
// states mean nothing was written.
type treeState struct {
	files map[string]string
	index []byte
}

func snapshotTree(t *testing.T, root string) treeState {
	t.Helper()
	st := treeState{files: map[string]string{}}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && p == root {
			return fs.SkipAll
		}
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		desc := fi.Mode().String() + " " + fi.ModTime().Format(time.RFC3339Nano) + " " + strconv.FormatInt(fi.Size(), 10)
		if fi.Mode().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(data)
			desc += " " + hex.EncodeToString(sum[:])
		}
		st.files[p] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	st.index, _ = os.ReadFile(filepath.Join(root, "index.db"))
	return st
}

func (a treeState) diff(t *testing.T, b treeState, what string) {
	t.Helper()
	for p, s := range a.files {
		if b.files[p] != s {
			t.Errorf("%s changed %s: %q -> %q", what, p, s, b.files[p])
		}
	}
	for p := range b.files {
		if _, ok := a.files[p]; !ok {
			t.Errorf("%s created %s", what, p)
		}
	}
	if !bytes.Equal(a.index, b.index) {
		t.Errorf("%s changed the bytes of index.db", what)
	}
}

// duBlobs sums the sizes of every regular file under <root>/blobs, as du
// would without block rounding.
func duBlobs(t *testing.T, root string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(filepath.Join(root, "blobs"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		fi, err := d.Info()
		if err == nil {
			n += fi.Size()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func mustStats(t *testing.T, c *kcache.Cache) *kcache.StatsReport {
	t.Helper()
	r, err := c.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// ---- last_used ----

// A lookup records last_used; another lookup within the hour writes nothing
// (index.db stays byte-identical); once last_used is more than an hour old
// the next lookup records it again.
func TestLookupRecordsLastUsedAtMostHourly(t *testing.T) {
	c, root := newCache(t)
	storeImage(t, c, "k", []byte("image"), nil)
	if e, err := c.Describe(context.Background(), "k"); err != nil || e.LastUsed != "" {
		t.Fatalf("fresh entry: last_used %q, %v; want empty (store is not a use)", e.LastUsed, err)
	}

	before := time.Now().Truncate(time.Second)
	e, err := c.Lookup(context.Background(), "k")
	if err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	first := lastUsedOf(t, c, "k")
	if first.Before(before) || first.After(after) || e.LastUsed != first.Format(time.RFC3339) {
		t.Fatalf("after the first lookup last_used = %v (entry says %q); want between %v and %v", first, e.LastUsed, before, after)
	}

	// Within the hour: no write at all.
	idx := snapshotTree(t, root)
	for range 3 {
		if _, err := c.Lookup(context.Background(), "k"); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(idx.index, snapshotTree(t, root).index) {
		t.Fatal("a lookup within the hour of the last one rewrote index.db")
	}

	// 59 minutes old: still not rewritten.
	old := time.Now().Add(-59 * time.Minute).UTC().Truncate(time.Second)
	updateIndex(t, root, func(tx *index.Tx) error { return tx.SetLastUsed("k", old) })
	if _, err := c.Lookup(context.Background(), "k"); err != nil {
		t.Fatal(err)
	}
	if got := lastUsedOf(t, c, "k"); !got.Equal(old) {
		t.Fatalf("last_used 59 minutes old was rewritten to %v", got)
	}

	// 61 minutes old: recorded anew.
	stale := time.Now().Add(-61 * time.Minute).UTC().Truncate(time.Second)
	updateIndex(t, root, func(tx *index.Tx) error { return tx.SetLastUsed("k", stale) })
	before = time.Now().Truncate(time.Second)
	if _, err := c.Lookup(context.Background(), "k"); err != nil {
		t.Fatal(err)
	}
	if got := lastUsedOf(t, c, "k"); got.Before(before) {
		t.Fatalf("last_used 61 minutes old was not rewritten by a lookup: %v", got)
	}

	// Describe is not a use.
	updateIndex(t, root, func(tx *index.Tx) error { return tx.SetLastUsed("k", stale) })
	if _, err := c.Describe(context.Background(), "k"); err != nil {
		t.Fatal(err)
	}
	if got := lastUsedOf(t, c, "k"); !got.Equal(stale) {
		t.Fatalf("Describe rewrote last_used to %v", got)
	}
}

func lastUsedOf(t *testing.T, c *kcache.Cache, key string) time.Time {
	t.Helper()
	e, err := c.Describe(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	at, err := time.Parse(time.RFC3339, e.LastUsed)
	if err != nil {
		t.Fatalf("last_used %q: %v", e.LastUsed, err)
	}
	return at
}

// A read-only cache writes nothing: lookups (hit or miss) leave every file
// under the root as it was, and calls that must write fail with ErrReadOnly
// before touching anything — no lock file, no staging directory.
func TestReadOnlyWritesNothing(t *testing.T) {
	c, root := newCache(t)
	storeImage(t, c, "k", []byte("image"), nil)
	ro := mustOpen(root, &kcache.Options{ReadOnly: true})
	before := snapshotTree(t, root)

	if _, err := ro.Lookup(context.Background(), "k"); err != nil {
		t.Fatal(err)
	}
	o, err := ro.OpenEntry(context.Background(), "k")
	if err != nil {
		t.Fatal(err)
	}
	o.Close()
	if _, err := ro.Lookup(context.Background(), "missing"); !errors.Is(err, kcache.ErrNotFound) {
		t.Fatalf("Lookup(missing) = %v", err)
	}
	if _, err := ro.Stats(context.Background()); err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	if _, err := ro.Store(context.Background(), "new", kcache.Artifacts{Image: writeFile(t, src, "bzImage", []byte("x"))}, tarball); !errors.Is(err, kcache.ErrReadOnly) {
		t.Fatalf("read-only Store = %v; want ErrReadOnly", err)
	}
	if err := ro.Remove(context.Background(), "k", kcache.RemoveOptions{}); !errors.Is(err, kcache.ErrReadOnly) {
		t.Fatalf("read-only Remove = %v; want ErrReadOnly", err)
	}
	if _, err := ro.Sweep(context.Background(), kcache.SweepOptions{}); !errors.Is(err, kcache.ErrReadOnly) {
		t.Fatalf("read-only Sweep = %v; want ErrReadOnly", err)
	}
	before.diff(t, snapshotTree(t, root), "the read-only cache")
	if e, _ := c.Describe(context.Background(), "k"); e.LastUsed != "" {
		t.Errorf("a read-only lookup recorded last_used %q", e.LastUsed)
	}
}

// ---- stats ----

// On a healthy cache the bytes the index records equal the bytes in blobs/;
// two entries sharing an image save that image's size.
func TestStatsBytesAndDedup(t *testing.T) {
	c, root := newCache(t)
	image := bytes.Repeat([]byte("shared image "), 3000)
	a := storeImage(t, c, "a", image, bytes.Repeat([]byte("vmlinux of a "), 2000))
	b := storeImage(t, c, "b", image, nil)
	storeImage(t, c, "c", []byte("image of c"), nil)
	if err := c.Pin(context.Background(), "b", "keep"); err != nil {
		t.Fatal(err)
	}
	if a.Image.Digest != b.Image.Digest {
		t.Fatal("the shared image was not deduplicated")
	}
	r := mustStats(t, c)
	if r.Entries != (kcache.EntryCounts{Total: 3, Valid: 3, Corrupt: 0, Pinned: 1}) {
		t.Errorf("entries = %+v", r.Entries)
	}
	du := duBlobs(t, root)
	if r.Blobs.RecordedBytes != du || r.Blobs.OnDiskBytes != du {
		t.Errorf("recorded %d, on disk %d, du of blobs/ %d; want all equal", r.Blobs.RecordedBytes, r.Blobs.OnDiskBytes, du)
	}
	files := blobFiles(t, root)
	if r.Blobs.RecordedCount != len(files) || r.Blobs.OnDiskCount != len(files) {
		t.Errorf("recorded %d blobs, %d on disk; blobs/ holds %d files", r.Blobs.RecordedCount, r.Blobs.OnDiskCount, len(files))
	}
	if r.Blobs.DedupSavedBytes != a.Image.Size {
		t.Errorf("dedup saved %d bytes; want the shared image's %d", r.Blobs.DedupSavedBytes, a.Image.Size)
	}
	if r.Blobs.UnreferencedCount != 0 || r.Blobs.MissingCount != 0 {
		t.Errorf("healthy cache: %d unreferenced, %d missing", r.Blobs.UnreferencedCount, r.Blobs.MissingCount)
	}
	if fi, err := os.Stat(c.IndexPath()); err != nil || r.Index.SizeBytes != fi.Size() || r.Index.PageSize <= 0 {
		t.Errorf("index = %+v (file: %v)", r.Index, err)
	}
	if r.Index.FreeBytes != int64(r.Index.FreePages*r.Index.PageSize) || r.Index.FreeBytes >= r.Index.SizeBytes {
		t.Errorf("index free pages = %+v", r.Index)
	}

	// An orphan file and a lost blob: the two sides disagree, and say how.
	orphan := c.BlobPath(sha256Hex("orphan"))
	if err := os.MkdirAll(filepath.Dir(orphan), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Dir(orphan), filepath.Base(orphan), []byte("orphan"))
	lost, err := c.Describe(context.Background(), "c")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(lost.ImagePath); err != nil {
		t.Fatal(err)
	}
	r2 := mustStats(t, c)
	if r2.Entries.Corrupt != 1 || r2.Entries.Valid != 2 || r2.Blobs.MissingCount != 1 {
		t.Errorf("after losing c's image: entries %+v, missing %d", r2.Entries, r2.Blobs.MissingCount)
	}
	if r2.Blobs.UnreferencedCount != 1 || r2.Blobs.UnreferencedBytes != int64(len("orphan")) {
		t.Errorf("unreferenced = %d files, %d bytes; want the orphan", r2.Blobs.UnreferencedCount, r2.Blobs.UnreferencedBytes)
	}
	if r2.Blobs.RecordedBytes != r.Blobs.RecordedBytes || r2.Blobs.OnDiskBytes != duBlobs(t, root) {
		t.Errorf("recorded %d (was %d), on disk %d (du %d)", r2.Blobs.RecordedBytes, r.Blobs.RecordedBytes, r2.Blobs.OnDiskBytes, duBlobs(t, root))
	}

	// A file named like c's lost image but not at its blob path does not
	// make it present: it is unreferenced, and the blob is still missing.
	stray := filepath.Join(root, "blobs", filepath.Base(lost.ImagePath))
	writeFile(t, filepath.Dir(stray), filepath.Base(stray), []byte("stray"))
	r3 := mustStats(t, c)
	if r3.Blobs.MissingCount != 1 || r3.Blobs.UnreferencedCount != 2 || r3.Blobs.UnreferencedBytes != int64(len("orphan")+len("stray")) {
		t.Errorf("with %s: missing %d, unreferenced %d files %d bytes; want 1 missing, the orphan and the stray file unreferenced",
			stray, r3.Blobs.MissingCount, r3.Blobs.UnreferencedCount, r3.Blobs.UnreferencedBytes)
	}
}

// Stats counts staging and quarantine usage, shows the last gc and sweep
// from the index's stats bucket (null until they happen), and on a missing
// root reports an empty cache and creates nothing.
func TestStatsUsageAndTimes(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	r, err := mustOpen(missing, nil).Stats(context.Background())
	if err != nil || r.Entries.Total != 0 || r.LastSweep != nil || r.LastGC != nil || r.LastGCFreedBytes != nil {
		t.Fatalf("Stats of a missing root = %+v, %v", r, err)
	}
	if _, err := os.Stat(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("Stats created the missing root")
	}

	c, root := newCache(t)
	start := time.Now().Truncate(time.Second)
	storeImage(t, c, "k0", []byte("image 0"), nil) // no index yet: nothing to sweep against
	storeImage(t, c, "k", []byte("image"), nil)    // the first store with an index sweeps
	r = mustStats(t, c)
	if r.LastSweep == nil || r.LastSweep.Before(start) {
		t.Errorf("last sweep after the second store = %v; want about now", r.LastSweep)
	}
	if r.LastGC != nil || r.LastGCFreedBytes != nil || r.GCRuns != 0 {
		t.Errorf("gc never ran but stats says %v, %v, %d runs", r.LastGC, r.LastGCFreedBytes, r.GCRuns)
	}
	if r.Quarantine.Files != 0 || r.Staging.Dirs != 0 || r.Staging.Bytes != 0 {
		t.Errorf("quarantine %+v, staging %+v; want empty", r.Quarantine, r.Staging)
	}

	gcAt := time.Date(2026, 4, 1, 12, 0, 0, 0, time.UTC)
	updateIndex(t, root, func(tx *index.Tx) error {
		return errors.Join(tx.SetStat(index.StatLastGC, gcAt.Unix()), tx.SetStat(index.StatLastGCFree, 12345), tx.AddStat(index.StatGCRuns, 2))
	})
	for p, data := range map[string]string{
		"quarantine/blobs/ab/file1":   "12345",
		"quarantine/foreign":          "123",
		".tmp/123-abcdef/blob-x":      "1234567",
		".tmp/123-abcdef.lock":        "",
		".tmp/456-abcdef/blob-y":      "12",
		".tmp/456-abcdef/nested/z.io": "1",
	} {
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, root, p, []byte(data))
	}
	r = mustStats(t, c)
	if r.LastGC == nil || !r.LastGC.Equal(gcAt) || r.LastGCFreedBytes == nil || *r.LastGCFreedBytes != 12345 || r.GCRuns != 2 {
		t.Errorf("gc: last %v, freed %v, runs %d", r.LastGC, r.LastGCFreedBytes, r.GCRuns)
	}
	if r.Quarantine != (kcache.QuarantineUsage{Path: filepath.Join(root, "quarantine"), Bytes: 8, Files: 2}) {
		t.Errorf("quarantine = %+v", r.Quarantine)
	}
	if r.Staging != (kcache.StagingUsage{Path: filepath.Join(root, ".tmp"), Bytes: 10, Dirs: 2}) {
		t.Errorf("staging = %+v", r.Staging)
	}
}

// Hits and misses move with lookups (Lookup, OpenEntry, LookupBuildID),
// not with Describe, invalid keys or a read-only cache; evictions move
// with removals. Concurrent lookups lose no count.
func TestStatsCounters(t *testing.T) {
	c, root := newCache(t)
	storeImage(t, c, "k", []byte("image"), nil)
	storeImage(t, c, "gone", []byte("image of gone"), nil)
	want := func(hits, misses, evictions int64) {
		t.Helper()
		r := mustStats(t, c)
		if r.Hits != hits || r.Misses != misses || r.Evictions != evictions {
			t.Fatalf("hits %d, misses %d, evictions %d; want %d, %d, %d", r.Hits, r.Misses, r.Evictions, hits, misses, evictions)
		}
	}
	want(0, 0, 0)
	if _, err := c.Lookup(context.Background(), "k"); err != nil {
		t.Fatal(err)
	}
	want(1, 0, 0)
	_, _ = c.Lookup(context.Background(), "nope")
	want(1, 1, 0)
	o, err := c.OpenEntry(context.Background(), "k")
	if err != nil {
		t.Fatal(err)
	}
	o.Close()
	_, _ = c.OpenEntry(context.Background(), "nope")
	want(2, 2, 0)
	_, _ = c.LookupBuildID(context.Background(), "abcdef")
	want(2, 3, 0)
	_, _ = c.Describe(context.Background(), "k")
	_, _ = c.Describe(context.Background(), "nope")
	_, _ = c.Lookup(context.Background(), "in/valid")
	want(2, 3, 0)

	ro := mustOpen(root, &kcache.Options{ReadOnly: true})
	_, _ = ro.Lookup(context.Background(), "k")
	_, _ = ro.Lookup(context.Background(), "nope")
	want(2, 3, 0)

	// A corrupt entry is a miss: the caller has to build the kernel.
	e, _ := c.Describe(context.Background(), "gone")
	if err := os.Remove(e.ImagePath); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Lookup(context.Background(), "gone"); !errors.Is(err, kcache.ErrCorruptEntry) {
		t.Fatalf("Lookup of a corrupt entry = %v", err)
	}
	want(2, 4, 0)

	if err := c.Remove(context.Background(), "gone", kcache.RemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	want(2, 4, 1)
	if err := c.Remove(context.Background(), "k", kcache.RemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	want(2, 4, 2)

	storeImage(t, c, "k", []byte("image"), nil)
	var wg sync.WaitGroup
	const workers, each = 8, 50
	for range workers {
		wg.Go(func() {
			for range each {
				_, _ = c.Lookup(context.Background(), "k")
			}
		})
	}
	wg.Wait()
	want(2+workers*each, 4, 2)
}

func sha256Hex(s string) string { return procSha256Hex([]byte(s)) }
