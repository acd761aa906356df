package kcache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/kcache/kcache/index"
	"github.com/kcache/kcache/lock"
)

// DoctorOptions tune Doctor.
type DoctorOptions struct {
	// DryRun reports what would be done and changes nothing.
	DryRun bool
	// RebuildIndex builds a new index from the manifest blobs and installs
	// it, keeping the old file as index.db.bak.
	RebuildIndex bool
	// Compact rewrites the index file when at least half of it is free pages.
	Compact bool
}

// OrphanBlob is a blob file that no entry references.
type OrphanBlob struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
	MTime  string `json:"mtime"` // RFC 3339 UTC; the sweep removes it once DefaultSweepGrace old
}

// RestoredEntry is an entry the index had lost: its manifest blob exists but
// no index record references it, its key has no record or an older one
// (stored_at), and every blob it names is present with its size. This is
// what a lost commit looks like (bbolt opens at the previous transaction
// when the newest meta page is damaged) and also what a store that died or
// failed after writing its blobs leaves; either way the entry is complete,
// so Doctor puts it back in the index — unless the key was removed after
// the manifest was stored (index.Tombstone): a removal is final.
type RestoredEntry struct {
	Key      string `json:"key"`
	Manifest string `json:"manifest"` // digest of the manifest blob
	StoredAt string `json:"stored_at"`
	// Replaced is true when an older record under the key was replaced.
	Replaced bool `json:"replaced"`
}

// ForeignFile is a file or directory that kcache did not put in the root or
// the blob directory.
type ForeignFile struct {
	Path string `json:"path"`
	// QuarantinedTo is where it was moved; "" in a dry run and when it was
	// left in place (Kept).
	QuarantinedTo string `json:"quarantined_to"`
	// Kept says why it was left where it is, "" when it was (or, in a dry
	// run, would be) moved: only regular files are moved, never a directory
	// (or anything else) that kcache did not create.
	Kept string `json:"kept"`
}

// RebuildReport says what --rebuild-index found and did.
type RebuildReport struct {
	// OldIndex is "readable", "corrupt" or "missing".
	OldIndex string `json:"old_index"`
	// Manifests counts the manifest blobs read; Entries the entries of the
	// new index (one per key: of several manifests for a key, the newest
	// stored_at wins and the others count in Superseded).
	Manifests  int `json:"manifests"`
	Entries    int `json:"entries"`
	Superseded int `json:"superseded"`
	// Removed counts manifests skipped because the old index records a
	// removal of their key after they were stored (a removal is final).
	Removed int `json:"removed"`
	// BadManifests are manifest blobs that do not hash to their name or do
	// not decode; they are left where they are.
	BadManifests []string `json:"bad_manifests"`
	// CorruptKeys are rebuilt entries whose image or vmlinux blob is missing
	// or has the wrong size; they are marked corrupt in the new index.
	CorruptKeys []string `json:"corrupt_keys"`
	// CarriedOver is true when pins, last_used, the current kconfig hash and
	// the counters were taken from the old index; when it was not readable
	// they are lost (manifests do not hold them).
	CarriedOver bool `json:"carried_over"`
	// Backup is where the old index file was kept ("" when there was none or
	// in a dry run).
	Backup string `json:"backup"`
}

// CompactReport says what --compact found and did.
type CompactReport struct {
	Before    int64   `json:"before_bytes"`
	After     int64   `json:"after_bytes"`
	FreeRatio float64 `json:"free_ratio"` // share of the file's pages on the freelist before
	Compacted bool    `json:"compacted"`
}

// DoctorReport is everything Doctor found and did. A healthy cache has
// empty lists and nil Rebuild, Sweep and Compact (unless they were asked for).
type DoctorReport struct {
	DryRun  bool           `json:"dry_run"`
	Rebuild *RebuildReport `json:"rebuild"`
	// Corrupt are blobs of indexed entries that are missing or have the wrong
	// size; their entries are marked corrupt (and a wrong-size file goes to
	// the quarantine), as Verify does without Deep.
	Corrupt []BlobProblem `json:"corrupt"`
	// Restored are entries re-added to the index from their manifests (see
	// RestoredEntry); in a dry run, those that would be.
	Restored []RestoredEntry `json:"restored"`
	// Orphans are blob files no entry references; the sweep removes them once
	// they are older than DefaultSweepGrace.
	Orphans []OrphanBlob `json:"orphans"`
	// Foreign are files that do not belong in the cache root or the blob
	// directory; they are moved to <root>/quarantine.
	Foreign []ForeignFile `json:"foreign"`
	// Symlinks are symlinks under the root, which kcache never creates and
	// never follows; they are left alone. One at a directory kcache writes
	// through (blobs/, blobs/sha256/<xx>, .tmp, .locks, quarantine/, .stats)
	// or at index.db stops Doctor before it repairs anything.
	Symlinks []SymlinkFound `json:"symlinks"`
	Sweep    *SweepReport   `json:"sweep"`
	Compact  *CompactReport `json:"compact"`
}

// Healthy reports whether the doctor found nothing wrong.
func (r *DoctorReport) Healthy() bool {
	rb := r.Rebuild == nil || len(r.Rebuild.BadManifests) == 0 && len(r.Rebuild.CorruptKeys) == 0
	return rb && len(r.Corrupt) == 0 && len(r.Restored) == 0 && len(r.Orphans) == 0 && len(r.Foreign) == 0 && len(r.Symlinks) == 0 && r.Sweep == nil
}

// rootNames are what kcache keeps in a cache root (the rest is foreign).
var rootNames = map[string]bool{
	"index.db": true, "index.db.bak": true, "blobs": true, ".locks": true,
	".tmp": true, "quarantine": true, statsDirName: true, markerName: true,
}

// schemaBackup matches the copies of index.db that a schema upgrade keeps
// (migrate.BackupPath).
var schemaBackup = regexp.MustCompile(`^index\.db\.v[0-9]+\.bak$`)

// tempIndexPrefixes name temporary index files of a create, rebuild or
// compaction in progress; they are foreign only once DefaultSweepGrace old.
var tempIndexPrefixes = []string{"index.db.new-", "index.db.rebuild-", "index.db.compact-"}

// indexLockPath is the cache-wide lock that serialises index rebuilds and
// compactions. Keys cannot start with '.', so it never collides with an
// entry lock.
func (c *Cache) indexLockPath() string { return filepath.Join(c.root, ".locks", ".index.lock") }

// Doctor reconciles the blob directory and the index in both directions:
// entries whose blobs are missing or have the wrong size are marked corrupt,
// blob files no entry references are reported as orphans and left to the
// sweep (which removes them after a grace period; Doctor runs it), and
// files that kcache did not write are moved to <root>/quarantine. With
// RebuildIndex it first builds a new index from the manifest blobs; with
// Compact it finally rewrites a mostly free index file. On a healthy cache
// it changes nothing.
func (c *Cache) Doctor(ctx context.Context, opt DoctorOptions) (*DoctorReport, error) {
	if c.opt.ReadOnly && !opt.DryRun {
		return nil, ErrReadOnly
	}
	rep := &DoctorReport{DryRun: opt.DryRun, Corrupt: []BlobProblem{}, Restored: []RestoredEntry{}, Orphans: []OrphanBlob{}, Foreign: []ForeignFile{}}
	if empty, err := c.checkDoctorRoot(opt.RebuildIndex); err != nil {
		return nil, err
	} else if empty {
		rep.Symlinks = []SymlinkFound{}
		return rep, nil
	}
	var structural bool
	if rep.Symlinks, structural = c.findSymlinks(); structural {
		return rep, nil // every repair would write through it
	}
	indexUsable := true
	if opt.RebuildIndex {
		rb, err := c.rebuildIndex(ctx, opt.DryRun)
		if err != nil {
			return nil, err
		}
		rep.Rebuild = rb
		// A dry run leaves a damaged index in place: nothing below can read it.
		indexUsable = !opt.DryRun || rb.OldIndex == "readable"
	}
	if indexUsable {
		v, err := c.checkBlobs(ctx, nil, false, opt.DryRun, nil)
		if err != nil {
			return nil, fmt.Errorf("doctor: %w", err)
		}
		rep.Corrupt = v.Problems
	}
	referenced := map[string]bool{}
	if indexUsable {
		if _, err := c.view(ctx, func(tx *index.Tx) error {
			return tx.ForEach(func(_ string, rec *index.Record, err error) error {
				if err == nil {
					markReferenced(referenced, rec)
				}
				return nil
			})
		}); err != nil {
			return nil, fmt.Errorf("doctor: %w", err)
		}
		restored, err := c.restoreLost(ctx, referenced, opt.DryRun)
		if err != nil {
			return nil, fmt.Errorf("doctor: %w", err)
		}
		rep.Restored = restored
	}
	var foreign []string
	err := c.blobs.WalkSymlinks(func(d string, size int64) error {
		if !indexUsable || referenced[d] {
			return nil
		}
		o := OrphanBlob{Digest: d, Size: size}
		if fi, err := c.blobs.Lstat(d); err == nil {
			o.MTime = fi.ModTime().UTC().Format(time.RFC3339)
		}
		rep.Orphans = append(rep.Orphans, o)
		return nil
	}, func(p string) error { foreign = append(foreign, p); return nil }, func(p string) error {
		t, _ := os.Readlink(p)
		rep.Symlinks = append(rep.Symlinks, SymlinkFound{Path: p, Target: t})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("doctor: %w", err)
	}
	more, err := c.foreignInRoot()
	if err != nil {
		return nil, err
	}
	foreign = append(foreign, more...)
	sort.Strings(foreign)
	for _, p := range foreign {
		f := ForeignFile{Path: p}
		if fi, err := os.Lstat(p); err != nil || !fi.Mode().IsRegular() {
			f.Kept = "not a regular file: kcache did not create it and does not move it"
			if err != nil {
				f.Kept = err.Error()
			}
		} else if !opt.DryRun {
			rel, _ := filepath.Rel(c.root, p)
			if f.QuarantinedTo, err = c.quarantine(p, rel); err != nil {
				return nil, fmt.Errorf("doctor: %w", err)
			}
		}
		rep.Foreign = append(rep.Foreign, f)
	}
	if indexUsable {
		// Run the sweep only when it has work: even an idle sweep records
		// its time in the index, and a healthy cache must stay untouched.
		sr, err := c.Sweep(ctx, SweepOptions{DryRun: true})
		if err != nil {
			return nil, fmt.Errorf("doctor: %w", err)
		}
		if len(sr.StagingRemoved) > 0 || sr.OrphansRemoved > 0 || sr.DyingFinished > 0 {
			if !opt.DryRun {
				if sr, err = c.Sweep(ctx, SweepOptions{}); err != nil {
					return nil, fmt.Errorf("doctor: %w", err)
				}
			}
			rep.Sweep = sr
		}
	}
	if opt.Compact {
		if rep.Compact, err = c.compactIndex(ctx, opt.DryRun); err != nil {
			return nil, err
		}
	}
	return rep, nil
}

// lostManifest reads the blob d and returns its record when it is a manifest
// that hashes to its name, decodes, has a valid key and names blobs that are
// all present with their sizes; else nil.
func (c *Cache) lostManifest(ctx context.Context, d string) (*index.Record, error) {
	size, err := c.blobs.Stat(d)
	if err != nil || size > maxManifestSize {
		return nil, nil
	}
	rec, _, err := c.readManifestBlob(d, size)
	if rec == nil || c.blobMark(ctx, rec) != nil {
		return nil, err
	}
	return rec, nil
}

// readManifestBlob reads blob d (size bytes) when it is a manifest: isManifest
// is false when it is not one (or is gone), and rec is nil when it is one but
// does not hash to its name, does not decode or names an invalid key.
func (c *Cache) readManifestBlob(d string, size int64) (rec *index.Record, isManifest bool, err error) {
	data, ok, err := c.readIfManifest(c.blobs.Path(d))
	if err != nil || !ok {
		return nil, false, err
	}
	sum := sha256.Sum256(data)
	rec, err = index.DecodeManifest(data)
	if hex.EncodeToString(sum[:]) != d || err != nil || ValidateKey(rec.Key) != nil {
		return nil, true, nil
	}
	rec.Manifest = index.Blob{Digest: d, Size: size}
	return rec, true, nil
}

// restoreLost puts back into the index the entries it lost (RestoredEntry):
// manifests that no record references (referenced holds every digest the
// records name), that the index does not know as a blob at all (a dying
// manifest belongs to a removal), whose key has no record or an older one,
// whose key was not removed after it was stored (index.Tombstone: a
// removal is final), and whose blobs are all present. Of several such
// manifests for a key the
// newest wins. Each is stored under the entry's lock like a store, after a
// re-check inside the write transaction, so a concurrent store of the key
// wins. A dry run only reports. The blobs of every entry it reports are
// added to referenced, so that the caller does not count them as orphans.
func (c *Cache) restoreLost(ctx context.Context, referenced map[string]bool, dryRun bool) ([]RestoredEntry, error) {
	var cands []string
	err := c.blobs.Walk(func(d string, size int64) error {
		if !referenced[d] && size <= maxManifestSize {
			cands = append(cands, d)
		}
		return nil
	}, nil)
	if err != nil || len(cands) == 0 {
		return []RestoredEntry{}, err
	}
	best := map[string]*index.Record{}
	_, err = c.view(ctx, func(tx *index.Tx) error {
		for _, d := range cands {
			if _, known, err := tx.Blob(d); err != nil || known {
				continue
			}
			rec, err := c.lostManifest(ctx, d)
			if err != nil {
				return err
			}
			if rec == nil {
				continue
			}
			if cur, err := tx.Get(rec.Key); err == nil && !newerRecord(rec, cur) {
				continue
			}
			if gone, err := removedBefore(tx, rec); err != nil || gone {
				if err != nil {
					return err
				}
				continue
			}
			if prev := best[rec.Key]; prev == nil || newerRecord(rec, prev) {
				best[rec.Key] = rec
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(best))
	for k := range best {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := []RestoredEntry{}
	for _, k := range keys {
		rec := best[k]
		r := RestoredEntry{Key: k, Manifest: rec.Manifest.Digest, StoredAt: rec.StoredAt}
		if dryRun {
			_, _ = c.view(ctx, func(tx *index.Tx) error { _, err := tx.Get(k); r.Replaced = err == nil; return nil })
			out = append(out, r)
			markReferenced(referenced, rec)
			continue
		}
		l, err := c.acquire(ctx, k, lock.Exclusive, c.opt.StoreLockTimeout)
		if err != nil {
			return nil, fmt.Errorf("restore %q: %w", k, err)
		}
		done := false
		err = c.update(ctx, func(tx *index.Tx) ([]string, error) {
			cur, err := tx.Get(k)
			if err == nil && !newerRecord(rec, cur) {
				return nil, nil // a store of the key committed meanwhile
			}
			r.Replaced = err == nil
			if gone, err := removedBefore(tx, rec); err != nil || gone {
				return nil, err // removed meanwhile
			}
			released, err := tx.Put(rec, c.hasBlob)
			if blobVanished(err) {
				return nil, errSkipRestore
			}
			done = err == nil
			return released, err
		})
		l.Release()
		if errors.Is(err, errSkipRestore) {
			continue // a blob was removed meanwhile: the entry is incomplete
		}
		if err != nil {
			return nil, fmt.Errorf("restore %q from manifest %s: %w", k, rec.Manifest.Digest, err)
		}
		if done {
			out = append(out, r)
			markReferenced(referenced, rec)
		}
	}
	return out, nil
}

func markReferenced(referenced map[string]bool, rec *index.Record) {
	for _, d := range rec.Digests() {
		referenced[d] = true
	}
}

// foreignInRoot lists what does not belong in the root, in blobs/ (beside
// sha256/), but only when the root looks like a cache: a directory with
// neither index.db nor blobs/ may be a mistyped --root, and its files are not
// ours to move.
func (c *Cache) foreignInRoot() ([]string, error) {
	_, e1 := os.Lstat(c.IndexPath())
	_, e2 := os.Lstat(filepath.Join(c.root, "blobs"))
	if e1 != nil && e2 != nil {
		return nil, nil
	}
	var out []string
	ents, err := os.ReadDir(c.root)
	if err != nil {
		return nil, fmt.Errorf("doctor: read %s: %w", c.root, err)
	}
	for _, e := range ents {
		name := e.Name()
		if rootNames[name] || schemaBackup.MatchString(name) {
			continue
		}
		temp := false
		for _, p := range tempIndexPrefixes {
			temp = temp || strings.HasPrefix(name, p)
		}
		if temp {
			if fi, err := e.Info(); err != nil || time.Since(fi.ModTime()) < DefaultSweepGrace {
				continue // a create, rebuild or compaction may be running
			}
		}
		out = append(out, filepath.Join(c.root, name))
	}
	blobs := filepath.Join(c.root, "blobs")
	ents, err = os.ReadDir(blobs)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("doctor: read %s: %w", blobs, err)
	}
	for _, e := range ents {
		if e.Name() != "sha256" || !e.IsDir() {
			out = append(out, filepath.Join(blobs, e.Name()))
		}
	}
	return out, nil
}
