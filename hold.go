package kcache

import (
	"context"
	"os"
	"sync"
	"time"

	"github.com/kcache/kcache/lock"
)

// HoldOptions tune Hold.
type HoldOptions struct {
	// Timeout bounds the wait for a writer that holds the entry (a Store
	// replacing it); 0 means DefaultSharedTimeout.
	Timeout time.Duration
}

// Held is an entry in use: while it is held, Entry.ImagePath and
// Entry.VmlinuxPath stay valid and unchanged, because Store waits for the
// holder before replacing the entry and Remove, Clean and GC skip it
// (Remove fails with ErrInUse naming the holder). Release ends the hold.
type Held struct {
	// Entry is the entry as read under the lock.
	Entry *Entry

	mu   sync.Mutex
	lock *lock.Lock
}

// Hold looks key up and holds its entry for use, the call a harness makes
// around a VM boot: it looks the key up without locking — a miss returns an
// error matching ErrNotFound and creates nothing on disk (no lock file, no
// directory, not even the root) —, takes the key's shared lock (waiting up
// to opt.Timeout and until ctx is done), reads the entry again under the
// lock (a Store that replaced it meanwhile is seen), and counts the use as
// Lookup does: one hit, and last_used updated at most once an hour. A key
// removed while Hold waited for the lock is a miss, and the lock is dropped.
func (c *Cache) Hold(ctx context.Context, key string, opt HoldOptions) (*Held, error) {
	if _, err := c.Describe(ctx, key); err != nil {
		c.countLookup(err)
		return nil, err
	}
	l, err := c.AcquireShared(ctx, key, LockOptions{Timeout: opt.Timeout})
	if err != nil {
		return nil, err
	}
	e, err := c.Lookup(ctx, key)
	if err != nil {
		_ = l.Release()
		return nil, err
	}
	return &Held{Entry: e, lock: l}, nil
}

// Release ends the hold: it drops the lock for this process and for every
// process that inherited File. It is safe to call more than once, and after
// Detach, from any goroutine.
func (h *Held) Release() error {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	l := h.lock
	h.lock = nil
	return l.Release() // a nil *lock.Lock releases nothing
}

// File returns the open file that carries the lock (nil after Release or
// Detach). A child process that inherits it (exec.Cmd.ExtraFiles) shares the
// hold, which then lasts until every process with the descriptor has closed
// it, even if this one is killed; see Detach. Do not close it yourself.
func (h *Held) File() *os.File {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.lock == nil {
		return nil
	}
	return h.lock.File()
}

// Detach closes this process's descriptor without unlocking, leaving the
// hold to the processes that inherited File (with none, it ends here, as
// with Release). Later Release calls do nothing.
func (h *Held) Detach() error {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	l := h.lock
	h.lock = nil
	return l.Detach()
}
