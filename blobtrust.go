package kcache

import (
	"context"
	"github.com/kcache/kcache/blobstore"
	"github.com/kcache/kcache/index"
)

// Blob files are read-only (0444), but root ignores the mode, and any hard
// link to a blob (an export by an older kcache, a user's ln) lets a write
// change the cache's bytes without changing the file's name. Deduplication
// must therefore not trust a blob file just because it exists with the
// right size. The index records each blob file's inode change time
// (index.BlobRef.Ctime) right after kcache installed, deduplicated or
// re-hashed it; every write through any link moves the ctime, so a file
// whose ctime (or link count, which a hard link raises) is not the recorded
// one is hashed before it is reused, and replaced when it is wrong.
//
// Known limit: ctime has the kernel's timestamp granularity (a clock tick),
// so a write landing within the same tick right after kcache read the ctime
// goes unnoticed by this check (a deep verify still finds it).

// blobTrust returns a blobstore.Trust that vouches for a blob file whose
// ctime is the one the index recorded for it, reading the records of
// digests in one index view. Unknown blobs and records without a ctime are
// not vouched for (they are hashed).
func (c *Cache) blobTrust(ctx context.Context, digests []string) blobstore.Trust {
	known := map[string]int64{}
	_, _ = c.view(ctx, func(tx *index.Tx) error {
		for _, d := range digests {
			if ref, ok, err := tx.Blob(d); err == nil && ok && ref.Dying == "" && ref.Ctime != 0 {
				known[d] = ref.Ctime
			}
		}
		return nil
	})
	return func(d string, ctime int64) bool {
		k, ok := known[d]
		return ok && k == ctime
	}
}

// recordCtimes records, in the transaction that references them, the ctimes
// CommitAll left the blobs with (index.Tx.SetBlobCtime).
func recordCtimes(tx *index.Tx, bs []blobstore.Blob) error {
	for _, b := range bs {
		if b.Ctime != 0 {
			if err := tx.SetBlobCtime(b.Digest, b.Ctime); err != nil {
				return err
			}
		}
	}
	return nil
}

// warnReplaced warns about blobs whose file CommitAll found damaged (it did
// not hold the content, or had other hard links) and replaced.
func (c *Cache) warnReplaced(bs []blobstore.Blob) {
	for _, b := range bs {
		if b.Replaced {
			c.warnf("blob %s had been changed or hard-linked since it was stored (a write through a hard link?); replaced it with the bytes just stored", c.blobs.Path(b.Digest))
		}
	}
}
