package kcache

import (
	"context"
	"errors"
	"fmt"

	"github.com/kcache/kcache/index"
	"github.com/kcache/kcache/lock"
)

// Remove deletes the entry under key and every blob no other entry uses. It
// does not wait: an entry whose lock anyone holds (a harness booting it, a
// store replacing it) is left alone and the error (ErrInUse) names the
// holders. A pinned entry is a *PinnedError unless RemoveOptions.Force. A
// key with no entry is a *NotFoundError.
func (c *Cache) Remove(ctx context.Context, key string, opt RemoveOptions) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	// Check first without locking, so that removing a key that was never
	// stored creates no lock file (and no root).
	if err := c.exists(ctx, key); err != nil {
		return err
	}
	r, err := c.removeVictims(ctx, []Victim{{Key: key, Reason: "rm"}}, opt)
	switch {
	case err != nil:
		return fmt.Errorf("remove %q: %w", key, err)
	case len(r.KeptInUse) > 0:
		h := r.KeptInUse[0]
		return fmt.Errorf("remove %q: %w", key, &lock.ContendedError{Path: h.Lockfile, What: fmt.Sprintf("cache entry %q", key), Mode: lock.Exclusive, Holders: h.Holders})
	case len(r.KeptPinned) > 0:
		reason := ""
		_, _ = c.view(ctx, func(tx *index.Tx) error {
			if p := tx.PinOf(key); p != nil {
				reason = p.Reason
			}
			return nil
		})
		return &PinnedError{Key: key, Reason: reason}
	case len(r.NotFound) > 0:
		return &NotFoundError{Key: key}
	}
	return nil
}

// exists returns a *NotFoundError unless the index has a record (usable or
// not) under key.
func (c *Cache) exists(ctx context.Context, key string) error {
	found := false
	_, err := c.view(ctx, func(tx *index.Tx) error {
		_, err := tx.Get(key)
		found = !errors.Is(err, index.ErrNotFound)
		return nil
	})
	if err != nil {
		return fmt.Errorf("look up %q: %w", key, err)
	}
	if !found {
		return &NotFoundError{Key: key}
	}
	return nil
}
