package kcache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/kcache/kcache/blobstore"
	"github.com/kcache/kcache/index"
	"github.com/kcache/kcache/internal/failpoint"
	"github.com/kcache/kcache/lock"
	"github.com/kcache/kcache/strip"
)

// Artifacts are the files Store copies into the cache. They are read, never
// moved or modified.
type Artifacts struct {
	Image   string // boot image path; required
	Vmlinux string // vmlinux path; optional
}

// Store copies a kernel into the cache under key, replacing any entry there
// atomically: readers see the old entry or the new one. It waits up to
// Options.StoreLockTimeout for holders of the key's lock (harnesses holding
// it shared) and releases blobs that no other entry uses.
func (c *Cache) Store(ctx context.Context, key string, art Artifacts, meta Metadata) (*Entry, error) {
	return c.store(ctx, key, art, meta, nil)
}

// store is Store; mig, when not nil, is recorded on the record (Migrate).
func (c *Cache) store(ctx context.Context, key string, art Artifacts, meta Metadata, mig *index.Migrated) (*Entry, error) {
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	if c.opt.ReadOnly { // before any lock file, sweep or staging directory
		return nil, fmt.Errorf("store %q: %w", key, ErrReadOnly)
	}
	meta, err := meta.check(c.now())
	if err != nil {
		return nil, fmt.Errorf("store %q: %w", key, err)
	}
	// A damaged index fails the store now, before anything is copied; the
	// error names the file and `kcache doctor --rebuild-index`. So does an
	// index from a newer kcache. (An older one is upgraded by this open.)
	// The same transaction reads when the last sweep ran (sweepForStore), so a
	// store opens the index once before its commit, not twice.
	var lastSweep int64
	_, err = c.view(ctx, func(tx *index.Tx) error {
		lastSweep = tx.Stats()[index.StatLastSweep]
		return nil
	})
	if errors.Is(err, index.ErrCorrupt) || errors.Is(err, index.ErrSchemaTooNew) {
		return nil, fmt.Errorf("store %q: %w", key, err)
	}
	indexOK := err == nil // no index yet counts: last is 0 then
	image, err := openInput("image", art.Image)
	if err != nil {
		return nil, fmt.Errorf("store %q: %w", key, err)
	}
	defer image.Close()
	var vmlinux *os.File
	if art.Vmlinux != "" {
		if vmlinux, err = openInput("vmlinux", art.Vmlinux); err != nil {
			return nil, fmt.Errorf("store %q: %w", key, err)
		}
		defer vmlinux.Close()
	}

	l, err := c.acquire(ctx, key, lock.Exclusive, c.opt.StoreLockTimeout)
	if err != nil {
		return nil, fmt.Errorf("store %q: %w", key, err)
	}
	defer l.Release()
	c.sweepForStore(ctx, indexOK, lastSweep)
	st, err := c.newStaging(ctx)
	if err != nil {
		return nil, fmt.Errorf("store %q: %w", key, err)
	}
	failpoint.Hit(failpoint.StoreAfterStaging)
	defer func() {
		failpoint.Hit(failpoint.StoreBeforeUnstage)
		if err := st.remove(); err != nil {
			c.warnf("%v (the next store sweeps it)", err)
		}
	}()

	// One stored_at for every attempt: the record, and so the manifest
	// blob, is then the same bytes each time, and a retry finds its
	// manifest in place instead of leaving one more behind (each would be a
	// complete entry to doctor).
	storedAt := c.now().UTC().Format(time.RFC3339Nano)
	for retry := newDyingRetry(); ; {
		rec, bs, err := c.ingest(ctx, st, key, meta, image, vmlinux, mig, storedAt)
		if err != nil {
			return nil, fmt.Errorf("store %q: %w", key, err)
		}
		var pin *index.Pin // a pin outlives replacements of its entry
		err = c.update(ctx, func(tx *index.Tx) ([]string, error) {
			pin = tx.PinOf(key)
			released, err := tx.Put(rec, c.hasBlob)
			if err == nil {
				err = recordCtimes(tx, bs)
			}
			failpoint.Hit(failpoint.StoreBeforeCommit)
			return released, err
		})
		if retry.again(ctx, &err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("store %q: %w", key, err)
		}
		return c.entryFrom(rec, pin)
	}
}

// dyingRetry paces the retries of a write whose blobs vanished under it. A
// blob the write found present (deduplicated, or already local) can be
// removed by a concurrent rm or gc before the write's transaction references
// it: either already gone (index.ErrBlobVanished, from Put's presence
// check) or released and about to be unlinked (index.ErrBlobDying). Only
// those two are retried: any other error, a missing file elsewhere (the
// root, an input) included, is returned at once. Both resolve by waiting briefly and writing
// the blobs again, until a remover that died with the blob marked dying has
// been given up on.
type dyingRetry struct {
	deadline time.Time
	n        int
}

func newDyingRetry() *dyingRetry {
	return &dyingRetry{deadline: time.Now().Add(index.DyingAbandonAfter + 5*time.Second)}
}

// again reports whether err is such a vanished blob and there is time left,
// and then waits before the next attempt.
//
// When ctx ends during the wait, *err becomes ctx's error (wrapping the
// vanished blob's) and again returns false.
func (r *dyingRetry) again(ctx context.Context, err *error) bool {
	if !(errors.Is(*err, index.ErrBlobVanished) || errors.Is(*err, index.ErrBlobDying)) || !time.Now().Before(r.deadline) {
		return false
	}
	r.n++
	select {
	case <-ctx.Done():
		*err = fmt.Errorf("%w (while waiting to retry: %w)", ctx.Err(), *err)
		return false
	case <-time.After(min(time.Duration(r.n)*20*time.Millisecond, 500*time.Millisecond)):
		return true
	}
}

// hasBlob reports whether blob d's file is present; index.Tx.Put asks it
// about blobs the index does not reference yet.
func (c *Cache) hasBlob(d string) bool {
	_, err := c.blobs.Stat(d)
	return err == nil
}

func openInput(role, path string) (*os.File, error) {
	if path == "" {
		return nil, fmt.Errorf("no %s file given", role)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", role, err)
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s is not a regular file", path)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open %s: %w", role, err)
	}
	return f, nil
}

// ingest copies the inputs and the manifest into blobs and returns the record
// that references them, and the committed blobs (their ctimes go into the
// index with the record). The three blobs are staged first and committed
// together (blobstore.CommitAll: their fsyncs share journal commits), then
// the failpoints of each blob's installation are passed in order. A blob
// file already present is reused only when its recorded ctime vouches for
// it or its bytes hash right (blobTrust); else it is replaced. storedAt is
// the record's stored_at.
func (c *Cache) ingest(ctx context.Context, st *staging, key string, meta Metadata, image, vmlinux *os.File, mig *index.Migrated, storedAt string) (*index.Record, []blobstore.Blob, error) {
	rec := &index.Record{
		Key: key, Version: meta.Version, Source: meta.Source, Arch: meta.Arch,
		ImageName: meta.ImageName, ConfigHash: meta.ConfigHash, BuiltAt: meta.BuiltAt,
		KconfigHash: meta.KconfigHash, SourceVmlinuxSize: meta.SourceVmlinuxSize,
		SourceVmlinuxMtimeSecs: meta.SourceVmlinuxMtimeSecs, ConfigHZ: meta.ConfigHZ,
		StoredAt: storedAt, Migrated: mig,
	}
	var ws []*blobstore.Writer
	defer func() {
		for _, w := range ws {
			w.Abort() // a no-op once committed
		}
	}()
	iw, err := c.stageFile(ctx, st, image)
	if err != nil {
		return nil, nil, fmt.Errorf("copy kernel image to cache: %w", err)
	}
	ws = append(ws, iw)
	rec.Image = index.Blob{Digest: iw.Digest(), Size: iw.Size()}
	points := []string{failpoint.StoreAfterImage}
	if vmlinux != nil {
		vw, err := c.stageVmlinux(ctx, st, vmlinux, rec)
		if vw != nil {
			ws = append(ws, vw)
		}
		if err != nil {
			return nil, nil, err
		}
		points = append(points, failpoint.StoreAfterVmlinux)
	}
	mw, err := c.stageManifest(st, rec)
	if err != nil {
		return nil, nil, err
	}
	ws = append(ws, mw)
	points = append(points, failpoint.StoreAfterManifest)
	digests := make([]string, len(ws))
	for i, w := range ws {
		digests[i] = w.Digest()
	}
	bs, err := c.blobs.CommitAllTrust(ws, c.blobTrust(ctx, digests), func(i int) { failpoint.Hit(points[i]) })
	if err != nil {
		return nil, nil, fmt.Errorf("install blobs: %w", err)
	}
	c.warnReplaced(bs)
	rec.Manifest.Digest, rec.Manifest.Size = bs[len(bs)-1].Digest, bs[len(bs)-1].Size
	return rec, bs, nil
}

// stageManifest stages rec's manifest blob.
func (c *Cache) stageManifest(st *staging, rec *index.Record) (*blobstore.Writer, error) {
	manifest, err := index.EncodeManifest(rec)
	if err != nil {
		return nil, err
	}
	w, err := c.blobs.NewWriter(st.dir)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(manifest); err != nil {
		w.Abort()
		return nil, fmt.Errorf("write manifest: %w", err)
	}
	return w, nil
}

// writeManifest stores rec's manifest blob on its own (Pull, whose other
// blobs are in place already), records its digest in rec and returns the
// committed blob.
func (c *Cache) writeManifest(st *staging, rec *index.Record) (blobstore.Blob, error) {
	w, err := c.stageManifest(st, rec)
	if err != nil {
		return blobstore.Blob{}, err
	}
	bs, err := c.blobs.CommitAll([]*blobstore.Writer{w}, nil)
	if err != nil {
		return blobstore.Blob{}, fmt.Errorf("write manifest: %w", err)
	}
	rec.Manifest.Digest, rec.Manifest.Size = bs[0].Digest, bs[0].Size
	return bs[0], nil
}

// stageFile copies f from its start into a staged blob writer.
func (c *Cache) stageFile(ctx context.Context, st *staging, f *os.File) (*blobstore.Writer, error) {
	w, err := c.blobs.NewWriter(st.dir)
	if err != nil {
		return nil, err
	}
	if err := copyFrom(ctx, w, f); err != nil {
		w.Abort()
		return nil, err
	}
	return w, nil
}

// copyFrom copies f from its start into w.
func copyFrom(ctx context.Context, w *blobstore.Writer, f *os.File) error {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("rewind %s: %w", f.Name(), err)
	}
	if _, err := io.Copy(w, ctxReader{ctx, f}); err != nil {
		return fmt.Errorf("%s: %w", f.Name(), err)
	}
	return nil
}

// stageVmlinux strips the vmlinux straight into a staged blob (the stripped
// output is small and built in memory; there is no full-size temporary
// copy). If stripping fails it stages the raw bytes instead, in the same
// staged file, with vmlinux_stripped=false, and warns. It records the
// build ID and CONFIG_HZ when the kernel carries them. The record's Vmlinux
// is the staged blob's digest and size; the caller commits the writer (and
// aborts it, when not nil, on error).
func (c *Cache) stageVmlinux(ctx context.Context, st *staging, f *os.File, rec *index.Record) (*blobstore.Writer, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat vmlinux: %w", err)
	}
	size := fi.Size()
	rec.VmlinuxOriginalSize, rec.HasVmlinux = &size, true
	var config string
	w, err := c.blobs.NewWriter(st.dir)
	if err != nil {
		return nil, err
	}
	res, stripErr := strip.Strip(ctxReaderAt{ctx, f}, size, w)
	if stripErr == nil {
		rec.VmlinuxStripped = true
		config = res.IKConfig
		if res.BuildID != "" {
			rec.BuildID = &res.BuildID
		}
	} else if err := ctx.Err(); err != nil {
		return w, fmt.Errorf("strip vmlinux: %w", err) // cancelled, not unstrippable
	} else {
		c.warnf("cache entry %q: could not strip vmlinux %s (%v); storing it whole (%d bytes), recorded as vmlinux_stripped=false",
			rec.Key, f.Name(), stripErr, size)
		if err := w.Reset(); err != nil {
			return w, fmt.Errorf("copy vmlinux to cache: %w", err)
		}
		if err := copyFrom(ctx, w, f); err != nil {
			return w, fmt.Errorf("copy vmlinux to cache: %w", err)
		}
		rec.VmlinuxStripped = false
		if id, err := strip.BuildID(f, size); err == nil && id != "" {
			rec.BuildID = &id
		}
		config, _ = strip.IKConfigELF(f, size)
	}
	rec.Vmlinux = &index.Blob{Digest: w.Digest(), Size: w.Size()}
	if v, ok := strip.ConfigValue(config, "HZ"); ok { // the kernel's own config wins
		if hz, err := strconv.ParseUint(v, 10, 64); err == nil {
			rec.ConfigHZ = &hz
		}
	}
	return w, nil
}
