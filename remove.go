package kcache

import (
	"errors"
	"fmt"

	"github.com/kcache/kcache/index"
)

// Remove deletes the entry under key and every blob no other entry uses. It
// does not wait: an entry whose lock anyone holds (a harness booting it, a
// store replacing it) is left alone and the error (ErrInUse) names the
// holders. A key with no entry is a *NotFoundError.
func (c *Cache) Remove(key string) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	// Check first without locking, so that removing a key that was never
	// stored creates no lock file (and no root).
	if err := c.exists(key); err != nil {
		return err
	}
	l, err := c.TryAcquireExclusive(key)
	if err != nil {
		return fmt.Errorf("remove %q: %w", key, err)
	}
	defer l.Release()
	err = c.update(func(tx *index.Tx) ([]string, error) { return tx.Delete(key) })
	if errors.Is(err, index.ErrNotFound) {
		return &NotFoundError{Key: key}
	}
	if err != nil {
		return fmt.Errorf("remove %q: %w", key, err)
	}
	return nil
}

// exists returns a *NotFoundError unless the index has a record (usable or
// not) under key.
func (c *Cache) exists(key string) error {
	found := false
	_, err := c.view(func(tx *index.Tx) error {
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
