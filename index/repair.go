package index

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"syscall"

	"github.com/kcache/kcache/internal/fsync"
	bolt "go.etcd.io/bbolt"
)

// Kinds of CorruptMark, as `kcache list` and `kcache lookup` report them.
const (
	CorruptBlobMissing  = "blob_missing"  // a blob file of the entry is gone
	CorruptBlobMismatch = "blob_mismatch" // a blob file has the wrong size or content
)

// CorruptMark is a verdict that verify or doctor persisted on a record: the
// entry cannot be used until it is stored again (a fresh record has no mark).
type CorruptMark struct {
	Kind   string `msgpack:"kind"`   // CorruptBlobMissing or CorruptBlobMismatch
	Reason string `msgpack:"reason"` // one line naming the blob and what is wrong
	At     string `msgpack:"at"`     // RFC 3339 UTC
}

// MarkCorrupt persists m on key's record, but only while that record still
// references digest: a record replaced since the caller looked at it is left
// alone, and a mark already there is kept (the first finding wins). It
// reports whether the record is marked; a missing or undecodable record is
// not an error (nothing to mark).
func (t *Tx) MarkCorrupt(key, digest string, m CorruptMark) (bool, error) {
	entries := t.tx.Bucket(bucketEntries)
	v := entries.Get([]byte(key))
	if v == nil {
		return false, nil
	}
	rec, err := decodeRecord(key, v)
	if err != nil {
		return false, nil
	}
	if !slices.Contains(rec.Digests(), digest) {
		return false, nil
	}
	if rec.Corrupt != nil {
		return true, nil // marked already: keep the first finding
	}
	rec.Corrupt = &m
	val, err := encodeRecord(rec)
	if err != nil {
		return false, err
	}
	return true, entries.Put([]byte(key), val)
}

// FreeRatio returns the index file's size and the share of its pages that
// are on the freelist (0..1). The DB must be open read-write, or read-only
// through a path that loads the freelist.
func (d *DB) FreeRatio() (size int64, free float64, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer recoverCorrupt(d.path, &err)
	fi, err := d.file.Stat() // the open file, not what the path names by now
	if err != nil {
		return 0, 0, fmt.Errorf("stat index %s: %w", d.path, err)
	}
	pages := fi.Size() / int64(d.bolt.Info().PageSize)
	if pages == 0 {
		return fi.Size(), 0, nil
	}
	return fi.Size(), float64(d.bolt.Stats().FreePageN) / float64(pages), nil
}

// CompactTo copies the open index into a new file at dst (which must not
// exist) with every page full and no free pages, and fsyncs it. The caller
// renames dst over the original while keeping writers out (holding d open
// read-write does: bbolt's lock on the file).
func (d *DB) CompactTo(dst string) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer recoverCorrupt(d.path, &err)
	if _, err := os.Lstat(dst); !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("compact %s: %s already exists", d.path, dst)
	}
	out, err := bolt.Open(dst, 0o644, &bolt.Options{Timeout: DefaultTimeout, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return fmt.Errorf("compact %s: create %s: %w", d.path, dst, err)
	}
	if err := bolt.Compact(out, d.bolt, 64<<10); err != nil {
		_ = out.Close()
		return fmt.Errorf("compact %s into %s: %w", d.path, dst, err)
	}
	if err := out.Sync(); err != nil {
		_ = out.Close()
		return fmt.Errorf("compact %s: fsync %s: %w", d.path, dst, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("compact %s: close %s: %w", d.path, dst, err)
	}
	return fsync.Dir(filepath.Dir(dst))
}

// isOSError reports whether err came from the operating system (opening,
// locking or mapping the file) rather than from bbolt reading its content.
func isOSError(err error) bool {
	var pe *fs.PathError
	var errno syscall.Errno
	return errors.As(err, &pe) || errors.As(err, &errno)
}
