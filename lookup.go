package kcache

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/kcache/kcache/blobstore"
	"github.com/kcache/kcache/index"
)

// Lookup returns the entry stored under key for use: it is Describe plus a
// warning, every time, when the vmlinux is unstripped, and an update of
// last_used (at most once an hour, so lookups stay read-only almost always).
//
// A Lookup counts as a hit when it returns an entry and as a miss when the
// key has no entry or a corrupt one (the caller has to build the kernel
// either way); invalid keys and I/O errors count as neither. Describe
// counts nothing.
func (c *Cache) Lookup(ctx context.Context, key string) (*Entry, error) {
	e, err := c.lookup(ctx, key)
	c.countLookup(err)
	return e, err
}

// lookup is Lookup without counting a hit or a miss.
func (c *Cache) lookup(ctx context.Context, key string) (*Entry, error) {
	e, err := c.Describe(ctx, key)
	if err != nil {
		return nil, err
	}
	if e.HasVmlinux && !e.VmlinuxStripped {
		c.warnf("cache entry %q: using an unstripped vmlinux (%d bytes) because stripping it failed when it was stored; rebuild the kernel and store it again", key, e.Vmlinux.Size)
	}
	c.touch(ctx, e)
	return e, nil
}

// Describe returns the entry stored under key without counting it as used.
// A missing entry is a *NotFoundError (ErrNotFound), an unusable one a
// *CorruptError.
func (c *Cache) Describe(ctx context.Context, key string) (*Entry, error) {
	return c.describe(ctx, key, nil)
}

// describe is Describe; inView, when not nil, runs on the usable entry while
// the index is still open, and its error is describe's.
//
// The blobs are checked (and inView may open them) while the index is open:
// a Store or Remove unlinks the blobs it released only after its commit,
// which cannot happen while this read holds the index, so blobs cannot
// vanish between reading the record and checking them (which once made a
// concurrent replacement look like a corrupt entry).
func (c *Cache) describe(ctx context.Context, key string, inView func(*Entry) error) (*Entry, error) {
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	var e *Entry
	var entryErr error
	var fresh map[string]int64
	ok, err := c.view(ctx, func(tx *index.Tx) error {
		rec, err := tx.Get(key)
		if err != nil {
			return err
		}
		e, entryErr = c.entryFrom(rec, tx.PinOf(key))
		if entryErr == nil {
			fresh, entryErr = c.checkChanged(tx, rec)
		}
		if entryErr == nil && inView != nil {
			entryErr = inView(e)
		}
		return nil
	})
	var derr *index.DecodeError
	switch {
	case !ok && err == nil, errors.Is(err, index.ErrNotFound):
		return nil, &NotFoundError{Key: key}
	case errors.As(err, &derr):
		return nil, corruptFromDecode(key, derr)
	case err != nil:
		return nil, fmt.Errorf("lookup %q: %w", key, err)
	}
	if entryErr != nil {
		return nil, entryErr
	}
	c.recordFresh(ctx, fresh)
	return e, nil
}

// checkChanged re-hashes each image or vmlinux blob of rec whose file's
// ctime is not the one the index recorded (index.BlobRef.Ctime): something
// wrote to it, perhaps through a hard link, since kcache stored or last
// hashed it. Content that no longer matches makes the entry corrupt (kind
// <role>_content_mismatch); content that does is returned with its new
// ctime, to be recorded. A blob whose ctime was never recorded is not
// checked here (verify and the next store of the same content check it).
func (c *Cache) checkChanged(tx *index.Tx, rec *index.Record) (map[string]int64, error) {
	var fresh map[string]int64
	check := func(role, name string, b index.Blob) error {
		ref, ok, err := tx.Blob(b.Digest)
		if err != nil || !ok || ref.Ctime == 0 {
			return nil
		}
		in, err := c.blobs.Inode(b.Digest)
		if err != nil || in.Ctime == ref.Ctime {
			return nil // a missing file was reported by entryFrom
		}
		switch err := c.blobs.Verify(b.Digest); {
		case errors.Is(err, blobstore.ErrMismatch):
			return &CorruptError{Key: rec.Key, Kind: role + "_content_mismatch",
				Reason: fmt.Sprintf("%s file %s was changed after it was stored (a write through a hard link?): %v", role, name, err)}
		case err != nil:
			return &CorruptError{Key: rec.Key, Kind: role + "_unreadable", Reason: fmt.Sprintf("%s file %s: %v", role, name, err)}
		}
		if fresh == nil {
			fresh = map[string]int64{}
		}
		fresh[b.Digest] = in.Ctime
		return nil
	}
	if err := check("image", rec.ImageName, rec.Image); err != nil {
		return nil, err
	}
	if rec.Vmlinux != nil {
		if err := check("vmlinux", "vmlinux", *rec.Vmlinux); err != nil {
			return nil, err
		}
	}
	return fresh, nil
}

// recordFresh records the ctimes of blobs that checkChanged hashed right,
// so that the next lookup does not hash them again. Best effort, like touch.
func (c *Cache) recordFresh(ctx context.Context, fresh map[string]int64) {
	if len(fresh) == 0 || c.opt.ReadOnly {
		return
	}
	db, err := index.Open(c.IndexPath(), index.Options{Timeout: 200 * time.Millisecond})
	if err != nil {
		return
	}
	defer db.Close()
	_ = db.Update(func(tx *index.Tx) error {
		for d, ct := range fresh {
			if err := tx.SetBlobCtime(d, ct); err != nil {
				return err
			}
		}
		return nil
	})
}

// touch records last_used when it is older than lastUsedInterval. It is best
// effort: a busy index or a read-only cache must not fail a lookup.
func (c *Cache) touch(ctx context.Context, e *Entry) {
	if c.opt.ReadOnly {
		return
	}
	now := c.now()
	if last, err := time.Parse(time.RFC3339, e.LastUsed); err == nil && now.Sub(last) < lastUsedInterval {
		return
	}
	if c.checkIndexPath() != nil {
		return
	}
	db, err := index.Open(c.IndexPath(), index.Options{Timeout: 200 * time.Millisecond})
	if err != nil {
		return
	}
	defer db.Close()
	if db.Update(func(tx *index.Tx) error { return tx.SetLastUsed(e.Key, now) }) == nil {
		e.LastUsed = now.UTC().Format(time.RFC3339)
	}
}

// OpenedEntry is an entry with its blobs open. The files stay readable even
// if the entry is replaced or removed afterwards; close them when done.
type OpenedEntry struct {
	*Entry
	Image   *os.File
	Vmlinux *os.File // nil when the entry has no vmlinux
}

// Close closes the open blobs.
func (o *OpenedEntry) Close() error {
	err := o.Image.Close()
	if o.Vmlinux != nil {
		if verr := o.Vmlinux.Close(); err == nil {
			err = verr
		}
	}
	return err
}

// OpenEntry looks key up and opens its blobs. If a concurrent Store replaced
// the entry and removed a blob between the lookup and the open, it looks up
// again, so the files it returns always belong to one complete entry. It
// counts one hit or miss, however many times it looks up.
func (c *Cache) OpenEntry(ctx context.Context, key string) (*OpenedEntry, error) {
	o, err := c.openEntry(ctx, key)
	c.countLookup(err)
	return o, err
}

func (c *Cache) openEntry(ctx context.Context, key string) (*OpenedEntry, error) {
	var lastErr error
	for range 5 {
		e, err := c.lookup(ctx, key)
		if err != nil {
			return nil, err
		}
		img, err := c.fs.Open(e.ImagePath)
		if err != nil {
			lastErr = err
			continue
		}
		o := &OpenedEntry{Entry: e, Image: img}
		if e.VmlinuxPath != "" {
			if o.Vmlinux, err = c.fs.Open(e.VmlinuxPath); err != nil {
				img.Close()
				lastErr = err
				continue
			}
		}
		return o, nil
	}
	return nil, fmt.Errorf("open cache entry %q: blobs kept disappearing under concurrent replacement: %w", key, lastErr)
}
