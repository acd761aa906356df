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
