package index

import (
	"fmt"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// bucketRemoved holds the tombstones. It is not one of allBuckets: a schema 2
// file written before tombstones existed has no such bucket, and that only
// means nothing was removed since. Delete creates it on first use, readers
// treat its absence as empty, so no schema upgrade is needed.
var bucketRemoved = []byte("removed")

// Tombstone records that an entry was removed, so that no repair brings it
// back: a manifest blob stays on disk after its entry is gone when a store
// was killed after writing it (or a remover was killed before unlinking it),
// and a manifest stored at or before RemovedAt is such a leftover, not an
// entry the index lost.
type Tombstone struct {
	// RemovedAt is when the removal's transaction ran (RFC 3339 UTC,
	// nanoseconds), on the remover's clock.
	RemovedAt string `msgpack:"removed_at"`
	// Manifest is the digest of the removed record's manifest blob ("" when
	// the record did not decode); kept for the curious, the time decides.
	Manifest string `msgpack:"manifest,omitempty"`
}

// Covers reports whether a record stored at storedAt (a Record.StoredAt)
// is older than the removal, so that restoring it would resurrect a removed
// entry. A time that does not parse is covered: when in doubt, a removal
// stays final.
func (tb Tombstone) Covers(storedAt string) bool {
	at, err := time.Parse(time.RFC3339Nano, storedAt)
	removed, rerr := time.Parse(time.RFC3339Nano, tb.RemovedAt)
	if err != nil || rerr != nil {
		return true
	}
	return !at.After(removed)
}

// Removed returns the tombstone of key, if its last removal left one that no
// newer record has cleared.
func (t *Tx) Removed(key string) (Tombstone, bool, error) {
	b := t.tx.Bucket(bucketRemoved)
	if b == nil {
		return Tombstone{}, false, nil
	}
	v := b.Get([]byte(key))
	if v == nil {
		return Tombstone{}, false, nil
	}
	var tb Tombstone
	if err := msgpack.Unmarshal(v, &tb); err != nil {
		// An unreadable tombstone still says the key was removed: cover
		// everything rather than resurrect.
		return Tombstone{RemovedAt: "unreadable"}, true, nil
	}
	return tb, true, nil
}

// SetRemoved writes key's tombstone (Delete does; doctor's rebuild carries
// the old index's tombstones over with it).
func (t *Tx) SetRemoved(key string, tb Tombstone) error {
	b, err := t.tx.CreateBucketIfNotExists(bucketRemoved)
	if err != nil {
		return fmt.Errorf("record removal of %q: %w", key, err)
	}
	v, err := msgpack.Marshal(&tb)
	if err != nil {
		return err
	}
	if err := b.Put([]byte(key), v); err != nil {
		return fmt.Errorf("record removal of %q: %w", key, err)
	}
	return nil
}

// ForEachRemoved calls fn for every tombstone, in key order.
func (t *Tx) ForEachRemoved(fn func(key string, tb Tombstone) error) error {
	b := t.tx.Bucket(bucketRemoved)
	if b == nil {
		return nil
	}
	return b.ForEach(func(k, v []byte) error {
		tb, _, err := t.Removed(string(k))
		if err != nil {
			return err
		}
		return fn(string(k), tb)
	})
}

// clearRemoved drops key's tombstone when rec is newer than the removal: the
// record then outranks every manifest the tombstone guarded against (doctor
// restores only manifests newer than the current record), so the tombstone
// has done its work and the bucket holds only keys that are removed now.
// An older record (a pull keeps the remote's stored_at) leaves it.
func (t *Tx) clearRemoved(rec *Record) error {
	b := t.tx.Bucket(bucketRemoved)
	if b == nil {
		return nil
	}
	tb, ok, err := t.Removed(rec.Key)
	if err != nil || !ok || tb.Covers(rec.StoredAt) {
		return err
	}
	return b.Delete([]byte(rec.Key))
}
