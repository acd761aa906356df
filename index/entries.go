package index

// Entries and their by_time ordering: reading, listing, Put and Delete.

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"time"
)

// Get returns the record stored under key, ErrNotFound, or a *DecodeError.
func (t *Tx) Get(key string) (*Record, error) {
	v := t.tx.Bucket(bucketEntries).Get([]byte(key))
	if v == nil {
		return nil, ErrNotFound
	}
	return decodeRecord(key, v)
}

// RawEntry is an entry's key and encoded record, both the index file's
// mapping: valid until the transaction ends, never to be modified.
type RawEntry struct{ Key, Value []byte }

// RawEntries returns every entry in key order (bytes.Compare's) without
// decoding or copying any: one walk over the entries bucket, for a caller
// that looks up many keys (sizeHint is the expected number).
func (t *Tx) RawEntries(sizeHint int) []RawEntry {
	ents := make([]RawEntry, 0, sizeHint)
	c := t.tx.Bucket(bucketEntries).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		ents = append(ents, RawEntry{k, v})
	}
	return ents
}

// DecodeRecordInto decodes and checks a record read with RawEntries into r,
// which it overwrites (zero on an error): a caller decoding many records
// (ListEach, on other goroutines) reuses one Record. A record that does not
// decode is a *DecodeError; the key is only read for it. The result does not
// refer to data.
func DecodeRecordInto(key []byte, data []byte, r *Record) error {
	if err := decodeRecordInto("", data, r); err != nil {
		var derr *DecodeError
		if errors.As(err, &derr) {
			derr.Key = string(key)
		}
		return err
	}
	return nil
}

// Count returns the number of entries.
func (t *Tx) Count() int { return t.tx.Bucket(bucketEntries).Stats().KeyN }

// CountByTime returns the number of keys in the by_time ordering; it equals
// Count in a consistent index.
func (t *Tx) CountByTime() int { return t.tx.Bucket(bucketByTime).Stats().KeyN }

// HasTimeKey reports whether the by_time ordering holds key at builtAt.
func (t *Tx) HasTimeKey(builtAt, key string) bool {
	tk := timeKey(builtAt, key)
	k, _ := t.tx.Bucket(bucketByTime).Cursor().Seek(tk)
	return bytes.Equal(k, tk)
}

// ForEach calls fn for every entry in key order. A record that does not
// decode is passed with a *DecodeError and a nil record.
func (t *Tx) ForEach(fn func(key string, rec *Record, err error) error) error {
	return t.tx.Bucket(bucketEntries).ForEach(func(k, v []byte) error {
		rec, err := decodeRecord(string(k), v)
		return fn(string(k), rec, err)
	})
}

// Newest calls fn with up to n keys, newest built_at first (ties in reverse
// key order), reading only the by_time bucket. n <= 0 means all.
func (t *Tx) Newest(n int, fn func(key, builtAt string) error) error {
	c := t.tx.Bucket(bucketByTime).Cursor()
	i := 0
	for k, _ := c.Last(); k != nil && (n <= 0 || i < n); k, _ = c.Prev() {
		at, key, ok := bytes.Cut(k, []byte{0})
		if !ok {
			return fmt.Errorf("%w: by_time key %q has no separator", ErrCorrupt, k)
		}
		if err := fn(string(key), string(at)); err != nil {
			return err
		}
		i++
	}
	return nil
}

// NewestRaw is Newest over every key without copying: key and builtAt are
// the index file's mapping, valid until the transaction ends, never to be
// modified.
func (t *Tx) NewestRaw(fn func(key, builtAt []byte) error) error {
	c := t.tx.Bucket(bucketByTime).Cursor()
	for k, _ := c.Last(); k != nil; k, _ = c.Prev() {
		at, key, ok := bytes.Cut(k, []byte{0})
		if !ok {
			return fmt.Errorf("%w: by_time key %q has no separator", ErrCorrupt, k)
		}
		if err := fn(key, at); err != nil {
			return err
		}
	}
	return nil
}

func timeKey(builtAt, key string) []byte {
	return append(append([]byte(builtAt), 0), key...)
}

// Put stores rec under rec.Key, replacing any previous record. It takes a
// reference on each blob of rec and drops those of the previous record; it
// returns the digests whose count reached zero, which the caller must delete
// from disk after the commit. exists reports whether a blob's file is present;
// it is called for blobs the index has no reference to yet, so a blob removed
// by a concurrent writer is caught here instead of being recorded as present.
func (t *Tx) Put(rec *Record, exists func(digest string) bool) (released []string, err error) {
	if err := rec.check(); err != nil {
		return nil, fmt.Errorf("put %q: %w", rec.Key, err)
	}
	for _, d := range rec.Digests() {
		ref, ok, err := t.Blob(d)
		if err != nil {
			return nil, err
		}
		if ok && ref.Dying != "" {
			since, _ := time.Parse(time.RFC3339Nano, ref.Dying)
			if time.Since(since) < DyingAbandonAfter {
				return nil, fmt.Errorf("put %q: blob %s: %w", rec.Key, d, ErrBlobDying)
			}
			// The remover died between its commit and its unlink: take the
			// blob over as if the index had never known it.
			if err := t.tx.Bucket(bucketBlobs).Delete([]byte(d)); err != nil {
				return nil, err
			}
			ok = false
		}
		if !ok && !exists(d) {
			return nil, fmt.Errorf("put %q: blob %s: %w: %w", rec.Key, d, ErrBlobVanished, os.ErrNotExist)
		}
	}
	var old *Record
	if v := t.tx.Bucket(bucketEntries).Get([]byte(rec.Key)); v != nil {
		old, _ = decodeRecord(rec.Key, v) // an undecodable old record holds no refs we can name
	}
	sizes := map[string]int64{rec.Image.Digest: rec.Image.Size, rec.Manifest.Digest: rec.Manifest.Size}
	if rec.Vmlinux != nil {
		sizes[rec.Vmlinux.Digest] = rec.Vmlinux.Size
	}
	for _, d := range rec.Digests() {
		if _, err := t.addRef(d, sizes[d], +1); err != nil {
			return nil, err
		}
	}
	if old != nil {
		if released, err = t.dropRefs(old); err != nil {
			return nil, err
		}
		if err := t.tx.Bucket(bucketByTime).Delete(timeKey(old.BuiltAt, old.Key)); err != nil {
			return nil, err
		}
	}
	val, err := encodeRecord(rec)
	if err != nil {
		return nil, err
	}
	if err := t.tx.Bucket(bucketEntries).Put([]byte(rec.Key), val); err != nil {
		return nil, fmt.Errorf("put %q: %w", rec.Key, err)
	}
	if err := t.tx.Bucket(bucketByTime).Put(timeKey(rec.BuiltAt, rec.Key), nil); err != nil {
		return nil, fmt.Errorf("put %q: %w", rec.Key, err)
	}
	if err := t.clearRemoved(rec); err != nil {
		return nil, fmt.Errorf("put %q: %w", rec.Key, err)
	}
	return released, nil
}

// Delete removes the record under key and its pin, drops its blob references
// and returns the digests whose count reached zero (the manifest's among
// them, so the caller unlinks it with the rest). A record that does not
// decode is removed all the same (its blobs are left for the sweep). In the
// same transaction it writes the key's Tombstone, so that no repair restores
// a manifest of the key written before this removal.
func (t *Tx) Delete(key string) (released []string, err error) {
	entries := t.tx.Bucket(bucketEntries)
	v := entries.Get([]byte(key))
	if v == nil {
		return nil, ErrNotFound
	}
	tb := Tombstone{RemovedAt: time.Now().UTC().Format(time.RFC3339Nano)}
	rec, derr := decodeRecord(key, v)
	if derr == nil {
		tb.Manifest = rec.Manifest.Digest
		if !tb.Covers(rec.StoredAt) {
			// The remover's clock is behind the storer's: the removal
			// still covers the record it removed.
			tb.RemovedAt = rec.StoredAt
		}
	}
	if err := t.SetRemoved(key, tb); err != nil {
		return nil, err
	}
	if derr == nil {
		if released, err = t.dropRefs(rec); err != nil {
			return nil, err
		}
		if err := t.tx.Bucket(bucketByTime).Delete(timeKey(rec.BuiltAt, key)); err != nil {
			return nil, err
		}
	}
	if err := t.tx.Bucket(bucketPins).Delete([]byte(key)); err != nil {
		return nil, err
	}
	if err := entries.Delete([]byte(key)); err != nil {
		return nil, fmt.Errorf("delete %q: %w", key, err)
	}
	return released, nil
}
