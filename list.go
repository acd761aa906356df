package kcache

import (
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"sync"

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
		st := c.newBlobStatter()
		defer st.close()
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
			e, err := c.entryFromStat(rec, pin, st.stat)
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
	sortListed(l.Entries)
	return l, nil
}

// ListEach is List without holding the listing in memory: it calls fn for
// each usable entry, newest built_at first (ties by key), then for each
// corrupt one by key — List's order — and returns the current kconfig hash
// (List's CurrentKconfigHash). begin, when not nil, is called once with that
// hash before any fn (also for an empty cache). Only the corrupt entries are
// kept until the end. An error from begin or fn stops the listing and is
// returned as it is.
//
// It walks the by_time ordering newest first and reads each record by key,
// so memory stays flat in the number of entries. fn runs inside the index's
// read transaction: it must not write to the cache, and while it blocks (a
// full pipe) the transaction stays open, which makes a writer that has to
// grow the index file wait. An index whose by_time ordering has another
// number of keys than it has entries (damage, which `kcache doctor`
// repairs) is listed as List does, buffered.
func (c *Cache) ListEach(opt ListOptions, begin func(current string) error, fn func(Listed) error) (current string, err error) {
	if opt.KconfigHash != "" && !validHash8(opt.KconfigHash) {
		return "", invalidf("kconfig hash %q is not 8 lowercase hex digits (a CRC-32)", opt.KconfigHash)
	}
	current = opt.KconfigHash
	var fnErr error
	call := func(l Listed) error {
		if err := fn(l); err != nil {
			fnErr = err
			return err
		}
		return nil
	}
	began := false
	start := func() error {
		began = true
		if begin == nil {
			return nil
		}
		if err := begin(current); err != nil {
			fnErr = err
			return err
		}
		return nil
	}
	_, err = c.view(func(tx *index.Tx) error {
		if current == "" {
			current = tx.KconfigHash()
		}
		if err := start(); err != nil {
			return err
		}
		pins, err := tx.Pins()
		if err != nil {
			return err
		}
		st := c.newBlobStatter()
		defer st.close()
		listed := func(key string, rec *index.Record, err error) (Listed, error) {
			var derr *index.DecodeError
			if errors.As(err, &derr) {
				return Listed{Key: key, Corrupt: corruptFromDecode(key, derr)}, nil
			}
			if err != nil {
				return Listed{}, err
			}
			var pin *index.Pin
			if p, ok := pins[key]; ok {
				pin = &p
			}
			e, err := c.entryFromStat(rec, pin, st.stat)
			var cerr *CorruptError
			if errors.As(err, &cerr) {
				return Listed{Key: key, Corrupt: cerr}, nil
			}
			return Listed{Key: key, Entry: e}, err
		}
		n := tx.Count()
		if tx.CountByTime() != n {
			var all []Listed
			err := tx.ForEach(func(key string, rec *index.Record, err error) error {
				l, err := listed(key, rec, err)
				all = append(all, l)
				return err
			})
			if err != nil {
				return err
			}
			sortListed(all)
			for _, l := range all {
				if err := call(l); err != nil {
					return err
				}
			}
			return nil
		}
		var corrupt []Listed
		seenCorrupt := map[string]bool{}
		done := 0
		var group []string // keys sharing groupAt, newest group first
		var groupAt string
		// Records are read in by_time order in batches; each batch is
		// decoded and its blobs are statted on every CPU, then handed to fn
		// in order.
		var batch []listItem
		process := func() error {
			for i := range batch {
				batch[i].raw = tx.GetRaw(batch[i].key)
			}
			if err := processItems(batch, listed); err != nil {
				return err
			}
			for i := range batch {
				it := &batch[i]
				switch {
				case it.skip:
					// A stale by_time key (no record, or one built at
					// another time): the pass below finds the entry.
				case it.err != nil:
					return it.err
				case it.l.Corrupt != nil:
					if !seenCorrupt[it.key] {
						seenCorrupt[it.key] = true
						corrupt = append(corrupt, it.l)
						done++
					}
				default:
					done++
					if err := call(it.l); err != nil {
						return err
					}
				}
			}
			clear(batch)
			batch = batch[:0]
			return nil
		}
		flush := func() error {
			slices.Reverse(group) // by_time holds ties in key order; the walk is backwards
			for _, key := range group {
				batch = append(batch, listItem{key: key, at: groupAt})
			}
			group = group[:0]
			if len(batch) >= listBatch {
				return process()
			}
			return nil
		}
		err = tx.Newest(0, func(key, at string) error {
			if at != groupAt && len(group) > 0 {
				if err := flush(); err != nil {
					return err
				}
			}
			groupAt = at
			group = append(group, key)
			return nil
		})
		if err == nil {
			err = flush()
		}
		if err == nil {
			err = process()
		}
		if err != nil {
			return err
		}
		if done != n {
			// A damaged by_time ordering (a stale key and a missing one):
			// entries it does not name come last, in key order.
			err := tx.ForEach(func(key string, rec *index.Record, err error) error {
				if err == nil && tx.HasTimeKey(rec.BuiltAt, key) || err != nil && seenCorrupt[key] {
					return nil
				}
				l, err := listed(key, rec, err)
				if err != nil {
					return err
				}
				if l.Corrupt != nil {
					seenCorrupt[key] = true
					corrupt = append(corrupt, l)
					return nil
				}
				return call(l)
			})
			if err != nil {
				return err
			}
		}
		slices.SortFunc(corrupt, func(a, b Listed) int { return strings.Compare(a.Key, b.Key) })
		for _, l := range corrupt {
			if err := call(l); err != nil {
				return err
			}
		}
		return nil
	})
	if fnErr != nil {
		return current, fnErr
	}
	if err != nil {
		return current, fmt.Errorf("list %s: %w", c.root, err)
	}
	if !began { // no index: an empty cache
		if err := start(); err != nil {
			return current, err
		}
	}
	return current, nil
}

// listBatch is how many records ListEach decodes and checks at a time.
const listBatch = 512

type listItem struct {
	key, at string
	raw     []byte // the encoded record; nil when by_time's key is stale
	skip    bool   // stale by_time key
	l       Listed
	err     error
}

// processItems decodes the items' records and checks their blobs with
// listed, on up to GOMAXPROCS goroutines. The records are the index file's
// mapping: every goroutine turns a memory fault into index.ErrCorrupt, as
// index.DB.View does for its own.
func processItems(items []listItem, listed func(string, *index.Record, error) (Listed, error)) error {
	one := func(it *listItem) {
		if it.raw == nil {
			it.skip = true
			return
		}
		rec, err := index.DecodeRecord(it.key, it.raw)
		if err == nil && rec.BuiltAt != it.at {
			it.skip = true
			return
		}
		it.l, it.err = listed(it.key, rec, err)
	}
	w := min(runtime.GOMAXPROCS(0), len(items)/64)
	if w <= 1 {
		for i := range items {
			one(&items[i])
		}
		return nil
	}
	errs := make([]error, w)
	var wg sync.WaitGroup
	for g := 1; g < w; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
			defer func() {
				if r := recover(); r != nil {
					errs[g] = fmt.Errorf("%w: reading the index failed: %v", index.ErrCorrupt, r)
				}
			}()
			for i := g; i < len(items); i += w {
				one(&items[i])
			}
		}()
	}
	for i := 0; i < len(items); i += w {
		one(&items[i])
	}
	wg.Wait()
	return errors.Join(errs...)
}

func sortListed(ls []Listed) {
	sort.SliceStable(ls, func(i, j int) bool {
		a, b := ls[i], ls[j]
		if (a.Entry == nil) != (b.Entry == nil) {
			return a.Entry != nil
		}
		if a.Entry != nil && a.Entry.BuiltAt != b.Entry.BuiltAt {
			return a.Entry.BuiltAt > b.Entry.BuiltAt
		}
		return a.Key < b.Key
	})
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
