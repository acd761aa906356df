package kcache

import (
	"bytes"
	"context"
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
// It decodes every record and sorts in memory rather than walking by_time.
func (c *Cache) List(ctx context.Context, opt ListOptions) (*Listing, error) {
	if err := opt.check(); err != nil {
		return nil, err
	}
	l := &Listing{Root: c.root, CurrentKconfigHash: opt.KconfigHash}
	_, err := c.view(ctx, func(tx *index.Tx) error {
		if l.CurrentKconfigHash == "" {
			l.CurrentKconfigHash = tx.KconfigHash()
		}
		ls, err := c.newLister(tx)
		if err != nil {
			return err
		}
		defer ls.close()
		l.Entries, err = ls.all(tx)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", c.root, err)
	}
	sortListed(l.Entries)
	return l, nil
}

func (o ListOptions) check() error {
	if o.KconfigHash != "" && !validHash8(o.KconfigHash) {
		return invalidf("kconfig hash %q is not 8 lowercase hex digits (a CRC-32)", o.KconfigHash)
	}
	return nil
}

// lister makes the rows of List and ListEach: it decides whether a record
// is usable, with its pin, and checks its blobs (see entryFromStat).
type lister struct {
	c    *Cache
	pins map[string]index.Pin
	st   *blobStatter
}

// newLister reads the pins of tx. Blobs are checked inside the transaction:
// writers delete the blobs they release before closing the index, so a
// concurrent replacement cannot make a good entry look corrupt.
func (c *Cache) newLister(tx *index.Tx) (*lister, error) {
	pins, err := tx.Pins()
	if err != nil {
		return nil, err
	}
	return &lister{c: c, pins: pins, st: c.newBlobStatter()}, nil
}

func (ls *lister) close() { ls.st.close() }

// listed is the row of one record as tx.ForEach passes it: a record that
// does not decode, or whose blobs are missing or damaged, is a corrupt row;
// any other error is returned.
func (ls *lister) listed(key string, rec *index.Record, err error) (Listed, error) {
	var derr *index.DecodeError
	if errors.As(err, &derr) {
		return Listed{Key: key, Corrupt: corruptFromDecode(key, derr)}, nil
	}
	if err != nil {
		return Listed{}, err
	}
	var pin *index.Pin
	if p, ok := ls.pins[key]; ok {
		pin = &p
	}
	e, err := ls.c.entryFromStat(rec, pin, ls.st.stat)
	var cerr *CorruptError
	if errors.As(err, &cerr) {
		return Listed{Key: key, Corrupt: cerr}, nil
	}
	return Listed{Key: key, Entry: e}, err
}

// all returns the rows of every record, in key order.
func (ls *lister) all(tx *index.Tx) ([]Listed, error) {
	var all []Listed
	err := tx.ForEach(func(key string, rec *index.Record, err error) error {
		l, err := ls.listed(key, rec, err)
		all = append(all, l)
		return err
	})
	return all, err
}

// ListEach is List without holding the listing in memory: it calls fn for
// each usable entry, newest built_at first (ties by key), then for each
// corrupt one by key — List's order — and returns the current kconfig hash
// (List's CurrentKconfigHash). begin, when not nil, is called once with that
// hash before any fn (also for an empty cache). Only the corrupt entries are
// kept until the end. An error from begin or fn stops the listing and is
// returned as it is.
//
// It walks the by_time ordering newest first and looks each record up by
// key in one walk of the entries bucket (two slices of the index file's
// mapping per entry, 48 bytes); decoded entries are held only a few batches
// at a time, so the Go heap grows by those 48 bytes per entry and no more.
// Batches are decoded and their blobs statted on GOMAXPROCS goroutines;
// fn is called on the caller's goroutine, in order. fn runs inside the index's
// read transaction: it must not write to the cache, and while it blocks (a
// full pipe) the transaction stays open, which makes a writer that has to
// grow the index file wait. An index whose by_time ordering has another
// number of keys than it has entries (damage, which `kcache doctor`
// repairs) is listed as List does, buffered.
func (c *Cache) ListEach(ctx context.Context, opt ListOptions, begin func(current string) error, fn func(Listed) error) (current string, err error) {
	if err := opt.check(); err != nil {
		return "", err
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
	_, err = c.view(ctx, func(tx *index.Tx) error {
		if current == "" {
			current = tx.KconfigHash()
		}
		if err := start(); err != nil {
			return err
		}
		ls, err := c.newLister(tx)
		if err != nil {
			return err
		}
		defer ls.close()
		n := tx.Count()
		if tx.CountByTime() != n {
			all, err := ls.all(tx)
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
		// Records are read in by_time order in batches; each batch is
		// decoded and its blobs are statted on another goroutine while
		// earlier batches are handed to fn in order.
		emit := func(b *listBatchBuf) error {
			if b.err != nil {
				return b.err
			}
			for i := range b.items {
				it := &b.items[i]
				switch {
				case it.skip:
					// A stale by_time key (no record, or one built at
					// another time): the pass below finds the entry.
				case it.err != nil:
					return it.err
				case it.l.Corrupt != nil:
					if !seenCorrupt[it.l.Key] {
						seenCorrupt[it.l.Key] = true
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
			return nil
		}
		// The records by key, looked up by the workers (a binary search
		// costs a fraction of a B+tree Get): two slices per entry.
		ents := tx.RawEntries(n)
		p := newListPipeline(n, ents, ls.listed, emit)
		defer p.stop()
		var group [][]byte // keys sharing groupAt, newest group first
		var groupAt []byte
		b := p.batch()
		flush := func() error {
			// by_time holds ties in key order; the walk is backwards.
			for i := len(group) - 1; i >= 0; i-- {
				b.items = append(b.items, listItem{key: group[i], at: groupAt})
			}
			group = group[:0]
			if len(b.items) >= p.size {
				err := p.submit(b)
				b = p.batch()
				return err
			}
			return nil
		}
		err = tx.NewestRaw(func(key, at []byte) error {
			if !bytes.Equal(at, groupAt) && len(group) > 0 {
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
			err = p.submit(b)
		}
		if err == nil {
			err = p.drain()
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
				l, err := ls.listed(key, rec, err)
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
const listBatch = 256

type listItem struct {
	key, at []byte       // from by_time (the index file's mapping)
	raw     []byte       // the encoded record; nil when by_time's key is stale (set by process)
	rec     index.Record // decoded from raw (listed copies it)
	skip    bool         // stale by_time key
	l       Listed
	err     error
}

type listBatchBuf struct {
	items []listItem
	done  chan struct{} // closed when the items are processed
	err   error         // a fault reading the mapping
}

// listPipeline decodes and checks ListEach's batches on GOMAXPROCS worker
// goroutines while the caller reads further batches and emits finished ones
// in order. The records are the index file's mapping: every worker turns a
// memory fault into index.ErrCorrupt, as index.DB.View does for its own.
// Small listings are processed inline.
type listPipeline struct {
	ents    []index.RawEntry // every record, in key order
	listed  func(string, *index.Record, error) (Listed, error)
	emit    func(*listBatchBuf) error
	size    int // items per batch
	work    chan *listBatchBuf
	pending []*listBatchBuf // submitted, oldest first
	free    []*listBatchBuf
	wg      sync.WaitGroup
	workers int
}

func newListPipeline(n int, ents []index.RawEntry, listed func(string, *index.Record, error) (Listed, error), emit func(*listBatchBuf) error) *listPipeline {
	p := &listPipeline{ents: ents, listed: listed, emit: emit, size: listBatch}
	if n < 2*listBatch {
		// Too few for whole batches per worker: smaller ones, or inline.
		p.size = max(64, n/4)
	}
	if n <= 64 || runtime.GOMAXPROCS(0) < 2 {
		return p
	}
	p.workers = runtime.GOMAXPROCS(0)
	work := make(chan *listBatchBuf, 2*p.workers)
	p.work = work
	for range p.workers {
		p.wg.Add(1)
		// The worker ranges over its own copy of the channel: stop sets
		// p.work to nil after closing it, and a worker first scheduled
		// after that would otherwise range over nil and block forever
		// (stop's Wait then hung the listing).
		go func() {
			defer p.wg.Done()
			defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
			for b := range work {
				b.err = p.processSafe(b.items)
				close(b.done)
			}
		}()
	}
	return p
}

// batch returns an empty batch buffer.
func (p *listPipeline) batch() *listBatchBuf {
	if k := len(p.free); k > 0 {
		b := p.free[k-1]
		p.free = p.free[:k-1]
		return b
	}
	return &listBatchBuf{items: make([]listItem, 0, p.size+32)}
}

func (p *listPipeline) recycle(b *listBatchBuf) {
	clear(b.items)
	b.items, b.done, b.err = b.items[:0], nil, nil
	p.free = append(p.free, b)
}

// submit queues b for processing and emits the batches that are done, in
// order, keeping at most two batches per worker in flight.
func (p *listPipeline) submit(b *listBatchBuf) error {
	if len(b.items) == 0 {
		p.recycle(b)
		return nil
	}
	if p.workers == 0 {
		p.process(b.items)
		err := p.emit(b)
		p.recycle(b)
		return err
	}
	b.done = make(chan struct{})
	p.pending = append(p.pending, b)
	p.work <- b
	for len(p.pending) > 2*p.workers {
		if err := p.emitOldest(); err != nil {
			return err
		}
	}
	return nil
}

func (p *listPipeline) emitOldest() error {
	b := p.pending[0]
	<-b.done
	p.pending = p.pending[1:]
	err := p.emit(b)
	p.recycle(b)
	return err
}

// drain emits every pending batch.
func (p *listPipeline) drain() error {
	for len(p.pending) > 0 {
		if err := p.emitOldest(); err != nil {
			return err
		}
	}
	return nil
}

// stop ends the workers after the batches they were given.
func (p *listPipeline) stop() {
	if p.work != nil {
		close(p.work)
		p.work = nil
		p.wg.Wait()
	}
}

func (p *listPipeline) processSafe(items []listItem) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: reading the index failed: %v", index.ErrCorrupt, r)
		}
	}()
	p.process(items)
	return nil
}

// process decodes the items' records and checks their blobs.
func (p *listPipeline) process(items []listItem) {
	for i := range items {
		it := &items[i]
		if j, ok := slices.BinarySearchFunc(p.ents, it.key, func(e index.RawEntry, k []byte) int {
			return bytes.Compare(e.Key, k)
		}); ok {
			it.raw = p.ents[j].Value
		}
		if it.raw == nil {
			it.skip = true
			continue
		}
		rec := &it.rec
		err := index.DecodeRecordInto(it.key, it.raw, rec)
		if err == nil && rec.BuiltAt != string(it.at) {
			it.skip = true
			continue
		}
		key := rec.Key // the same string when the record names its own key
		if err != nil || key != string(it.key) {
			key = string(it.key)
		}
		it.l, it.err = p.listed(key, rec, err)
	}
}

func sortListed(ls []Listed) {
	sort.SliceStable(ls, func(i, j int) bool {
		a, b := ls[i], ls[j]
		return listedBefore(a.Entry != nil, b.Entry != nil, builtAt(a.Entry), builtAt(b.Entry), a.Key, b.Key)
	})
}

func builtAt(e *Entry) string {
	if e == nil {
		return ""
	}
	return e.BuiltAt
}

// listedBefore is the order of every listing, local or remote: usable
// entries first, newest built_at first, ties and unusable entries by key.
func listedBefore(aUsable, bUsable bool, aBuilt, bBuilt, aKey, bKey string) bool {
	if aUsable != bUsable {
		return aUsable
	}
	if aUsable && aBuilt != bBuilt {
		return aBuilt > bBuilt
	}
	return aKey < bKey
}

// Newest returns up to n keys, newest built_at first, without decoding any
// record (the by_time ordering).
func (c *Cache) Newest(ctx context.Context, n int) ([]string, error) {
	var keys []string
	_, err := c.view(ctx, func(tx *index.Tx) error {
		return tx.Newest(n, func(key, _ string) error {
			keys = append(keys, key)
			return nil
		})
	})
	return keys, err
}

// Keys returns every key in the index, for completion. It reads keys only.
func (c *Cache) Keys(ctx context.Context) ([]string, error) {
	var keys []string
	_, err := c.view(ctx, func(tx *index.Tx) error {
		return tx.Newest(0, func(key, _ string) error {
			keys = append(keys, key)
			return nil
		})
	})
	sort.Strings(keys)
	return keys, err
}
