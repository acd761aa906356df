package kcache

// The library's sentinels and typed errors, all in one place. They carry
// data (the key, the holders of a lock, the pin reason, the index path and
// what is wrong with it) and never advice about the command line: a caller
// matches them with errors.Is / errors.As and says what to do in its own
// terms (cmd/kcache keeps one table of hints keyed by these types).

import (
	"errors"
	"fmt"
	"time"

	"github.com/kcache/kcache/index"
	"github.com/kcache/kcache/lock"
)

var (
	// ErrNotFound: no entry under the key.
	ErrNotFound = errors.New("not found")
	// ErrInUse: the entry's lock is held by someone else.
	ErrInUse = lock.ErrContended
	// ErrIndexBusy: the index file stayed locked for the whole timeout.
	ErrIndexBusy = index.ErrBusy
	// ErrIndexCorrupt: the index file cannot be read safely.
	ErrIndexCorrupt = index.ErrCorrupt
	// ErrCorruptEntry is matched by every *CorruptError.
	ErrCorruptEntry = errors.New("corrupt entry")
	// ErrReadOnly: the cache was opened with Options.ReadOnly and the call
	// would write.
	ErrReadOnly = errors.New("the cache is opened read-only; this would write")
)

// ErrPinned is matched by errors for pinned entries that a removal skipped.
var ErrPinned = errors.New("entry is pinned")

// PinnedError is a pinned entry that Remove left alone.
type PinnedError struct {
	Key    string
	Reason string
}

func (e *PinnedError) Error() string {
	why := ""
	if e.Reason != "" {
		why = fmt.Sprintf(" (%s)", e.Reason)
	}
	return fmt.Sprintf("cache entry %q is pinned%s", e.Key, why)
}

// Is makes errors.Is(err, ErrPinned) true.
func (e *PinnedError) Is(target error) bool { return target == ErrPinned }

// NotFoundError names the key (or build ID) that has no entry.
type NotFoundError struct {
	Key     string
	BuildID string // set instead of Key by LookupBuildID
}

func (e *NotFoundError) Error() string {
	if e.BuildID != "" {
		return fmt.Sprintf("no cache entry has a vmlinux with build ID %s", e.BuildID)
	}
	return fmt.Sprintf("no cache entry %q", e.Key)
}

// Is makes errors.Is(err, ErrNotFound) true.
func (e *NotFoundError) Is(target error) bool { return target == ErrNotFound }

// CorruptError is an entry that is indexed but cannot be used. Kind is one of
// the documented error_kind words: malformed, schema_drift (the record does
// not decode), image_missing, vmlinux_missing (a blob file is gone),
// image_size_mismatch, vmlinux_size_mismatch (a blob file has the wrong size),
// image_content_mismatch, vmlinux_content_mismatch (a blob file changed since
// it was stored — its ctime moved — and no longer hashes to its digest), or — persisted on the record by Verify or Doctor, and reported first —
// blob_missing, blob_mismatch (index.CorruptMark).
type CorruptError struct {
	Key    string
	Kind   string
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("cache entry %q is corrupt (%s): %s", e.Key, e.Kind, e.Reason)
}

// Is makes errors.Is(err, ErrCorruptEntry) true.
func (e *CorruptError) Is(target error) bool { return target == ErrCorruptEntry }

// IndexBusyError is an index that another process kept locked.
type IndexBusyError struct {
	Path    string
	Waited  time.Duration
	Holders []lock.Holder
}

func (e *IndexBusyError) Error() string {
	return fmt.Sprintf("index %s stayed locked by another process for %s; holders:\n%s\nwait for them to finish, or stop them if they hang",
		e.Path, e.Waited, lock.FormatHolders(e.Holders))
}

// Is makes errors.Is(err, ErrIndexBusy) true.
func (e *IndexBusyError) Is(target error) bool { return target == index.ErrBusy }

// IndexCorruptError is an index file that cannot be read safely. Every
// entry also has a manifest blob, so the index can be rebuilt from the
// blob directory (Doctor with RebuildIndex; the damaged file is kept as
// index.db.bak).
type IndexCorruptError struct {
	Path string // the index file
	Err  error  // what is wrong with it; matches ErrIndexCorrupt
}

func (e *IndexCorruptError) Error() string { return e.Err.Error() }

// Unwrap makes errors.Is(err, ErrIndexCorrupt) true.
func (e *IndexCorruptError) Unwrap() error { return e.Err }
