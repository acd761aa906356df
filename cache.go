package kcache

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/kcache/kcache/blobstore"
	"github.com/kcache/kcache/index"
	"github.com/kcache/kcache/internal/beneath"
	"github.com/kcache/kcache/internal/failpoint"
	"github.com/kcache/kcache/lock"
	"github.com/kcache/kcache/migrate"
)

// Default waits, as in ktstr: a reader still blocked after 10 s has met a
// stuck writer; a writer must outwait test runs that hold the entry.
const (
	DefaultSharedTimeout    = 10 * time.Second
	DefaultExclusiveTimeout = 60 * time.Second
	DefaultIndexTimeout     = 10 * time.Second
)

// lastUsedInterval is how stale last_used may get before a lookup rewrites
// it; coarse so that lookups stay read-only almost always.
const lastUsedInterval = time.Hour

// Options tune a Cache. The zero value gives the defaults.
type Options struct {
	// IndexTimeout bounds the wait for the index file's lock.
	IndexTimeout time.Duration
	// StoreLockTimeout bounds Store's wait for the entry's exclusive lock.
	StoreLockTimeout time.Duration
	// Logger receives warnings (an unstripped vmlinux in use, a failed
	// cleanup, a remote that failed during a lookup) at level Warn, and
	// notices (an index upgraded to a newer schema) at level Info, one
	// message per event. Nil discards them: the library writes nothing to
	// the process's stderr. Whatever a warning says about an entry is also
	// a field of the Entry.
	Logger *slog.Logger
	// ReadOnly makes the cache never write: lookups do not record
	// last_used, and calls that must write fail with ErrReadOnly.
	ReadOnly bool
	// Now is the one clock of every time the cache records or compares:
	// stored_at, last_used, pinned_at, built_at's default, corrupt marks,
	// gc's age and recency policies and last-gc time, the sweep's grace
	// period. Nil means time.Now. Waits and timeouts (lock and index
	// waits, retries) always run on the real clock.
	Now func() time.Time
}

// Cache is a cache root. Creating one touches nothing on disk.
type Cache struct {
	root  string
	opt   Options
	blobs *blobstore.Store
	// markerOK is set once the root marker is known to exist (ensureMarker),
	// so that only the first write open of a process looks for it.
	markerOK atomic.Bool
	// fs reaches every path below root without following a symlink: kcache
	// never creates one there, so one is someone else's and a write,
	// rename or delete through it would land outside the cache.
	fs *beneath.Root
}

// Open returns the cache at root. It fails at once on an empty root or a
// root that exists but is not a directory; a root that does not exist yet
// is fine, and nothing is created until the first write. The root is made
// absolute here, once, so every path the cache returns is absolute and
// stays valid when the caller changes directory (or hands it to qemu).
func Open(root string, opt *Options) (*Cache, error) {
	if root == "" {
		return nil, errors.New("open cache: the root directory is empty")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("open cache %q: %w", root, err)
	}
	if fi, err := os.Stat(abs); err == nil && !fi.IsDir() {
		return nil, fmt.Errorf("open cache %s: not a directory", abs)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("open cache %s: %w", abs, err)
	}
	fsys := beneath.New(abs)
	c := &Cache{root: abs, fs: fsys, blobs: blobstore.NewBeneath(fsys, filepath.Join(abs, "blobs", "sha256"))}
	if opt != nil {
		c.opt = *opt
	}
	if c.opt.IndexTimeout <= 0 {
		c.opt.IndexTimeout = DefaultIndexTimeout
	}
	if c.opt.StoreLockTimeout <= 0 {
		c.opt.StoreLockTimeout = DefaultExclusiveTimeout
	}
	if c.opt.Logger == nil {
		c.opt.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// OpenDefault opens the cache at ResolveRoot().
func OpenDefault(opt *Options) (*Cache, error) {
	root, err := ResolveRoot()
	if err != nil {
		return nil, err
	}
	return Open(root, opt)
}

// Root returns the cache root directory.
func (c *Cache) Root() string { return c.root }

// IndexPath returns the index file's path.
func (c *Cache) IndexPath() string { return filepath.Join(c.root, "index.db") }

// LockPath returns the lock file of an entry key (the key is not validated).
func (c *Cache) LockPath(key string) string {
	return filepath.Join(c.root, ".locks", key+".lock")
}

// BlobPath returns where the blob with the given sha256 hex digest lives.
func (c *Cache) BlobPath(digest string) string { return c.blobs.Path(digest) }

// now reads Options.Now.
func (c *Cache) now() time.Time {
	if c.opt.Now != nil {
		return c.opt.Now()
	}
	return time.Now()
}

func (c *Cache) warnf(format string, args ...any) {
	c.opt.Logger.Warn(fmt.Sprintf(format, args...))
}

// openIndex opens the index for one operation and explains failures.
func (c *Cache) openIndex(ctx context.Context, readOnly bool) (*index.DB, error) {
	if !readOnly {
		if err := os.MkdirAll(c.root, 0o755); err != nil {
			return nil, fmt.Errorf("create cache root %s: %w", c.root, err)
		}
	}
	db, err := c.openIndexWith(ctx, index.Open, index.Options{ReadOnly: readOnly})
	if err == nil && !readOnly {
		c.ensureMarker()
	}
	return db, err
}

// openIndexWith opens the index with open (index.Open or a variant) and
// handles an index written by an older kcache (index.ErrSchemaOld): a cache
// that may write upgrades it first (migrate.Upgrade, see upgradeIndex),
// whatever the operation; a read-only cache (Options.ReadOnly) never
// writes, so it reads the old file as it is when the index package still
// can (index.MinReadSchema) and otherwise says how to upgrade.
func (c *Cache) openIndexWith(ctx context.Context, open func(string, index.Options) (*index.DB, error), opt index.Options) (*index.DB, error) {
	if err := c.checkIndexPath(); err != nil {
		return nil, err
	}
	db, err := c.openPolled(ctx, open, c.IndexPath(), opt)
	if errors.Is(err, index.ErrSchemaOld) {
		if c.opt.ReadOnly {
			if opt.ReadOnly {
				opt.ReadOld = true
				db, err = c.openPolled(ctx, open, c.IndexPath(), opt)
			}
			if errors.Is(err, index.ErrSchemaOld) {
				return nil, fmt.Errorf("%w; it cannot be upgraded: %w", err, ErrReadOnly)
			}
		} else {
			if uerr := c.upgradeIndex(ctx, false); uerr != nil {
				return nil, uerr
			}
			db, err = c.openPolled(ctx, open, c.IndexPath(), opt)
		}
	}
	if err != nil {
		return nil, c.explainIndexErr(err)
	}
	return db, nil
}

// indexPollSlice is how long one open waits for the index file's lock
// before the caller's context is checked again: bbolt's wait cannot be
// cancelled, so a long wait is a series of short ones.
const indexPollSlice = 100 * time.Millisecond

// openPolled calls open on path (the index or a file replacing it) until
// the file's lock is had, Options.IndexTimeout has passed (index.ErrBusy) or
// ctx is done (its error).
func (c *Cache) openPolled(ctx context.Context, open func(string, index.Options) (*index.DB, error), path string, opt index.Options) (*index.DB, error) {
	deadline := time.Now().Add(c.opt.IndexTimeout)
	for {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("wait for index %s: %w", path, err)
		}
		// index.Options.Timeout 0 would mean its default: never pass it.
		opt.Timeout = max(min(indexPollSlice, time.Until(deadline)), time.Millisecond)
		db, err := open(path, opt)
		if !errors.Is(err, index.ErrBusy) {
			return db, err
		}
		if cerr := ctx.Err(); cerr != nil {
			return nil, fmt.Errorf("wait for index %s: %w", path, cerr)
		}
		if !time.Now().Before(deadline) {
			return nil, err
		}
	}
}

// upgradeIndex upgrades an index written by an older kcache to this one's
// schema (package migrate: one transaction per step, each after a backup
// copy index.db.v<N>.bak). It holds the cache-wide lock of doctor's rebuild
// and compaction (.locks/.index.lock; held tells it the caller has it), so
// that no file replacement races the upgrade; migrate re-reads the version
// under bbolt's exclusive lock, so a second process that waited finds the
// file current and does nothing.
func (c *Cache) upgradeIndex(ctx context.Context, held bool) error {
	if !held {
		gl, err := lock.AcquireWith(ctx, c.openLockFile, true, c.indexLockPath(), lock.Exclusive, c.opt.IndexTimeout, "index schema upgrade")
		if err != nil {
			return fmt.Errorf("upgrade index %s: %w", c.IndexPath(), err)
		}
		defer gl.Release()
	}
	res, err := migrate.Upgrade(c.IndexPath(), c.opt.IndexTimeout)
	if err != nil {
		return fmt.Errorf("upgrade index %s: %w", c.IndexPath(), c.explainIndexErr(err))
	}
	if res.From != res.To {
		c.opt.Logger.Info(fmt.Sprintf("upgraded the index %s from schema %d to %d; the old file is kept as %s",
			c.IndexPath(), res.From, res.To, strings.Join(res.Backups, ", ")))
	}
	return nil
}

func (c *Cache) explainIndexErr(err error) error {
	switch {
	case errors.Is(err, index.ErrBusy):
		holders, _ := lock.Holders(c.IndexPath())
		return &IndexBusyError{Path: c.IndexPath(), Waited: c.opt.IndexTimeout, Holders: holders}
	case errors.Is(err, index.ErrCorrupt):
		return &IndexCorruptError{Path: c.IndexPath(), Err: err}
	}
	return err
}

// view runs fn in a read-only transaction. ok is false when there is no index
// yet (an empty cache); fn is not called then.
func (c *Cache) view(ctx context.Context, fn func(*index.Tx) error) (ok bool, err error) {
	db, err := c.openIndex(ctx, true)
	if errors.Is(err, index.ErrNoIndex) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer db.Close()
	if err := db.View(fn); err != nil {
		return true, c.explainIndexErr(err)
	}
	return true, nil
}

// update runs fn in a read-write transaction. Blobs that fn reports released
// (their reference count reached zero) are unlinked after the commit, with
// the index closed, and then forgotten (see release).
func (c *Cache) update(ctx context.Context, fn func(*index.Tx) (released []string, err error)) error {
	_, err := c.updateTimed(ctx, fn)
	return err
}

// updateTimed is update that also reports how long the index file was held
// open for writing (open, transaction, commit, close; not the unlinks).
func (c *Cache) updateTimed(ctx context.Context, fn func(*index.Tx) (released []string, err error)) (time.Duration, error) {
	if c.opt.ReadOnly {
		return 0, ErrReadOnly
	}
	start := time.Now()
	db, err := c.openIndex(ctx, false)
	if err != nil {
		return 0, err
	}
	var released []string
	err = db.Update(func(tx *index.Tx) error {
		var err error
		released, err = fn(tx)
		return err
	})
	if cerr := db.Close(); err == nil && cerr != nil {
		c.warnf("%v", cerr)
	}
	held := time.Since(start)
	if err != nil {
		return held, c.explainIndexErr(err)
	}
	c.release(ctx, released)
	return held, nil
}

// release unlinks the files of released blobs, then forgets their records in
// a second short transaction. The index lock is not held while unlinking, so
// a removal of thousands of entries blocks other processes only for its
// bookkeeping; writers meanwhile refuse the dying blobs (index.ErrBlobDying).
// Failures are warnings: the sweep finishes what is left.
func (c *Cache) release(ctx context.Context, released []string) {
	if len(released) == 0 {
		return
	}
	failpoint.Hit(failpoint.UpdateAfterCommit)
	gone := released[:0:0]
	for _, d := range released {
		if err := c.blobs.Remove(d); err != nil {
			c.warnf("%v (the sweep will retry)", err)
			continue
		}
		failpoint.Hit(failpoint.ReleaseAfterFirstUnlink)
		gone = append(gone, d)
	}
	// The removal committed: finish its bookkeeping even if the caller's
	// context ends now, rather than leave work for the sweep.
	db, err := c.openIndex(context.WithoutCancel(ctx), false)
	if err != nil {
		c.warnf("forget released blobs: %v (the sweep will retry)", err)
		return
	}
	defer db.Close()
	if err := db.Update(func(tx *index.Tx) error { return tx.Forget(gone) }); err != nil {
		c.warnf("forget released blobs: %v (the sweep will retry)", c.explainIndexErr(err))
	}
}

// acquire validates key and takes its entry lock.
//
// A read-only cache (Options.ReadOnly) creates no lock file: it takes the
// lock on the file every stored entry has (Store, Pull and Doctor's restore
// create it, and lock files are never deleted), opened read-only for a
// shared lock, so another user's cache that is merely readable works. A
// missing lock file means someone deleted it; that is an error rather than
// an entry used unprotected from a concurrent writer.
func (c *Cache) acquire(ctx context.Context, key string, mode lock.Mode, timeout time.Duration) (*lock.Lock, error) {
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	path, what := c.LockPath(key), fmt.Sprintf("cache entry %q", key)
	l, err := lock.AcquireWith(ctx, c.openLockFile, !c.opt.ReadOnly, path, mode, timeout, what)
	if c.opt.ReadOnly && errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s cannot be locked against writers: its lockfile %s does not exist, and creating it is refused: %w", what, path, ErrReadOnly)
	}
	return l, err
}

// LockOptions bound the wait for an entry lock.
type LockOptions struct {
	// Timeout bounds the wait; 0 means DefaultSharedTimeout for a shared
	// lock and DefaultExclusiveTimeout for an exclusive one.
	Timeout time.Duration
	// NoWait makes a single attempt, failing at once with ErrInUse when
	// the lock is held (Timeout is ignored).
	NoWait bool
}

// timeout is the wait opt asks for, def when it does not say.
func (opt LockOptions) timeout(def time.Duration) time.Duration {
	switch {
	case opt.NoWait:
		return 0
	case opt.Timeout <= 0:
		return def
	}
	return opt.Timeout
}

// AcquireShared takes key's lock shared, waiting as opt says and until ctx
// is done. Most harnesses want Hold, which also looks the entry up first.
// Store, Remove and GC wait for or skip entries held this way.
func (c *Cache) AcquireShared(ctx context.Context, key string, opt LockOptions) (*lock.Lock, error) {
	return c.acquire(ctx, key, lock.Shared, opt.timeout(DefaultSharedTimeout))
}

// AcquireExclusive takes key's lock exclusively, waiting as opt says and
// until ctx is done.
func (c *Cache) AcquireExclusive(ctx context.Context, key string, opt LockOptions) (*lock.Lock, error) {
	return c.acquire(ctx, key, lock.Exclusive, opt.timeout(DefaultExclusiveTimeout))
}
