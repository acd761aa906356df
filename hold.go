package kcache

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/kcache/kcache/lock"
)

// HoldOptions tune Hold.
type HoldOptions struct {
	// Timeout bounds the wait for the key's lock while a writer holds it
	// exclusively (a store replacing the entry). Zero means
	// DefaultSharedTimeout (10 s); ctx may end the wait sooner.
	Timeout time.Duration
}

// Held is an entry held for use: while it is held, Remove, Clean and GC
// skip the entry and a replacing Store waits, so Entry.ImagePath and
// Entry.VmlinuxPath stay valid until Release.
type Held struct {
	// Entry is the entry as read under the lock.
	Entry *Entry
	lock  *lock.Lock
}

// Hold is the harness primitive: it looks key up, takes the key's lock
// shared (waiting up to opt.Timeout and ctx for a writer), reads the entry
// again under the lock, and counts the use (a hit, and last_used at most
// once an hour) — in that order, so that a miss (an error matching
// ErrNotFound) creates nothing on disk: no lock file, no directory, not
// even the root. Release the returned Held when the kernel is no longer in
// use, e.g. when the VM has exited.
func (c *Cache) Hold(ctx context.Context, key string, opt HoldOptions) (*Held, error) {
	if _, err := c.Describe(ctx, key); err != nil {
		c.countLookup(err)
		return nil, err
	}
	timeout := opt.Timeout
	if timeout <= 0 {
		timeout = DefaultSharedTimeout
	}
	l, err := c.acquire(ctx, key, lock.Shared, timeout)
	if err != nil {
		return nil, fmt.Errorf("hold %q: %w", key, err)
	}
	// The entry may have been replaced or removed before the lock was
	// taken: what the caller gets is what is there now, and stays so.
	e, err := c.Lookup(ctx, key)
	if err != nil {
		_ = l.Release()
		return nil, err
	}
	return &Held{Entry: e, lock: l}, nil
}

// Release ends the hold. It is idempotent: later calls return nil.
func (h *Held) Release() error {
	if h == nil || h.lock == nil {
		return nil
	}
	err := h.lock.Release()
	h.lock = nil
	return err
}

// File returns the open lock file the hold belongs to, for handing the hold
// on to a child process such as the VM (exec.Cmd.ExtraFiles): a flock lock
// belongs to the open file, so the child then holds the entry too, for as
// long as it keeps the descriptor, even if this process dies. End this
// process's part with Detach (the child keeps the hold) or Release (which
// ends it for the child too). Nil once released.
func (h *Held) File() *os.File {
	if h == nil || h.lock == nil {
		return nil
	}
	return h.lock.File()
}

// Detach closes this process's descriptor without unlocking, leaving the
// hold to a child that inherited File; without such a child it ends the
// hold like Release. Idempotent.
func (h *Held) Detach() error {
	if h == nil || h.lock == nil {
		return nil
	}
	err := h.lock.Detach()
	h.lock = nil
	return err
}
