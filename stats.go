package kcache

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/kcache/kcache/index"
	"github.com/kcache/kcache/internal/beneath"
)

// # Hit and miss counters
//
// Lookups count hits and misses outside the index: each counted lookup
// appends one byte ("\n") with O_APPEND to <root>/.stats/hits or
// <root>/.stats/misses, and a file's size is its count (`wc -c` reads it).
//
// Why not the index's stats bucket: a lookup must stay a read-only index
// transaction. Counting there would take bbolt's exclusive flock and an
// fsync'd commit on every lookup, serialising hundreds of concurrent harness
// lookups on one file lock — the very thing last_used avoids by writing at
// most once an hour.
//
// Why this is safe with many processes: an O_APPEND write moves the file
// offset and the size together under the inode's lock, so concurrent
// one-byte appends never overwrite each other (on the local filesystems the
// cache is restricted to). There is no read-modify-write, no lock and no
// fsync; a crash can lose the last few counts, which is fine for a
// statistic. Cost: an open, a write and a close, a few microseconds.
//
// The price is size: one byte per lookup (1 MiB per million). Deleting
// <root>/.stats resets the counters; nothing else reads those files.
//
// Not counted: lookups on a read-only cache (Options.ReadOnly writes
// nothing), and lookups where <root>/index.db does not exist, so a lookup on
// a missing root, or a directory that is not a cache yet, creates nothing.
const (
	statsDirName = ".stats"
	hitsFile     = "hits"
	missesFile   = "misses"
)

func (c *Cache) statsDir() string { return filepath.Join(c.root, statsDirName) }

// countLookup counts the result of one Lookup, LookupBuildID or OpenEntry:
// a hit when it found a usable entry, a miss when the key has no entry or a
// corrupt one (the caller has to build the kernel either way). Invalid
// arguments and I/O errors count as neither.
func (c *Cache) countLookup(err error) {
	switch {
	case err == nil:
		c.bump(hitsFile)
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrCorruptEntry):
		c.bump(missesFile)
	}
}

// bump appends one byte to a counter file. Best effort: failures are ignored.
func (c *Cache) bump(name string) {
	if c.opt.ReadOnly {
		return
	}
	// A hit was read from the index, so it exists; a miss may be a lookup
	// in a directory that is not a cache (yet): create nothing there.
	if name != hitsFile {
		if _, err := c.fs.Lstat(c.IndexPath()); err != nil {
			return
		}
	}
	// Through c.fs: a symlink at .stats or at the counter (a dangling one
	// too) is refused, so no counter is created or appended outside the root.
	path := filepath.Join(c.statsDir(), name)
	f, err := c.fs.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if errors.Is(err, fs.ErrNotExist) {
		if err := c.fs.Mkdir(c.statsDir(), 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return
		}
		f, err = c.fs.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	}
	if err != nil {
		return
	}
	_, _ = f.Write([]byte{'\n'})
	_ = f.Close()
}

// counterValue reads a counter file's count (its size); a missing file is 0.
func (c *Cache) counterValue(ctx context.Context, name string) (int64, error) {
	fi, err := c.fs.Lstat(filepath.Join(c.statsDir(), name))
	if err == nil && !fi.Mode().IsRegular() {
		return 0, nil // not a counter kcache wrote (a symlink is not followed)
	}
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, beneath.ErrSymlink) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read counter: %w", err)
	}
	return fi.Size(), nil
}

// StatsReport is what `kcache stats` shows. Its JSON form is documented and
// stable: fields are always present, unknown values are null.
type StatsReport struct {
	Root       string          `json:"root"`
	Entries    EntryCounts     `json:"entries"`
	Blobs      BlobUsage       `json:"blobs"`
	Index      IndexUsage      `json:"index"`
	Staging    StagingUsage    `json:"staging"`
	Quarantine QuarantineUsage `json:"quarantine"`
	// Hits and Misses count lookups (see countLookup); Evictions counts
	// entries removed by rm, clean and gc.
	Hits      int64 `json:"hits"`
	Misses    int64 `json:"misses"`
	Evictions int64 `json:"evictions"`
	// GCRuns counts completed gc runs; LastGC is when the last one ran and
	// LastGCFreedBytes what it freed (nil until a gc has run).
	GCRuns           int64      `json:"gc_runs"`
	LastGC           *time.Time `json:"last_gc"`
	LastGCFreedBytes *int64     `json:"last_gc_freed_bytes"`
	// LastSweep is when a sweep last ran (nil: never).
	LastSweep *time.Time `json:"last_sweep"`
}

// EntryCounts counts index entries. Total = Valid + Corrupt; Pinned counts
// pinned entries of either kind.
type EntryCounts struct {
	Total   int `json:"total"`
	Valid   int `json:"valid"`
	Corrupt int `json:"corrupt"`
	Pinned  int `json:"pinned"`
}

// BlobUsage compares what the index records with what blobs/ holds. On a
// healthy, idle cache RecordedBytes == OnDiskBytes and the unreferenced and
// missing counts are zero.
type BlobUsage struct {
	// RecordedBytes is the sum of the sizes of the distinct blobs (images,
	// vmlinux files, manifests) that entries reference; RecordedCount how
	// many there are.
	RecordedBytes int64 `json:"recorded_bytes"`
	RecordedCount int   `json:"recorded_count"`
	// OnDiskBytes is the sum of the sizes of every regular file under
	// blobs/ (what du would count, without block rounding).
	OnDiskBytes int64 `json:"on_disk_bytes"`
	OnDiskCount int   `json:"on_disk_count"`
	// Unreferenced are files under blobs/ that no entry references: blobs
	// awaiting the sweep or foreign files.
	UnreferencedBytes int64 `json:"unreferenced_bytes"`
	UnreferencedCount int   `json:"unreferenced_count"`
	// MissingCount is referenced blobs whose file is not there.
	MissingCount int `json:"missing_count"`
	// DedupSavedBytes is what storing each entry's blobs separately would
	// take beyond RecordedBytes.
	DedupSavedBytes int64 `json:"dedup_saved_bytes"`
}

// IndexUsage describes index.db. FreePages are pages bbolt reuses before
// growing the file; a large FreeBytes next to SizeBytes means compaction
// would shrink it.
type IndexUsage struct {
	Path      string `json:"path"`
	SizeBytes int64  `json:"size_bytes"`
	PageSize  int    `json:"page_size"`
	FreePages int    `json:"free_pages"`
	FreeBytes int64  `json:"free_bytes"`
}

// StagingUsage is <root>/.tmp: Dirs staging directories (live writers' and
// dead ones' the next sweep removes) holding Bytes.
type StagingUsage struct {
	Path  string `json:"path"`
	Bytes int64  `json:"bytes"`
	Dirs  int    `json:"dirs"`
}

// QuarantineUsage is <root>/quarantine: Files files holding Bytes, moved
// there by verify or doctor. Zero when the directory does not exist.
type QuarantineUsage struct {
	Path  string `json:"path"`
	Bytes int64  `json:"bytes"`
	Files int    `json:"files"`
}

// Stats reports what the cache holds and how it has been used. It writes
// nothing (the index is opened read-only) and a missing root reports as
// empty. It is a snapshot, not atomic: blobs/ and .tmp are walked after the
// index is closed, so a concurrent store or removal can make recorded and
// on-disk bytes differ for a moment.
func (c *Cache) Stats(ctx context.Context) (*StatsReport, error) {
	r := &StatsReport{
		Root:       c.root,
		Index:      IndexUsage{Path: c.IndexPath()},
		Staging:    StagingUsage{Path: c.tmpDir()},
		Quarantine: QuarantineUsage{Path: filepath.Join(c.root, "quarantine")},
	}
	referenced := map[string]int64{} // digest -> size
	var counters map[string]int64
	// Stats writes nothing: it reads an older schema as it is.
	db, err := c.openPolled(ctx, index.OpenForStats, c.IndexPath(), index.Options{ReadOld: true})
	switch {
	case errors.Is(err, index.ErrNoIndex):
	case err != nil:
		return nil, fmt.Errorf("stats %s: %w", c.root, c.explainIndexErr(err))
	default:
		err := db.View(func(tx *index.Tx) error {
			counters = tx.Stats()
			pins, err := tx.Pins()
			if err != nil {
				return err
			}
			var perEntry int64
			err = tx.ForEach(func(key string, rec *index.Record, err error) error {
				r.Entries.Total++
				if _, ok := pins[key]; ok {
					r.Entries.Pinned++
				}
				var derr *index.DecodeError
				if errors.As(err, &derr) {
					r.Entries.Corrupt++
					return nil
				}
				if err != nil {
					return err
				}
				if _, err := c.entryFrom(rec, nil); err != nil {
					r.Entries.Corrupt++
				} else {
					r.Entries.Valid++
				}
				blobs := []index.Blob{rec.Image, rec.Manifest}
				if rec.Vmlinux != nil {
					blobs = append(blobs, *rec.Vmlinux)
				}
				for _, b := range blobs {
					if b.Digest == "" {
						continue
					}
					perEntry += b.Size
					referenced[b.Digest] = b.Size
				}
				return nil
			})
			for _, n := range referenced {
				r.Blobs.RecordedBytes += n
			}
			r.Blobs.RecordedCount = len(referenced)
			r.Blobs.DedupSavedBytes = perEntry - r.Blobs.RecordedBytes
			return err
		})
		if err == nil {
			var fst index.FileStats
			if fst, err = db.FileStats(); err == nil {
				r.Index.PageSize, r.Index.FreePages = fst.PageSize, fst.FreePages
				r.Index.FreeBytes = int64(fst.FreePages) * int64(fst.PageSize)
			}
		}
		if cerr := db.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("stats %s: %w", c.root, c.explainIndexErr(err))
		}
		if fi, err := c.fs.Lstat(c.IndexPath()); err == nil {
			r.Index.SizeBytes = fi.Size()
		}
	}

	present := map[string]bool{}
	err = c.walkFiles(filepath.Join(c.root, "blobs"), func(path string, size int64) {
		r.Blobs.OnDiskBytes += size
		r.Blobs.OnDiskCount++
		name := filepath.Base(path)
		if _, ok := referenced[name]; ok && c.blobs.Path(name) == path {
			present[name] = true
			return
		}
		r.Blobs.UnreferencedBytes += size
		r.Blobs.UnreferencedCount++
	})
	if err != nil {
		return nil, err
	}
	r.Blobs.MissingCount = len(referenced) - len(present)

	if err := c.walkFiles(r.Staging.Path, func(_ string, size int64) { r.Staging.Bytes += size }); err != nil {
		return nil, err
	}
	if ents, err := c.fs.ReadDir(r.Staging.Path); err == nil {
		for _, e := range ents {
			if e.IsDir() {
				r.Staging.Dirs++
			}
		}
	}
	err = c.walkFiles(r.Quarantine.Path, func(_ string, size int64) {
		r.Quarantine.Bytes += size
		r.Quarantine.Files++
	})
	if err != nil {
		return nil, err
	}

	if r.Hits, err = c.counterValue(ctx, hitsFile); err != nil {
		return nil, err
	}
	if r.Misses, err = c.counterValue(ctx, missesFile); err != nil {
		return nil, err
	}
	r.Evictions = counters[index.StatEvictions]
	r.GCRuns = counters[index.StatGCRuns]
	if v, ok := counters[index.StatLastGC]; ok {
		t := time.Unix(v, 0).UTC()
		r.LastGC = &t
	}
	if v, ok := counters[index.StatLastGCFree]; ok {
		r.LastGCFreedBytes = &v
	}
	if v, ok := counters[index.StatLastSweep]; ok {
		t := time.Unix(v, 0).UTC()
		r.LastSweep = &t
	}
	return r, nil
}

// walkFiles calls fn for every regular file under dir with its size. A
// missing dir, or a file that vanishes during the walk, is skipped; so is
// a symlink, at dir or below it (never followed: what it points to is not
// the cache's).
func (c *Cache) walkFiles(dir string, fn func(path string, size int64)) error {
	err := c.fs.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, beneath.ErrSymlink) {
			if p == filepath.Clean(dir) {
				return fs.SkipAll
			}
			return nil
		}
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		fn(p, fi.Size())
		return nil
	})
	if err != nil {
		return fmt.Errorf("stats: walk %s: %w", dir, err)
	}
	return nil
}
