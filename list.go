package kcache

import (
	"errors"
	"fmt"
	"sort"

	"github.com/kcache/kcache/index"
)

// Listed is one row of a listing: a usable entry or a corrupt one.
type Listed struct {
	Key     string
	Entry   *Entry        // nil when corrupt
	Corrupt *CorruptError // nil when usable
}

// Listing is the whole cache as List sees it.
type Listing struct {
	Root string
	// CurrentKconfigHash is what entries' kconfig hashes are compared with;
	// "" when none is configured.
	CurrentKconfigHash string
	Entries            []Listed
}

// ListOptions tune List.
type ListOptions struct {
	// KconfigHash overrides the current kconfig hash stored in the index.
	KconfigHash string
}

// List returns every entry: usable ones newest built_at first (ties by key),
// then corrupt ones by key. A missing cache lists as empty.
//
// It decodes every record and sorts in memory rather than walking by_time:
// measured faster for a full listing (reference/bbolt-and-remote.md §1.2).
func (c *Cache) List(opt ListOptions) (*Listing, error) {
	if opt.KconfigHash != "" && !validHash8(opt.KconfigHash) {
		return nil, invalidf("kconfig hash %q is not 8 lowercase hex digits (a CRC-32)", opt.KconfigHash)
	}
	l := &Listing{Root: c.root, CurrentKconfigHash: opt.KconfigHash}
	_, err := c.view(func(tx *index.Tx) error {
		if l.CurrentKconfigHash == "" {
			l.CurrentKconfigHash = tx.KconfigHash()
		}
		pins, err := tx.Pins()
		if err != nil {
			return err
		}
		// Blobs are checked inside the transaction: writers delete the
		// blobs they release before closing the index, so a concurrent
		// replacement cannot make a good entry look corrupt.
		return tx.ForEach(func(key string, rec *index.Record, err error) error {
			var derr *index.DecodeError
			if errors.As(err, &derr) {
				l.Entries = append(l.Entries, Listed{Key: key, Corrupt: corruptFromDecode(key, derr)})
				return nil
			}
			if err != nil {
				return err
			}
			var pin *index.Pin
			if p, ok := pins[key]; ok {
				pin = &p
			}
			e, err := c.entryFrom(rec, pin)
			var cerr *CorruptError
			if errors.As(err, &cerr) {
				l.Entries = append(l.Entries, Listed{Key: key, Corrupt: cerr})
				return nil
			}
			l.Entries = append(l.Entries, Listed{Key: key, Entry: e})
			return err
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", c.root, err)
	}
	sort.SliceStable(l.Entries, func(i, j int) bool {
		a, b := l.Entries[i], l.Entries[j]
		if (a.Entry == nil) != (b.Entry == nil) {
			return a.Entry != nil
		}
		if a.Entry != nil && a.Entry.BuiltAt != b.Entry.BuiltAt {
			return a.Entry.BuiltAt > b.Entry.BuiltAt
		}
		return a.Key < b.Key
	})
	return l, nil
}

// Newest returns up to n keys, newest built_at first, without decoding any
// record (the by_time ordering).
func (c *Cache) Newest(n int) ([]string, error) {
	var keys []string
	_, err := c.view(func(tx *index.Tx) error {
		return tx.Newest(n, func(key, _ string) error {
			keys = append(keys, key)
			return nil
		})
	})
	return keys, err
}

// Keys returns every key in the index, for completion. It reads keys only.
func (c *Cache) Keys() ([]string, error) {
	var keys []string
	_, err := c.view(func(tx *index.Tx) error {
		return tx.Newest(0, func(key, _ string) error {
			keys = append(keys, key)
			return nil
		})
	})
	sort.Strings(keys)
	return keys, err
}
