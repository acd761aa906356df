package kcache

// Doctor's heavy repairs: rebuilding index.db from the manifest blobs
// (--rebuild-index) and compacting a mostly-free index file (--compact).
// Reconciling the index with the blob directory is in doctor.go.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"time"

	"github.com/kcache/kcache/index"
	"github.com/kcache/kcache/internal/failpoint"
	"github.com/kcache/kcache/internal/fsync"
	"github.com/kcache/kcache/lock"
)

// maxManifestSize bounds what a rebuild reads as a manifest (real ones are
// well under a KiB).
const maxManifestSize = 1 << 20

// oldIndexState is what a rebuild carries over from a readable old index.
type oldIndexState struct {
	pins     map[string]index.Pin
	lastUsed map[string]string
	kconfig  string
	stats    map[string]int64
	dying    map[string]bool
	removed  map[string]index.Tombstone
}

// rebuildIndex builds a new index from the manifest blobs and installs it.
//
// Writers are kept out while it works: it holds the cache-wide lock
// (.locks/.index.lock, against another doctor) and bbolt's own exclusive
// lock on the old file — through a read-write open when the file opens at
// all, else an flock on the raw file. The new index is written to a
// temporary file and renamed over index.db after the old file was
// hard-linked to index.db.bak, so index.db always names a complete file.
// A process that was waiting for the old file's lock notices the rename and
// opens the new file (index.Open), so no write lands in the backup.
func (c *Cache) rebuildIndex(ctx context.Context, dryRun bool) (*RebuildReport, error) {
	rep := &RebuildReport{OldIndex: "missing", BadManifests: []string{}, CorruptKeys: []string{}}
	path := c.IndexPath()
	if !dryRun {
		gl, err := lock.AcquireWith(ctx, c.openLockFile, true, c.indexLockPath(), lock.Exclusive, c.opt.IndexTimeout, "index rebuild")
		if err != nil {
			return nil, fmt.Errorf("rebuild index: %w", err)
		}
		defer gl.Release()
	}
	var old oldIndexState
	oldExists := false
	if _, err := os.Stat(path); err == nil {
		oldExists = true
		db, err := c.openPolled(ctx, index.Open, path, index.Options{ReadOnly: dryRun})
		if errors.Is(err, index.ErrSchemaOld) {
			// An older kcache's index: a dry run reads it as it is, a real
			// rebuild upgrades it first (holding the lock taken above), so
			// that what is carried over is read with this schema. If the
			// upgrade fails, the file is treated as corrupt and rebuilt.
			if dryRun {
				db, err = c.openPolled(ctx, index.Open, path, index.Options{ReadOnly: true, ReadOld: true})
			} else if uerr := c.upgradeIndex(ctx, true); uerr == nil {
				db, err = c.openPolled(ctx, index.Open, path, index.Options{})
			}
		}
		switch {
		case err == nil:
			defer db.Close()
			rep.OldIndex = "readable"
			if err := db.View(func(tx *index.Tx) error { return readOldIndex(tx, &old) }); err != nil {
				rep.OldIndex, old = "corrupt", oldIndexState{}
			} else {
				rep.CarriedOver = true
			}
		case errors.Is(err, index.ErrBusy), errors.Is(err, index.ErrSchemaTooNew):
			return nil, fmt.Errorf("rebuild index: %w", c.explainIndexErr(err))
		default:
			rep.OldIndex = "corrupt"
			if !dryRun {
				l, err := lock.AcquireWith(ctx, c.openLockFile, true, path, lock.Exclusive, c.opt.IndexTimeout, "index file "+path)
				if err != nil {
					return nil, fmt.Errorf("rebuild index: %w", err)
				}
				defer l.Release()
			}
		}
	}

	recs, err := c.readManifests(rep, &old)
	if err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(recs))
	for k, rec := range recs {
		keys = append(keys, k)
		rec.LastUsed = old.lastUsed[k]
		if m := c.blobMark(ctx, rec); m != nil {
			rec.Corrupt = m
			rep.CorruptKeys = append(rep.CorruptKeys, k)
		}
	}
	sort.Strings(keys)
	sort.Strings(rep.CorruptKeys)
	rep.Entries = len(keys)
	if dryRun {
		return rep, nil
	}

	tmp := fmt.Sprintf("%s.rebuild-%d-%d", path, os.Getpid(), time.Now().UnixNano())
	defer os.Remove(tmp)
	db, err := index.Open(tmp, index.Options{Timeout: c.opt.IndexTimeout})
	if err != nil {
		return nil, fmt.Errorf("rebuild index: %w", err)
	}
	err = db.Update(func(tx *index.Tx) error {
		for _, k := range keys {
			if _, err := tx.Put(recs[k], func(string) bool { return true }); err != nil {
				return err
			}
		}
		for k, tb := range old.removed { // before the Puts, which clear what they outrank
			if err := tx.SetRemoved(k, tb); err != nil {
				return err
			}
		}
		for k, p := range old.pins {
			if err := tx.Pin(k, p); err != nil {
				return err
			}
		}
		for name, v := range old.stats {
			if err := tx.SetStat(name, v); err != nil {
				return err
			}
		}
		return tx.SetKconfigHash(old.kconfig)
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("rebuild index into %s: %w", tmp, err)
	}
	if err := c.installIndex(tmp, oldExists, rep); err != nil {
		return nil, err
	}
	c.ensureMarker()
	return rep, nil
}

// installIndex puts the new file tmp in place of index.db, keeping the old
// file (if any) as index.db.bak.
func (c *Cache) installIndex(tmp string, oldExists bool, rep *RebuildReport) error {
	path := c.IndexPath()
	if !oldExists {
		if err := os.Link(tmp, path); err != nil {
			return fmt.Errorf("install rebuilt index %s: %w (if another process created it meanwhile, rebuild again)", path, err)
		}
		return fsync.Dir(c.root)
	}
	bak := path + ".bak"
	if err := os.Remove(bak); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("replace %s: %w", bak, err)
	}
	if err := os.Link(path, bak); err != nil {
		// No hard links here: copy, so index.db never goes missing.
		if err := copyFile(path, bak); err != nil {
			return fmt.Errorf("keep the old index as %s: %w", bak, err)
		}
	}
	failpoint.Hit(failpoint.RebuildBeforeSwap)
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("install rebuilt index %s: %w", path, err)
	}
	rep.Backup = bak
	return fsync.Dir(c.root)
}

func readOldIndex(tx *index.Tx, old *oldIndexState) error {
	var err error
	if old.pins, err = tx.Pins(); err != nil {
		return err
	}
	old.kconfig, old.stats, old.lastUsed = tx.KconfigHash(), tx.Stats(), map[string]string{}
	dying, err := tx.DyingBlobs()
	if err != nil {
		return err
	}
	old.dying = map[string]bool{}
	for d := range dying {
		old.dying[d] = true
	}
	old.removed = map[string]index.Tombstone{}
	if err := tx.ForEachRemoved(func(k string, tb index.Tombstone) error { old.removed[k] = tb; return nil }); err != nil {
		return err
	}
	return tx.ForEach(func(key string, rec *index.Record, err error) error {
		if err == nil && rec.LastUsed != "" {
			old.lastUsed[key] = rec.LastUsed
		}
		return nil
	})
}

// readManifests reads every manifest blob and returns the newest record per
// key. Manifests of blobs the old index had released (dying) belong to
// removed or replaced entries, and manifests stored before the old index's
// tombstone of their key belong to removed entries: both are skipped.
func (c *Cache) readManifests(rep *RebuildReport, old *oldIndexState) (map[string]*index.Record, error) {
	recs := map[string]*index.Record{}
	err := c.blobs.Walk(func(d string, size int64) error {
		if size > maxManifestSize || old.dying[d] {
			return nil
		}
		rec, ok, err := c.readManifestBlob(d, size)
		if err != nil || !ok {
			return err
		}
		rep.Manifests++
		if rec == nil {
			rep.BadManifests = append(rep.BadManifests, d)
			return nil
		}
		if tb, ok := old.removed[rec.Key]; ok && tb.Covers(rec.StoredAt) {
			rep.Removed++
			return nil
		}
		if prev, ok := recs[rec.Key]; ok {
			rep.Superseded++
			if !newerRecord(rec, prev) {
				return nil
			}
		}
		recs[rec.Key] = rec
		return nil
	}, nil)
	if err != nil {
		return nil, fmt.Errorf("rebuild index: %w", err)
	}
	return recs, nil
}

// newerRecord reports whether a was stored after b (ties: larger manifest
// digest, so the choice does not depend on walk order).
func newerRecord(a, b *index.Record) bool {
	ta, ea := time.Parse(time.RFC3339Nano, a.StoredAt)
	tb, eb := time.Parse(time.RFC3339Nano, b.StoredAt)
	if ea == nil && eb == nil && !ta.Equal(tb) {
		return ta.After(tb)
	}
	if ea != nil || eb != nil {
		if a.StoredAt != b.StoredAt {
			return a.StoredAt > b.StoredAt
		}
	}
	return a.Manifest.Digest > b.Manifest.Digest
}

func (c *Cache) readIfManifest(path string) ([]byte, bool, error) {
	f, err := c.fs.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil // removed meanwhile
	}
	if err != nil {
		return nil, false, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	head := make([]byte, 64)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, false, fmt.Errorf("read %s: %w", path, err)
	}
	if !index.IsManifest(head[:n]) {
		return nil, false, nil
	}
	rest, err := io.ReadAll(io.LimitReader(f, maxManifestSize))
	if err != nil {
		return nil, false, fmt.Errorf("read %s: %w", path, err)
	}
	return append(head[:n], rest...), true, nil
}

// blobMark returns a corrupt mark when an image or vmlinux blob of rec is
// missing or has the wrong size.
func (c *Cache) blobMark(ctx context.Context, rec *index.Record) *index.CorruptMark {
	uses := roleUses(rec)
	for _, u := range uses[:len(uses)-1] { // the manifest was just read
		f, _, err := c.checkOneBlob(ctx, u.blob.Digest, u.blob.Size, false, ctimeIgnored)
		if err != nil || f == nil {
			continue
		}
		return &index.CorruptMark{Kind: f.kind, Reason: fmt.Sprintf("%s blob: %s (found by an index rebuild)", u.role, f.detail),
			At: c.now().UTC().Format(time.RFC3339)}
	}
	return nil
}

// compactIndex rewrites the index file when at least half of it is free
// pages, holding the cache-wide lock and bbolt's exclusive lock on the old
// file (writers wait, then reopen the new file; see index.Open).
func (c *Cache) compactIndex(ctx context.Context, dryRun bool) (*CompactReport, error) {
	path := c.IndexPath()
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return &CompactReport{}, nil
	}
	if !dryRun {
		gl, err := lock.AcquireWith(ctx, c.openLockFile, true, c.indexLockPath(), lock.Exclusive, c.opt.IndexTimeout, "index compaction")
		if err != nil {
			return nil, fmt.Errorf("compact index: %w", err)
		}
		defer gl.Release()
	}
	db, err := c.openPolled(ctx, index.Open, path, index.Options{})
	if err != nil {
		return nil, fmt.Errorf("compact index: %w", c.explainIndexErr(err))
	}
	defer db.Close()
	size, free, err := db.FreeRatio()
	if err != nil {
		return nil, fmt.Errorf("compact index: %w", c.explainIndexErr(err))
	}
	rep := &CompactReport{Before: size, After: size, FreeRatio: free}
	if free < 0.5 || dryRun {
		return rep, nil
	}
	tmp := fmt.Sprintf("%s.compact-%d-%d", path, os.Getpid(), time.Now().UnixNano())
	defer os.Remove(tmp)
	if err := db.CompactTo(tmp); err != nil {
		return nil, fmt.Errorf("compact index: %w", c.explainIndexErr(err))
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, fmt.Errorf("compact index: install %s: %w", path, err)
	}
	if err := fsync.Dir(c.root); err != nil {
		return nil, err
	}
	if fi, err := os.Stat(path); err == nil {
		rep.After = fi.Size()
	}
	rep.Compacted = true
	return rep, nil
}

// copyFile copies src to a new dst (0644), fsynced.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return fsync.WriteNew(dst, in, 0o644)
}
