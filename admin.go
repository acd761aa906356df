package kcache

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/kcache/kcache/index"
	"github.com/kcache/kcache/lock"
)

// Pin keeps key's entry from being collected by clean and gc. The entry must
// exist.
func (c *Cache) Pin(ctx context.Context, key, reason string) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	if err := c.exists(ctx, key); err != nil {
		return err
	}
	return c.update(ctx, func(tx *index.Tx) ([]string, error) {
		if _, err := tx.Get(key); errors.Is(err, index.ErrNotFound) {
			return nil, &NotFoundError{Key: key}
		}
		return nil, tx.Pin(key, index.Pin{PinnedAt: c.now().UTC().Format(time.RFC3339), Reason: reason})
	})
}

// Unpin removes key's pin and reports whether there was one.
func (c *Cache) Unpin(ctx context.Context, key string) (bool, error) {
	if err := ValidateKey(key); err != nil {
		return false, err
	}
	var had bool
	if _, err := c.view(ctx, func(tx *index.Tx) error { had = tx.Pinned(key); return nil }); err != nil || !had {
		return false, err
	}
	err := c.update(ctx, func(tx *index.Tx) ([]string, error) {
		var err error
		had, err = tx.Unpin(key)
		return nil, err
	})
	return had, err
}

// KconfigHash returns the current kconfig hash stored in the index ("" when
// none is set or there is no index).
func (c *Cache) KconfigHash(ctx context.Context) (string, error) {
	var h string
	_, err := c.view(ctx, func(tx *index.Tx) error {
		h = tx.KconfigHash()
		return nil
	})
	return h, err
}

// SetKconfigHash stores the current kconfig hash (8 lowercase hex, the
// CRC-32 of the kconfig fragment) that list compares entries with; "" clears it.
func (c *Cache) SetKconfigHash(ctx context.Context, h string) error {
	if h != "" && !validHash8(h) {
		return invalidf("kconfig hash %q is not 8 lowercase hex digits (a CRC-32)", h)
	}
	return c.update(ctx, func(tx *index.Tx) ([]string, error) { return nil, tx.SetKconfigHash(h) })
}

// HeldLock is a lock file that someone holds right now.
type HeldLock struct {
	Key      string        `json:"key"`
	Lockfile string        `json:"lockfile"`
	Holders  []lock.Holder `json:"holders"`
}

// HeldLocks lists entry locks currently held and the index file's holders.
// It reads /proc/locks once.
func (c *Cache) HeldLocks(ctx context.Context) (entries []HeldLock, indexHolders []lock.Holder, err error) {
	all, err := lock.ReadProcLocks()
	if err != nil {
		return nil, nil, err
	}
	holdersOf := func(path string) []lock.Holder {
		id, err := lock.LockID(path)
		if err != nil {
			return nil
		}
		return all[id]
	}
	indexHolders = holdersOf(c.IndexPath())
	dir := filepath.Join(c.root, ".locks")
	ents, err := c.fs.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, indexHolders, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", dir, err)
	}
	for _, e := range ents {
		key, ok := strings.CutSuffix(e.Name(), ".lock")
		if !ok || !e.Type().IsRegular() {
			continue
		}
		path := filepath.Join(dir, e.Name())
		if hs := holdersOf(path); len(hs) > 0 {
			entries = append(entries, HeldLock{Key: key, Lockfile: path, Holders: hs})
		}
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Key < entries[j].Key })
	return entries, indexHolders, nil
}
