package kcache

import (
	"context"
	"time"

	"github.com/kcache/kcache/index"
	"github.com/kcache/kcache/internal/failpoint"
)

// DefaultSweepGrace is how old a blob file that no entry references must be
// before a sweep removes it: a younger one may belong to a store that has
// ingested it but not committed yet.
const DefaultSweepGrace = time.Hour

// storeSweepInterval bounds how often Store runs the blob sweep.
const storeSweepInterval = time.Hour

// SweepOptions tune Sweep.
type SweepOptions struct {
	// Grace is how old (by Options.Now) an unreferenced blob file must be
	// before it is removed; 0 means DefaultSweepGrace unless NoGrace.
	Grace time.Duration
	// NoGrace removes unreferenced blob files of any age (Grace is
	// ignored). Only safe when no store is running: a store's blobs are
	// unreferenced until its transaction commits.
	NoGrace bool
	// DryRun reports what would be removed and removes nothing.
	DryRun bool
}

// SweepReport says what a sweep removed (or, with DryRun, would remove).
type SweepReport struct {
	// StagingRemoved are staging directories of writers that died.
	StagingRemoved []string `json:"staging_removed"`
	// OrphansRemoved counts blob files no entry references, older than the
	// grace period; OrphanBytes is their size.
	OrphansRemoved int   `json:"orphans_removed"`
	OrphanBytes    int64 `json:"orphan_bytes"`
	// DyingFinished counts blobs whose remover died between its commit and
	// its unlink, finished here.
	DyingFinished int `json:"dying_finished"`
	// PreIndexManifests counts unreferenced manifests older than the index
	// itself: entries of a lost or replaced index, kept (with their blobs)
	// for `kcache doctor --rebuild-index`.
	PreIndexManifests int `json:"pre_index_manifests"`
}

// Sweep removes what crashed or interrupted writers left behind: staging
// directories whose writer's lock can be taken (a live writer holds it, so
// this never depends on PIDs), blob files no entry references that are
// older than the grace period, and blobs left dying by a remover that died.
// Unreferenced blobs are unlinked inside an index write transaction after a
// re-check, so a concurrent store cannot adopt one that is being removed.
func (c *Cache) Sweep(ctx context.Context, opt SweepOptions) (*SweepReport, error) {
	switch {
	case opt.NoGrace:
		opt.Grace = 0
	case opt.Grace <= 0:
		opt.Grace = DefaultSweepGrace
	}
	now := c.now()
	rep := &SweepReport{StagingRemoved: []string{}}
	if !opt.DryRun && c.opt.ReadOnly {
		return nil, ErrReadOnly
	}
	dead, err := c.sweepStaging(ctx, opt.DryRun)
	if err != nil {
		return nil, err
	}
	rep.StagingRemoved = append(rep.StagingRemoved, dead...)

	// Candidates from a read-only snapshot; confirmed under the write lock.
	known := map[string]bool{}
	var dying map[string]time.Time
	var created time.Time
	haveIndex, err := c.view(ctx, func(tx *index.Tx) error {
		var err error
		if dying, err = tx.DyingBlobs(); err != nil {
			return err
		}
		_, at := tx.Schema()
		created, _ = time.Parse(time.RFC3339, at)
		return tx.ForEachBlob(func(d string, _ index.BlobRef) error { known[d] = true; return nil })
	})
	if err != nil {
		return nil, err
	}
	if !haveIndex {
		// Without an index every blob looks unreferenced; the manifests are
		// what `kcache doctor --rebuild-index` needs, so nothing is removed.
		return rep, nil
	}
	var orphans, abandoned []string
	// Abandoned dying records are taken from the index, not from the files
	// found: a remover killed after unlinking some of its blobs leaves
	// records whose files are gone, and they must be forgotten too.
	for d, since := range dying {
		if now.Sub(since) >= index.DyingAbandonAfter {
			abandoned = append(abandoned, d)
		}
	}
	err = c.blobs.Walk(func(d string, size int64) error {
		if _, ok := dying[d]; ok {
			return nil
		}
		if !known[d] && c.blobOlderThan(d, now, opt.Grace) {
			orphans = append(orphans, d)
		}
		return nil
	}, nil)
	if err != nil {
		return nil, err
	}
	orphans, rep.PreIndexManifests = c.sparePreIndexEntries(orphans, created)
	if opt.DryRun {
		for _, d := range orphans {
			rep.OrphansRemoved++
			if n, err := c.blobs.Stat(d); err == nil {
				rep.OrphanBytes += n
			}
		}
		rep.DyingFinished = len(abandoned)
		return rep, nil
	}
	err = c.update(ctx, func(tx *index.Tx) ([]string, error) {
		for _, d := range orphans {
			if _, ok, err := tx.Blob(d); err != nil || ok || !c.blobOlderThan(d, now, opt.Grace) {
				continue // adopted by a store meanwhile
			}
			n, _ := c.blobs.Stat(d)
			if err := c.blobs.Remove(d); err == nil {
				failpoint.Hit(failpoint.SweepAfterOrphanUnlink)
				rep.OrphansRemoved++
				rep.OrphanBytes += n
			}
		}
		var finished []string
		for _, d := range abandoned {
			if ref, ok, err := tx.Blob(d); err != nil || !ok || ref.Refs != 0 || ref.Dying == "" {
				continue
			}
			if err := c.blobs.Remove(d); err == nil {
				finished = append(finished, d)
			}
		}
		rep.DyingFinished = len(finished)
		if err := tx.Forget(finished); err != nil {
			return nil, err
		}
		return nil, tx.SetStat(index.StatLastSweep, now.Unix())
	})
	if err != nil {
		return nil, err
	}
	return rep, nil
}

// blobOlderThan reports whether blob d's file was last written (or last
// deduplicated against, see blobstore.Writer.Commit) at least grace ago.
func (c *Cache) blobOlderThan(d string, now time.Time, grace time.Duration) bool {
	fi, err := c.blobs.Lstat(d)
	if err != nil { // gone, not a regular file, or not ours to judge
		return false
	}
	return now.Sub(fi.ModTime()) >= grace
}

// sweepForStore removes the staging directories of dead writers and, when
// the last Sweep is older than storeSweepInterval, runs a whole Sweep (which
// removes them too) instead, so that store keeps a cache tidy without
// walking the blob directory on every call. last is the index's
// StatLastSweep as the caller's transaction read it (0 when there is no
// index yet); indexOK false means that read failed, and then no Sweep runs.
// Failures are warnings.
func (c *Cache) sweepForStore(ctx context.Context, indexOK bool, last int64) {
	if indexOK && time.Since(time.Unix(last, 0)) >= storeSweepInterval {
		if _, err := c.Sweep(ctx, SweepOptions{}); err != nil {
			c.warnf("sweep: %v", err)
		}
		return
	}
	if _, err := c.sweepStaging(ctx, false); err != nil {
		c.warnf("%v", err)
	}
}

// sparePreIndexEntries takes out of the orphan candidates every manifest
// written before the index was created, and the blobs such a manifest names.
// Those are entries of an index that was lost or deleted, not crash debris
// of this one: removing them would destroy what a rebuild recovers. It
// returns the remaining candidates and how many manifests it spared.
func (c *Cache) sparePreIndexEntries(orphans []string, created time.Time) ([]string, int) {
	if created.IsZero() {
		return orphans, 0
	}
	spared := map[string]bool{}
	n := 0
	for _, d := range orphans {
		fi, err := c.blobs.Lstat(d)
		if err != nil || !fi.ModTime().Before(created) || fi.Size() > maxManifestSize {
			continue
		}
		data, err := c.fs.ReadFile(c.blobs.Path(d))
		if err != nil || !index.IsManifest(data) {
			continue
		}
		rec, err := index.DecodeManifest(data)
		if err != nil {
			continue
		}
		n++
		spared[d] = true
		for _, ref := range rec.Digests() {
			spared[ref] = true
		}
	}
	if n == 0 {
		return orphans, 0
	}
	kept := orphans[:0]
	for _, d := range orphans {
		if !spared[d] {
			kept = append(kept, d)
		}
	}
	return kept, n
}
