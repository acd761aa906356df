package kcache_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/kcache/kcache"
	"github.com/kcache/kcache/blobstore"
	"github.com/kcache/kcache/index"
)

// plantBlob writes content as an unreferenced blob file (what a store that
// died after its ingest leaves) last modified age ago, and returns its path.
func plantBlob(t *testing.T, c *kcache.Cache, content string, age time.Duration) string {
	t.Helper()
	p := c.BlobPath(procSha256Hex([]byte(content)))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o444); err != nil {
		t.Fatal(err)
	}
	setAge(t, p, age)
	return p
}

func setAge(t *testing.T, path string, age time.Duration) {
	t.Helper()
	at := time.Now().Add(-age)
	if err := os.Chtimes(path, at, at); err != nil {
		t.Fatal(err)
	}
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

func mustSweep(t *testing.T, c *kcache.Cache, opt kcache.SweepOptions) *kcache.SweepReport {
	t.Helper()
	rep, err := c.Sweep(context.Background(), opt)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// deadStaging starts a helper that lays out a staging directory under id
// and holds its lock, then kills it: what a writer killed mid-store leaves.
func deadStaging(t *testing.T, root, id string) {
	t.Helper()
	h := procStartHelper(t, "holdstaging", root, id)
	h.expectLine("ready")
	h.kill()
	if err := h.wait(); err == nil {
		t.Fatal("the staging holder exited cleanly; want it killed")
	}
}

func lastSweep(t *testing.T, c *kcache.Cache) int64 {
	t.Helper()
	var v int64 = -1
	db, err := index.Open(c.IndexPath(), index.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_ = db.View(func(tx *index.Tx) error {
		if s, ok := tx.Stats()[index.StatLastSweep]; ok {
			v = s
		}
		return nil
	})
	return v
}

// A sweep removes the staging directory of a writer that was killed and
// keeps that of a live writer, judging by the writer's lock alone: the
// killed writer's directory is named after a live pid (this test's) and the
// live writer's after a pid no process can have (above pid_max, as when
// the writer runs in another PID namespace).
func TestSweepStagingDecidedByLock(t *testing.T) {
	c, root := newCache(t)
	storeImage(t, c, "k", []byte("image"), nil)
	deadID := fmt.Sprintf("%d-0000dead", os.Getpid())
	liveID := "4194399-0000a11e"
	deadStaging(t, root, deadID)
	live := procStartHelper(t, "holdstaging", root, liveID)
	live.expectLine("ready")
	// A directory without a lock file: its writer removed the lock last, so
	// it is gone.
	if err := os.MkdirAll(filepath.Join(root, ".tmp", "5-nolock", "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(root, ".tmp")

	rep := mustSweep(t, c, kcache.SweepOptions{})
	slices.Sort(rep.StagingRemoved)
	want := []string{deadID, "5-nolock"}
	slices.Sort(want) // the order depends on this test's pid ("5-" sorts before "54")
	if !slices.Equal(rep.StagingRemoved, want) {
		t.Errorf("staging removed = %q; want %q", rep.StagingRemoved, want)
	}
	for _, p := range []string{deadID, deadID + ".lock", "5-nolock"} {
		if exists(filepath.Join(tmp, p)) {
			t.Errorf("%s of a dead writer is still there", p)
		}
	}
	for _, p := range []string{liveID, liveID + ".lock", liveID + "/blob-staged"} {
		if !exists(filepath.Join(tmp, p)) {
			t.Errorf("the sweep removed %s of a live writer", p)
		}
	}
	if _, err := c.Lookup(context.Background(), "k"); err != nil {
		t.Errorf("entry after the sweep: %v", err)
	}

	// Once the live writer is gone, its directory goes too.
	live.stdin.Close()
	live.mustSucceed()
	rep = mustSweep(t, c, kcache.SweepOptions{})
	if !slices.Equal(rep.StagingRemoved, []string{liveID}) || exists(filepath.Join(tmp, liveID)) || exists(filepath.Join(tmp, liveID+".lock")) {
		t.Errorf("after the writer exited: removed %q, dir there: %v", rep.StagingRemoved, exists(filepath.Join(tmp, liveID)))
	}
}

// Blob files no entry references are removed once older than the grace
// period and kept while younger; referenced blobs are kept however old.
func TestSweepOrphanBlobsGrace(t *testing.T) {
	c, root := newCache(t)
	e := storeImage(t, c, "k", []byte("image of k"), []byte("vmlinux of k"))
	for _, d := range procDigests(e) {
		setAge(t, c.BlobPath(d), 30*24*time.Hour)
	}
	old := plantBlob(t, c, "old orphan", 2*time.Hour)
	young := plantBlob(t, c, "young orphan", 10*time.Minute)

	rep := mustSweep(t, c, kcache.SweepOptions{})
	if rep.OrphansRemoved != 1 || rep.OrphanBytes != int64(len("old orphan")) {
		t.Errorf("report = %+v; want the old orphan only", rep)
	}
	if exists(old) {
		t.Error("an orphan older than the grace period survived the sweep")
	}
	if !exists(young) {
		t.Error("the sweep removed an orphan younger than the grace period")
	}
	if _, err := c.Lookup(context.Background(), "k"); err != nil {
		t.Errorf("the referenced entry after the sweep: %v", err)
	}

	// A shorter grace takes the younger one; the entry's blobs stay.
	rep = mustSweep(t, c, kcache.SweepOptions{Grace: 5 * time.Minute})
	if rep.OrphansRemoved != 1 || exists(young) {
		t.Errorf("sweep with a 5m grace: %+v, young orphan there: %v", rep, exists(young))
	}
	procCheckOnlyBlobs(t, c, root, e)
}

// A store that deduplicates against an existing blob file refreshes its
// mtime (blobstore's Commit), so a sweep that runs between that ingest and
// the store's index commit sees a young file and leaves it alone.
func TestSweepSparesBlobADedupingStoreRefreshed(t *testing.T) {
	c, root := newCache(t)
	storeImage(t, c, "first", []byte("image of first"), nil) // runs the hourly sweep now
	const content = "image left behind by a crashed store"
	orphan := plantBlob(t, c, content, 2*time.Hour)
	if rep := mustSweep(t, c, kcache.SweepOptions{DryRun: true}); rep.OrphansRemoved != 1 {
		t.Fatalf("dry run before the store: %+v; want the orphan as a victim", rep)
	}
	before, err := os.Stat(orphan)
	if err != nil {
		t.Fatal(err)
	}

	// A store's ingest, stopped before its index commit.
	w, err := blobstore.New(filepath.Join(root, "blobs", "sha256")).NewWriter(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte(content)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	after, err := os.Stat(orphan)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, after) {
		t.Error("the ingest rewrote the blob instead of deduplicating against it")
	}
	if time.Since(after.ModTime()) > time.Minute {
		t.Fatalf("the deduplicating ingest left the blob's mtime at %v", after.ModTime())
	}
	if rep := mustSweep(t, c, kcache.SweepOptions{}); rep.OrphansRemoved != 0 || !exists(orphan) {
		t.Fatalf("a sweep during the store took the blob it deduplicated against: %+v", rep)
	}

	// The same through Store: the entry then references it, with a fresh mtime.
	setAge(t, orphan, 2*time.Hour)
	e := storeImage(t, c, "second", []byte(content), nil)
	if got, err := os.Stat(e.ImagePath); err != nil || !os.SameFile(before, got) || time.Since(got.ModTime()) > time.Minute {
		t.Fatalf("Store deduplicating against an old orphan: %v, same file %v", err, err == nil && os.SameFile(before, got))
	}
	if _, err := c.Lookup(context.Background(), "second"); err != nil {
		t.Fatal(err)
	}
}

// A dry run reports what a sweep would remove and changes nothing: every
// file under the root keeps its size and mtime and index.db its bytes
// (last_sweep included).
func TestSweepDryRunChangesNothing(t *testing.T) {
	c, root := newCache(t)
	storeImage(t, c, "k", []byte("image of k"), nil)
	deadStaging(t, root, "77-00dead77")
	if err := os.Mkdir(filepath.Join(root, ".tmp", "78-nolock"), 0o755); err != nil {
		t.Fatal(err)
	}
	// A lock file without its directory: a writer that died between
	// removing the directory and removing the lock file.
	if err := os.WriteFile(filepath.Join(root, ".tmp", "79-0nodir79.lock"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	old := plantBlob(t, c, "old orphan", 2*time.Hour)
	before := snapshotTree(t, root)

	dry := mustSweep(t, c, kcache.SweepOptions{DryRun: true})
	slices.Sort(dry.StagingRemoved)
	if !slices.Equal(dry.StagingRemoved, []string{"77-00dead77", "78-nolock"}) || dry.OrphansRemoved != 1 || dry.OrphanBytes != int64(len("old orphan")) {
		t.Errorf("dry run report = %+v", dry)
	}
	before.diff(t, snapshotTree(t, root), "a dry-run sweep")

	did := mustSweep(t, c, kcache.SweepOptions{})
	slices.Sort(did.StagingRemoved)
	if !slices.Equal(did.StagingRemoved, dry.StagingRemoved) || did.OrphansRemoved != dry.OrphansRemoved || did.OrphanBytes != dry.OrphanBytes {
		t.Errorf("the sweep did %+v; the dry run promised %+v", did, dry)
	}
	if exists(old) || len(procTmpEntries(t, root)) != 0 {
		t.Errorf("after the sweep: orphan there %v, .tmp holds %q", exists(old), procTmpEntries(t, root))
	}
}

// Store runs the blob sweep when the last one (StatLastSweep) is an hour
// old or more, and not otherwise.
func TestStoreSweepsAtMostHourly(t *testing.T) {
	c, root := newCache(t)
	start := time.Now().Unix()
	// The very first store finds no index to sweep against; the next one
	// sweeps because none has been recorded yet. A store between sweeps
	// still removes dead writers' staging directories.
	storeImage(t, c, "a0", []byte("image of a0"), nil)
	storeImage(t, c, "a", []byte("image of a"), nil)
	if last := lastSweep(t, c); last < start {
		t.Fatalf("the second store did not sweep: last_sweep %d", last)
	}

	recent := time.Now().Add(-59 * time.Minute).Unix()
	updateIndex(t, root, func(tx *index.Tx) error { return tx.SetStat(index.StatLastSweep, recent) })
	orphan := plantBlob(t, c, "old orphan", 2*time.Hour)
	deadID := fmt.Sprintf("%d-00000dead", os.Getpid())
	deadStaging(t, root, deadID)
	storeImage(t, c, "b", []byte("image of b"), nil)
	if !exists(orphan) || lastSweep(t, c) != recent {
		t.Fatalf("a store 59 minutes after the last sweep swept (orphan gone: %v, last_sweep %d, want %d)", !exists(orphan), lastSweep(t, c), recent)
	}
	// Dead writers' staging directories go on every store, due or not.
	if exists(filepath.Join(root, ".tmp", deadID)) || exists(filepath.Join(root, ".tmp", deadID+".lock")) {
		t.Errorf("a store left the staging directory of a dead writer")
	}

	stale := time.Now().Add(-61 * time.Minute).Unix()
	updateIndex(t, root, func(tx *index.Tx) error { return tx.SetStat(index.StatLastSweep, stale) })
	now := time.Now().Unix()
	storeImage(t, c, "c", []byte("image of c"), nil)
	if exists(orphan) || lastSweep(t, c) < now {
		t.Fatalf("a store 61 minutes after the last sweep did not sweep (orphan there: %v, last_sweep %d)", exists(orphan), lastSweep(t, c))
	}
}

// Blobs released by a remover that died between its commit and its unlink
// stay dying; once the mark is older than index.DyingAbandonAfter the sweep
// unlinks them and forgets their records.
func TestSweepFinishesAbandonedDyingBlobs(t *testing.T) {
	c, root := newCache(t)
	e := storeImage(t, c, "k", []byte("image of k"), []byte("vmlinux of k"))
	var released []string
	updateIndex(t, root, func(tx *index.Tx) error { // the remover's commit, then it dies
		var err error
		released, err = tx.Delete("k")
		return err
	})
	if len(released) != 3 {
		t.Fatalf("released %q; want the entry's three blobs", released)
	}
	if rep := mustSweep(t, c, kcache.SweepOptions{}); rep.DyingFinished != 0 || rep.OrphansRemoved != 0 {
		t.Fatalf("sweep right after the release took dying blobs: %+v", rep)
	}
	for _, d := range procDigests(e) {
		if !exists(c.BlobPath(d)) {
			t.Fatalf("dying blob %s vanished before it was abandoned", d)
		}
	}

	saved := index.DyingAbandonAfter
	index.DyingAbandonAfter = 0
	t.Cleanup(func() { index.DyingAbandonAfter = saved })
	if rep := mustSweep(t, c, kcache.SweepOptions{}); rep.DyingFinished != 3 {
		t.Fatalf("sweep of abandoned dying blobs: %+v; want 3 finished", rep)
	}
	if files := blobFiles(t, root); len(files) != 0 {
		t.Errorf("blob files left: %q", files)
	}
	db, err := index.Open(c.IndexPath(), index.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_ = db.View(func(tx *index.Tx) error {
		for _, d := range released {
			if _, ok, err := tx.Blob(d); ok || err != nil {
				t.Errorf("blob %s still has an index record (%v)", d, err)
			}
		}
		return nil
	})
}

// TestSweepSparesEntriesOfALostIndex: after index.db is lost, a store makes
// a fresh index in which every old blob looks unreferenced. The sweep must
// not remove the old manifests (nor the blobs they name), so that
// `doctor --rebuild-index` can still recover those entries.
func TestSweepSparesEntriesOfALostIndex(t *testing.T) {
	c, root := newCache(t)
	old := storeImage(t, c, "old", []byte("image of an entry the index will forget"), []byte("vmlinux bytes"))
	past := time.Now().Add(-3 * time.Hour)
	for _, p := range []string{old.ImagePath, old.VmlinuxPath, c.BlobPath(old.Manifest.Digest)} {
		if err := os.Chtimes(p, past, past); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Remove(filepath.Join(root, "index.db")); err != nil {
		t.Fatal(err)
	}
	storeImage(t, c, "new", []byte("image of a new entry"), nil) // fresh index
	rep := mustSweep(t, c, kcache.SweepOptions{})
	if rep.PreIndexManifests != 1 || rep.OrphansRemoved != 0 {
		t.Errorf("sweep report %+v; want the old manifest spared and nothing removed", rep)
	}
	for _, p := range []string{old.ImagePath, old.VmlinuxPath, c.BlobPath(old.Manifest.Digest)} {
		if !exists(p) {
			t.Fatalf("the sweep removed %s of the lost index's entry", p)
		}
	}
	if _, err := c.Doctor(context.Background(), kcache.DoctorOptions{RebuildIndex: true}); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"old", "new"} {
		if _, err := c.Lookup(context.Background(), key); err != nil {
			t.Errorf("after the rebuild, %s: %v", key, err)
		}
	}
}
