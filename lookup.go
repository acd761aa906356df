package kcache

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/kcache/kcache/index"
)

// Lookup returns the entry stored under key for use: it is Describe plus a
// warning, every time, when the vmlinux is unstripped, and an update of
// last_used (at most once an hour, so lookups stay read-only almost always).
//
// A Lookup counts as a hit when it returns an entry and as a miss when the
// key has no entry or a corrupt one (see countLookup); Describe counts
// nothing.
func (c *Cache) Lookup(key string) (*Entry, error) {
	e, err := c.lookup(key)
	c.countLookup(err)
	return e, err
}

// lookup is Lookup without counting a hit or a miss.
func (c *Cache) lookup(key string) (*Entry, error) {
	e, err := c.Describe(key)
	if err != nil {
		return nil, err
	}
	if e.HasVmlinux && !e.VmlinuxStripped {
		c.warnf("cache entry %q: using an unstripped vmlinux (%d bytes) because stripping it failed when it was stored; rebuild the kernel and store it again", key, e.Vmlinux.Size)
	}
	c.touch(e)
	return e, nil
}

// Describe returns the entry stored under key without counting it as used.
// A missing entry is a *NotFoundError (ErrNotFound), an unusable one a
// *CorruptError.
func (c *Cache) Describe(key string) (*Entry, error) {
	return c.describe(key, nil)
}

// describe is Describe; inView, when not nil, runs on the usable entry while
// the index is still open, and its error is describe's.
//
// The blobs are checked (and inView may open them) while the index is open:
// a Store or Remove unlinks the blobs it released only after its commit,
// which cannot happen while this read holds the index, so blobs cannot
// vanish between reading the record and checking them (which once made a
// concurrent replacement look like a corrupt entry).
func (c *Cache) describe(key string, inView func(*Entry) error) (*Entry, error) {
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	var e *Entry
	var entryErr error
	ok, err := c.view(func(tx *index.Tx) error {
		rec, err := tx.Get(key)
		if err != nil {
			return err
		}
		e, entryErr = c.entryFrom(rec, tx.PinOf(key))
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
	return e, nil
}

// touch records last_used when it is older than lastUsedInterval. It is best
// effort: a busy index or a read-only cache must not fail a lookup.
func (c *Cache) touch(e *Entry) {
	if c.opt.ReadOnly {
		return
	}
	now := time.Now()
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
func (c *Cache) OpenEntry(key string) (*OpenedEntry, error) {
	o, err := c.openEntry(key)
	c.countLookup(err)
	return o, err
}

func (c *Cache) openEntry(key string) (*OpenedEntry, error) {
	var lastErr error
	for range 5 {
		e, err := c.lookup(key)
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
