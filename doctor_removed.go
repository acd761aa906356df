package kcache

import (
	"errors"
	"io/fs"

	"github.com/kcache/kcache/index"
)

// removedBefore reports whether rec's key was removed at or after rec was
// stored (index.Tombstone): rec is then a leftover of the removed entry — the
// manifest of a store killed before its commit, or one a remover killed
// before its unlink left behind — and restoring it would resurrect what a
// user removed. Every repair (restoreLost, rebuildIndex) asks this.
func removedBefore(tx *index.Tx, rec *index.Record) (bool, error) {
	tb, ok, err := tx.Removed(rec.Key)
	if err != nil || !ok {
		return false, err
	}
	return tb.Covers(rec.StoredAt), nil
}

// blobVanished reports whether err of a Put says that a blob the record
// names is gone or being removed: a concurrent rm, gc or sweep released it
// after doctor found the entry complete. The entry is not complete any more,
// so the restore is skipped rather than failed.
func blobVanished(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, index.ErrBlobDying)
}

// errSkipRestore aborts a restore's transaction whose entry lost a blob.
var errSkipRestore = errors.New("restore skipped: a blob vanished")
