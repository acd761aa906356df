package index

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/kcache/kcache/internal/fsync"
	bolt "go.etcd.io/bbolt"
)

// Upgrader is an index file opened read-write without its schema checked:
// the hooks package migrate needs to upgrade a file written by an older
// kcache. Like every read-write open it holds bbolt's exclusive lock on the
// file until Close, so the file does not change under a Backup and no
// reader sees a half-upgraded file (each Step is one transaction anyway).
type Upgrader struct {
	bolt *bolt.DB
	path string
	file *os.File // bbolt's descriptor, for checkSize
}

// OpenUpgrade opens the index at path for upgrading. The file must exist.
func OpenUpgrade(path string, timeout time.Duration) (u *Upgrader, err error) {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("open index %s for upgrade: %w", path, err)
	}
	defer recoverCorrupt(path, &err)
	b, file, err := openBolt(path, &bolt.Options{Timeout: timeout, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, openError(path, timeout, err)
	}
	return &Upgrader{bolt: b, path: path, file: file}, nil
}

// Path returns the file's path.
func (u *Upgrader) Path() string { return u.path }

// Close releases the file.
func (u *Upgrader) Close() error {
	if err := u.bolt.Close(); err != nil {
		return fmt.Errorf("close index %s: %w", u.path, err)
	}
	return nil
}

// Version returns the file's schema version. A version newer than
// SchemaVersion is ErrSchemaTooNew.
func (u *Upgrader) Version() (v uint32, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer recoverCorrupt(u.path, &err)
	err = u.bolt.View(func(btx *bolt.Tx) error {
		if err := checkSize(u.path, u.file, btx); err != nil {
			return err
		}
		v, err = schemaOf(btx)
		if err == nil && v > SchemaVersion {
			err = schemaTooNew(v)
		}
		return err
	})
	return v, err
}

// Backup copies the file byte for byte to dst (through a temporary file
// and a rename, fsynced, then the directory fsynced), replacing any file
// there. The exclusive lock Upgrader holds keeps writers out meanwhile.
func (u *Upgrader) Backup(dst string) error {
	in, err := os.Open(u.path)
	if err != nil {
		return fmt.Errorf("back up index: %w", err)
	}
	defer in.Close()
	tmp := fmt.Sprintf("%s.new-%d", dst, os.Getpid())
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("back up index to %s: %w", dst, err)
	}
	defer os.Remove(tmp)
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("back up index to %s: %w", dst, err)
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return fmt.Errorf("back up index to %s: fsync: %w", dst, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("back up index to %s: %w", dst, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("back up index to %s: %w", dst, err)
	}
	return fsync.Dir(filepath.Dir(dst))
}

// UpgradeTx is the read-write transaction of one upgrade step.
type UpgradeTx struct {
	tx *bolt.Tx
}

// Bolt returns the raw bbolt transaction: an upgrade step reshapes buckets
// and values of a layout that the rest of this package no longer speaks.
func (t *UpgradeTx) Bolt() *bolt.Tx { return t.tx }

// Step runs fn and sets the schema version from `from` to from+1, all in one
// transaction: it commits only when the file was at `from`, fn succeeded and
// every bucket of the new version exists; otherwise nothing changes.
func (u *Upgrader) Step(from uint32, fn func(*UpgradeTx) error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer recoverCorrupt(u.path, &err)
	if from >= SchemaVersion {
		return fmt.Errorf("upgrade %s: no step from schema %d: this kcache's schema is %d", u.path, from, SchemaVersion)
	}
	return u.bolt.Update(func(btx *bolt.Tx) error {
		if err := checkSize(u.path, u.file, btx); err != nil {
			return err
		}
		v, err := schemaOf(btx)
		if err != nil {
			return err
		}
		if v != from {
			return fmt.Errorf("upgrade %s: file has schema %d, the step is from %d", u.path, v, from)
		}
		if err := fn(&UpgradeTx{tx: btx}); err != nil {
			return fmt.Errorf("upgrade %s from schema %d to %d: %w", u.path, from, from+1, err)
		}
		if err := btx.Bucket(bucketMeta).Put(keySchema, binary.BigEndian.AppendUint32(nil, from+1)); err != nil {
			return err
		}
		if err := checkBuckets(btx, from+1); err != nil {
			return fmt.Errorf("upgrade %s from schema %d to %d: %w", u.path, from, from+1, err)
		}
		return nil
	})
}
