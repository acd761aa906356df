package index

// The small per-cache state: stats counters, last_used, the current
// kconfig hash and pins.

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// Counters kept in the stats bucket.
const (
	StatEvictions  = "evictions" // entries removed by rm, clean and gc
	StatGCRuns     = "gc_runs"   // completed gc runs
	StatLastGC     = "last_gc"   // unix seconds of the last gc
	StatLastGCFree = "last_gc_freed_bytes"
	StatLastSweep  = "last_sweep" // unix seconds of the last blob sweep
)

// AddStat adds delta to a counter of the stats bucket.
func (t *Tx) AddStat(name string, delta int64) error {
	if delta == 0 {
		return nil
	}
	b, err := t.bucket(bucketStats)
	if err != nil {
		return err
	}
	var v int64
	if cur := b.Get([]byte(name)); len(cur) == 8 {
		v = int64(binary.BigEndian.Uint64(cur))
	}
	return b.Put([]byte(name), binary.BigEndian.AppendUint64(nil, uint64(v+delta)))
}

// SetStat sets a counter of the stats bucket.
func (t *Tx) SetStat(name string, v int64) error {
	b, err := t.bucket(bucketStats)
	if err != nil {
		return err
	}
	return b.Put([]byte(name), binary.BigEndian.AppendUint64(nil, uint64(v)))
}

// Stats returns every counter of the stats bucket (none in a schema 1 file
// read with Options.ReadOld).
func (t *Tx) Stats() map[string]int64 {
	out := map[string]int64{}
	if b := t.tx.Bucket(bucketStats); b != nil {
		_ = b.ForEach(func(k, v []byte) error {
			if len(v) == 8 {
				out[string(k)] = int64(binary.BigEndian.Uint64(v))
			}
			return nil
		})
	}
	return out
}

// SetLastUsed records when key was last looked up. A missing key is not an
// error (it may have been removed since the lookup read it).
func (t *Tx) SetLastUsed(key string, at time.Time) error {
	entries := t.tx.Bucket(bucketEntries)
	v := entries.Get([]byte(key))
	if v == nil {
		return nil
	}
	rec, err := decodeRecord(key, v)
	if err != nil {
		return nil
	}
	rec.LastUsed = at.UTC().Format(time.RFC3339)
	val, err := encodeRecord(rec)
	if err != nil {
		return err
	}
	return entries.Put([]byte(key), val)
}

// KconfigHash returns the current kconfig hash, or "" when none is set.
func (t *Tx) KconfigHash() string {
	return string(t.tx.Bucket(bucketMeta).Get(keyKconfig))
}

// SetKconfigHash sets the current kconfig hash; "" clears it.
func (t *Tx) SetKconfigHash(h string) error {
	m := t.tx.Bucket(bucketMeta)
	if h == "" {
		return m.Delete(keyKconfig)
	}
	return m.Put(keyKconfig, []byte(h))
}

// Pin marks key as pinned. The key need not have an entry yet.
func (t *Tx) Pin(key string, p Pin) error {
	v, err := msgpack.Marshal(&p)
	if err != nil {
		return err
	}
	return t.tx.Bucket(bucketPins).Put([]byte(key), v)
}

// Unpin removes a pin and reports whether there was one.
func (t *Tx) Unpin(key string) (bool, error) {
	b := t.tx.Bucket(bucketPins)
	if b.Get([]byte(key)) == nil {
		return false, nil
	}
	return true, b.Delete([]byte(key))
}

// Pinned reports whether key is pinned.
func (t *Tx) Pinned(key string) bool {
	return t.tx.Bucket(bucketPins).Get([]byte(key)) != nil
}

// PinOf returns key's pin, or nil.
func (t *Tx) PinOf(key string) *Pin {
	v := t.tx.Bucket(bucketPins).Get([]byte(key))
	if v == nil {
		return nil
	}
	var p Pin
	if msgpack.Unmarshal(v, &p) != nil {
		return &Pin{} // pinned all the same: a damaged pin must not unpin
	}
	return &p
}

// Pins returns every pinned key.
func (t *Tx) Pins() (map[string]Pin, error) {
	out := map[string]Pin{}
	err := t.tx.Bucket(bucketPins).ForEach(func(k, v []byte) error {
		var p Pin
		if err := msgpack.Unmarshal(v, &p); err != nil {
			return fmt.Errorf("%w: pin %q: %v", ErrCorrupt, k, err)
		}
		out[string(k)] = p
		return nil
	})
	return out, err
}
