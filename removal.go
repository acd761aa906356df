package kcache

import (
	"context"
	"errors"
	"time"

	"github.com/kcache/kcache/index"
	"github.com/kcache/kcache/lock"
)

// Victim is an entry that rm, clean or gc decided to remove, and why.
type Victim struct {
	Key    string `json:"key"`
	Reason string `json:"reason"` // "rm", "clean --keep 3", "max-age 720h0m0s", ...
}

// Removed is an entry a removal deleted.
type Removed struct {
	Key    string `json:"key"`
	Reason string `json:"reason"`
	// FreedBytes counts the blobs this entry was the last user of.
	FreedBytes int64 `json:"freed_bytes"`
}

// Removal reports what one removal did.
type Removal struct {
	Removed []Removed `json:"removed"`
	// KeptInUse are victims whose lock someone held; they were not touched.
	KeptInUse []HeldLock `json:"kept_in_use"`
	// KeptPinned are victims that are pinned (only rm --force removes those).
	KeptPinned []string `json:"kept_pinned"`
	// NotFound are victims that had no entry (already removed).
	NotFound   []string `json:"not_found"`
	FreedBytes int64    `json:"freed_bytes"`
	// IndexHeld is how long the index write transaction took; blob files
	// are unlinked after it.
	IndexHeld time.Duration `json:"index_held_ns"`
}

// RemoveOptions tune Remove (and the removals of Clean and GC).
type RemoveOptions struct {
	// Force removes pinned entries too.
	Force bool
}

// removeVictims is the one deletion protocol of rm, clean and gc: take each
// victim's exclusive lock without waiting (an entry in use is skipped and
// reported with its holders, never deleted under a running VM), delete every
// locked record in one index transaction, then — with the index closed —
// unlink the blobs no surviving entry uses, then release the locks.
func (c *Cache) removeVictims(ctx context.Context, victims []Victim, opt RemoveOptions) (*Removal, error) {
	r := &Removal{}
	if len(victims) == 0 {
		return r, nil
	}
	if c.opt.ReadOnly {
		return nil, ErrReadOnly
	}
	var locked []Victim
	var locks []*lock.Lock
	defer func() {
		for _, l := range locks {
			_ = l.Release()
		}
	}()
	for _, v := range victims {
		l, err := c.AcquireExclusive(ctx, v.Key, LockOptions{NoWait: true})
		var ce *lock.ContendedError
		switch {
		case errors.As(err, &ce):
			r.KeptInUse = append(r.KeptInUse, HeldLock{Key: v.Key, Lockfile: ce.Path, Holders: ce.Holders})
			continue
		case err != nil:
			return nil, err // names the key (cache entry "k") and the lock file
		}
		locks = append(locks, l)
		locked = append(locked, v)
	}
	if len(locked) == 0 {
		return r, nil
	}
	held, err := c.updateTimed(ctx, func(tx *index.Tx) ([]string, error) {
		r.Removed, r.KeptPinned, r.NotFound, r.FreedBytes = nil, nil, nil, 0
		var all []string
		for _, v := range locked {
			if !opt.Force && tx.Pinned(v.Key) {
				r.KeptPinned = append(r.KeptPinned, v.Key)
				continue
			}
			released, err := tx.Delete(v.Key)
			if errors.Is(err, index.ErrNotFound) {
				r.NotFound = append(r.NotFound, v.Key)
				continue
			}
			if err != nil {
				return nil, err
			}
			var freed int64
			for _, d := range released {
				ref, _, err := tx.Blob(d)
				if err != nil {
					return nil, err
				}
				freed += ref.Size
			}
			r.Removed = append(r.Removed, Removed{Key: v.Key, Reason: v.Reason, FreedBytes: freed})
			r.FreedBytes += freed
			all = append(all, released...)
		}
		if err := tx.AddStat(index.StatEvictions, int64(len(r.Removed))); err != nil {
			return nil, err
		}
		return all, nil
	})
	if err != nil {
		return nil, err
	}
	r.IndexHeld = held
	return r, nil
}
