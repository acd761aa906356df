package kcache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/kcache/kcache/index"
	"github.com/kcache/kcache/internal/failpoint"
	"github.com/kcache/kcache/remote"
)

// Push copies key's entry to the remote: first every blob the remote does
// not already have (by name; a blob of the right size is skipped), then the
// manifest, so the remote never shows an entry whose blobs are missing.
// Re-running an interrupted push sends only what is still missing.
//
// Each blob is read from a file opened while the index was open, so a
// concurrent Store or Remove of the key cannot pull it away mid-upload, and
// its digest is checked before any byte is sent: a damaged local blob is
// refused (run `kcache verify`), never published.
func (c *Cache) Push(ctx context.Context, r remote.Remote, key string, opt TransferOptions) (*TransferReport, error) {
	rec, files, err := c.openForPush(key)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	rep := &TransferReport{Key: key, Remote: r.String(), Blobs: entryBlobs(rec)}
	for i := range rep.Blobs {
		b := &rep.Blobs[i]
		name := remote.BlobName(b.Digest)
		have, err := r.Stat(ctx, name)
		if err == nil && have.Size == b.Size {
			continue
		}
		if err != nil && !errors.Is(err, remote.ErrNotFound) {
			return rep, fmt.Errorf("push %q: %w", key, err)
		}
		if err := checkDigest(files[i], b.Digest); err != nil {
			return rep, fmt.Errorf("push %q: %s blob: %w; nothing was published (run `kcache verify %s`)", key, b.Role, err, key)
		}
		body := newProgressReader(files[i], opt.Progress, TransferProgress{Key: key, Role: b.Role, Object: name, Total: b.Size})
		if err := r.Put(ctx, name, body, b.Size); err != nil {
			return rep, fmt.Errorf("push %q: %w", key, err)
		}
		b.Transferred = true
		rep.Bytes += b.Size
		failpoint.Hit(failpoint.PushAfterFirstBlob)
	}
	scrubForRemote(rec)
	manifest, err := index.EncodeManifest(rec)
	if err != nil {
		return rep, fmt.Errorf("push %q: %w", key, err)
	}
	if err := r.Put(ctx, remote.ManifestName(key), bytes.NewReader(manifest), int64(len(manifest))); err != nil {
		return rep, fmt.Errorf("push %q: %w", key, err)
	}
	return rep, nil
}

// openForPush reads key's record and opens its blobs inside one read
// transaction: a remover unlinks released blobs only after its own commit,
// which cannot happen while this transaction holds the index, so the files
// opened here are the entry's.
func (c *Cache) openForPush(key string) (*index.Record, []*os.File, error) {
	if err := ValidateKey(key); err != nil {
		return nil, nil, err
	}
	var rec *index.Record
	var files []*os.File
	var entryErr error
	ok, err := c.view(func(tx *index.Tx) error {
		var err error
		if rec, err = tx.Get(key); err != nil {
			return err
		}
		if _, entryErr = c.entryFrom(rec, nil); entryErr != nil {
			return nil
		}
		for _, b := range entryBlobs(rec) {
			f, err := os.Open(c.blobs.Path(b.Digest))
			if err != nil {
				entryErr = fmt.Errorf("push %q: open %s blob: %w", key, b.Role, err)
				return nil
			}
			files = append(files, f)
		}
		return nil
	})
	var derr *index.DecodeError
	switch {
	case !ok && err == nil, errors.Is(err, index.ErrNotFound):
		err = &NotFoundError{Key: key}
	case errors.As(err, &derr):
		err = corruptFromDecode(key, derr)
	case err != nil:
		err = fmt.Errorf("push %q: %w", key, err)
	default:
		err = entryErr
	}
	if err != nil {
		for _, f := range files {
			f.Close()
		}
		return nil, nil, err
	}
	return rec, files, nil
}

// checkDigest reads f to the end, checks its sha256 and rewinds it.
func checkDigest(f *os.File, want string) error {
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("read %s: %w", f.Name(), err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return fmt.Errorf("%s has sha256 %s, not %s: the local copy is damaged", f.Name(), got, want)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("rewind %s: %w", f.Name(), err)
	}
	return nil
}
