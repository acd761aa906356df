package kcache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/kcache/kcache/blobstore"
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
	rec, files, err := c.openForPush(ctx, key)
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
		if err := blobstore.VerifyReader(files[i], b.Digest); err != nil {
			return rep, fmt.Errorf("push %q: %s blob %s: %w; the local copy is damaged, nothing was published", key, b.Role, files[i].Name(), err)
		}
		if _, err := files[i].Seek(0, io.SeekStart); err != nil {
			return rep, fmt.Errorf("push %q: rewind %s: %w", key, files[i].Name(), err)
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

// openForPush reads key's record and opens its blobs (image, then vmlinux)
// inside one read of the index (see describe), so the files are the entry's
// even if it is replaced or removed while they are uploaded.
func (c *Cache) openForPush(ctx context.Context, key string) (*index.Record, []*os.File, error) {
	var files []*os.File
	e, err := c.describe(ctx, key, func(e *Entry) error {
		for _, p := range []string{e.ImagePath, e.VmlinuxPath} {
			if p == "" {
				continue
			}
			f, err := c.fs.Open(p)
			if err != nil {
				return fmt.Errorf("push %q: %w", key, err)
			}
			files = append(files, f)
		}
		return nil
	})
	if err != nil {
		for _, f := range files {
			f.Close()
		}
		return nil, nil, err
	}
	return &e.Record, files, nil
}
