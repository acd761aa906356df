// Package lock takes advisory flock(2) locks on files and reports who holds them.
//
// A lock is taken without blocking in the kernel (LOCK_NB) and a timed wait is a
// poll every PollInterval until a deadline, so a waiter can always give up with
// an error that names the current holders instead of hanging. Holders are read
// from /proc/locks (see Holders). The package knows nothing about cache keys:
// callers pass a short description ("cache entry \"k\"") that errors repeat.
//
// The project's design named github.com/gofrs/flock for this job. The package now calls
// flock(2) itself on a file it opens, because kcache run must hand the lock's
// open file description to its command (File, Detach) so the lock outlives a
// killed kcache, and shared locks must open the file read-only so a user who
// can only read a cache can take them; gofrs/flock exposes neither.
package lock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Mode is the kind of flock(2) lock.
type Mode int

const (
	// Shared is LOCK_SH: any number of shared holders at once.
	Shared Mode = iota
	// Exclusive is LOCK_EX: one holder and no shared holders.
	Exclusive
)

// String returns the flock(2) constant name, which is what error messages show.
func (m Mode) String() string {
	if m == Exclusive {
		return "LOCK_EX"
	}
	return "LOCK_SH"
}

// PollInterval is how often a timed acquisition retries.
const PollInterval = 100 * time.Millisecond

// ErrContended is matched (errors.Is) by every error that means "someone else
// holds the lock": a timed-out wait or a failed single attempt.
var ErrContended = errors.New("lock is held by another process")

// ContendedError reports a lock that could not be taken because others hold it.
type ContendedError struct {
	Path    string        // the lock file
	What    string        // the caller's description, e.g. `cache entry "k"`
	Mode    Mode          // the mode that was asked for
	Waited  time.Duration // 0 for a single attempt
	Holders []Holder      // read after our own descriptor was closed
}

func (e *ContendedError) Error() string {
	if e.Waited > 0 {
		return fmt.Sprintf("flock %s on %s timed out after %s; lockfile %s; holders:\n%s\nwait for them to finish (or wait longer), or stop them if they hang",
			e.Mode, e.What, e.Waited, e.Path, FormatHolders(e.Holders))
	}
	return fmt.Sprintf("%s is locked by active users (%s wanted); lockfile %s; holders:\n%s\nwait for them to finish or stop them",
		e.What, e.Mode, e.Path, FormatHolders(e.Holders))
}

// Is makes errors.Is(err, ErrContended) true.
func (e *ContendedError) Is(target error) bool { return target == ErrContended }

// Lock is a held lock. Release it exactly once; the kernel also drops it when
// the process exits, which is what makes crashed holders harmless.
//
// A flock(2) lock belongs to the open file description, not to the process:
// every descriptor that shares it (a dup, or a copy a child inherited) holds
// the same lock, and the kernel drops it only when the last of them is
// closed. File exposes the descriptor so that a child can inherit it.
type Lock struct {
	f    *os.File
	path string
	mode Mode
}

// Path returns the lock file's path.
func (l *Lock) Path() string { return l.path }

// Mode returns the mode the lock is held in.
func (l *Lock) Mode() Mode { return l.mode }

// File returns the open lock file the lock belongs to. It is exposed so
// that a command the caller starts can inherit it (exec.Cmd.ExtraFiles,
// which also clears close-on-exec in the child): the command then holds the
// same lock, which lasts until every process with the descriptor has closed
// it, even if this process is killed without a chance to clean up. Do not
// close it; end the lock with Release or Detach.
func (l *Lock) File() *os.File { return l.f }

// Release drops the lock and closes the descriptor. The unlock (LOCK_UN)
// also ends the lock for every process that inherited the descriptor; use
// Detach to leave it to them.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := unix.Flock(int(l.f.Fd()), unix.LOCK_UN)
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	l.f = nil
	if err != nil {
		return fmt.Errorf("release %s: %w", l.path, err)
	}
	return nil
}

// Detach closes this process's descriptor without unlocking, so that the
// lock lives on exactly as long as a process that inherited the descriptor
// (see File) keeps it open; with no such process it ends here, as with
// Release.
func (l *Lock) Detach() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	if err != nil {
		return fmt.Errorf("close %s: %w", l.path, err)
	}
	return nil
}

// stat returns the open descriptor's file info (fstat).
func (l *Lock) stat() (os.FileInfo, error) { return l.f.Stat() }

// Opener opens a lock file with os.OpenFile's flag and perm, resolving path
// however the caller requires (a cache resolves it below its root without
// following symlinks). When flag has O_CREATE it also creates the
// directories the file needs; without it, it creates nothing.
type Opener func(path string, flag int, perm os.FileMode) (*os.File, error)

// openPlain is the Opener of Acquire: it refuses a symlink at the lock file
// itself (O_NOFOLLOW: a lock file planted as a symlink would make us create
// or lock a file elsewhere, outside the cache root).
func openPlain(path string, flag int, perm os.FileMode) (*os.File, error) {
	if flag&os.O_CREATE != 0 {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, fmt.Errorf("create lock directory: %w", err)
		}
	}
	return os.OpenFile(path, flag|syscall.O_NOFOLLOW, perm)
}

// Acquire takes the lock on path in mode, polling until timeout has passed
// (timeout 0 means a single attempt) or ctx is done. It creates the parent
// directory and the lock file if missing, and refuses filesystems where flock
// is unreliable (see CheckLocalFS). A shared lock opens the file read-only
// (flock needs no write access), so that a user who may only read a cache
// can still take it on another user's lock file.
func Acquire(ctx context.Context, path string, mode Mode, timeout time.Duration, what string) (*Lock, error) {
	return AcquireWith(ctx, openPlain, true, path, mode, timeout, what)
}

// AcquireExisting is Acquire for callers that must not write: it creates
// neither the directory nor the lock file. A missing lock file is an error
// that matches os.ErrNotExist.
func AcquireExisting(ctx context.Context, path string, mode Mode, timeout time.Duration, what string) (*Lock, error) {
	return AcquireWith(ctx, openPlain, false, path, mode, timeout, what)
}

// AcquireWith is Acquire (create true) or AcquireExisting (create false)
// with the lock file opened by open.
func AcquireWith(ctx context.Context, open Opener, create bool, path string, mode Mode, timeout time.Duration, what string) (*Lock, error) {
	if err := CheckLocalFS(path); err != nil {
		return nil, err
	}
	// os.OpenFile adds O_CLOEXEC, so no command we start inherits a lock by
	// accident (kcache run hands its lock on deliberately, see File).
	flag, how := os.O_RDONLY, unix.LOCK_SH
	if mode == Exclusive {
		flag, how = os.O_RDWR, unix.LOCK_EX
	}
	if create {
		flag |= os.O_CREATE
	}
	f, err := open(path, flag, 0o666)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("lockfile %s (for %s) is a symlink; refusing to follow it: remove it (kcache creates lock files itself)", path, what)
		}
		return nil, fmt.Errorf("open lockfile %s for %s: %w", path, what, err)
	}
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			return &Lock{f: f, path: path, mode: mode}, nil
		}
		if err == unix.EINTR {
			continue
		}
		if err != unix.EWOULDBLOCK {
			_ = f.Close()
			return nil, fmt.Errorf("flock %s %s for %s: %w", mode, path, what, err)
		}
		now := time.Now()
		if !now.Before(deadline) {
			break
		}
		wait := min(PollInterval, deadline.Sub(now))
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, fmt.Errorf("waiting for %s on %s: %w", mode, what, ctx.Err())
		case <-time.After(wait):
		}
	}
	// Close first so that we never list ourselves among the holders.
	_ = f.Close()
	holders, _ := Holders(path)
	var waited time.Duration
	if timeout > 0 {
		waited = time.Since(start).Round(time.Millisecond)
	}
	return nil, &ContendedError{Path: path, What: what, Mode: mode, Waited: waited, Holders: holders}
}

// AcquireFresh is Acquire for lock files that others may unlink (staging-dir
// locks): after locking it checks that path still names the locked inode and
// retries if it was replaced in between.
func AcquireFresh(path string, what string) (*Lock, error) {
	return AcquireFreshWith(openPlain, os.Lstat, path, what)
}

// AcquireFreshWith is AcquireFresh with the lock file opened by open and
// its name checked with lstat.
func AcquireFreshWith(open Opener, lstat func(string) (os.FileInfo, error), path string, what string) (*Lock, error) {
	for range 10 {
		l, err := AcquireWith(context.Background(), open, true, path, Exclusive, 0, what)
		if err != nil {
			return nil, err
		}
		held, err1 := l.stat()
		named, err2 := lstat(path)
		if err1 == nil && err2 == nil && sameFile(held, named) {
			return l, nil
		}
		_ = l.Release()
	}
	return nil, fmt.Errorf("lock %s for %s: the file kept being replaced", path, what)
}

// sameFile is os.SameFile for infos that may not come from package os
// (both carry a *syscall.Stat_t).
func sameFile(a, b os.FileInfo) bool {
	x, ok1 := a.Sys().(*syscall.Stat_t)
	y, ok2 := b.Sys().(*syscall.Stat_t)
	return ok1 && ok2 && x.Dev == y.Dev && x.Ino == y.Ino
}
