package kcache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"time"

	"github.com/kcache/kcache/blobstore"
	"github.com/kcache/kcache/index"
	"github.com/kcache/kcache/internal/failpoint"
	"github.com/kcache/kcache/lock"
	"github.com/kcache/kcache/remote"
)

// Pull installs key's entry from the remote into the local cache, replacing
// a local entry with other content (like Store). An entry whose local copy
// already matches is left alone (UpToDate). A key the remote does not have
// is an error matching remote.ErrNotFound.
//
// Blobs the local cache already has are not downloaded; every other blob is
// staged, checked against its digest and size, and only then renamed into
// blobs/. The key's lock is taken only for the short install (manifest blob
// and one index transaction), so harnesses using an older entry under the key
// are not held up by a slow download. A pull killed at any point leaves no
// partial entry: the blobs it finished are kept (unreferenced, reclaimed by
// the sweep after its grace period unless a later pull uses them, which is
// what makes a re-run download only what is missing).
func (c *Cache) Pull(ctx context.Context, r remote.Remote, key string, opt TransferOptions) (*TransferReport, error) {
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	if c.opt.ReadOnly {
		return nil, fmt.Errorf("pull %q: %w", key, ErrReadOnly)
	}
	rec, err := fetchManifest(ctx, r, key)
	if err != nil {
		return nil, fmt.Errorf("pull %q: %w", key, err)
	}
	rep := &TransferReport{Key: key, Remote: r.String(), Blobs: entryBlobs(rec)}
	if c.matchesLocal(ctx, rec) {
		rep.UpToDate = true
		return rep, nil
	}
	st, err := c.newStaging(ctx)
	if err != nil {
		return rep, fmt.Errorf("pull %q: %w", key, err)
	}
	defer func() {
		if err := st.remove(); err != nil {
			c.warnf("%v (the next store sweeps it)", err)
		}
	}()
	// Blobs found locally may vanish before the install references them
	// (see dyingRetry); then they are fetched again. The first install
	// attempt sets stored_at and the retries keep it, so that they rewrite
	// the same manifest blob instead of leaving one behind per attempt.
	rec.StoredAt = ""
	digests := make([]string, len(rep.Blobs))
	for i, b := range rep.Blobs {
		digests[i] = b.Digest
	}
	for retry := newDyingRetry(); ; {
		trust := c.blobTrust(ctx, digests)
		var bs []blobstore.Blob // with the ctimes to record
		for i := range rep.Blobs {
			n, err := c.fetchBlob(ctx, r, st, key, &rep.Blobs[i], opt, trust, &bs)
			if err != nil {
				return rep, fmt.Errorf("pull %q: %w", key, err)
			}
			rep.Bytes += n
		}
		failpoint.Hit(failpoint.PullAfterBlobs)
		err := c.install(ctx, st, rec, bs)
		if retry.again(ctx, &err) {
			continue
		}
		if err != nil {
			return rep, fmt.Errorf("pull %q: %w", key, err)
		}
		return rep, nil
	}
}

// fetchManifest reads and checks key's manifest object.
func fetchManifest(ctx context.Context, r remote.Remote, key string) (*index.Record, error) {
	name := remote.ManifestName(key)
	body, _, err := r.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	data, err := io.ReadAll(io.LimitReader(body, remote.MaxManifestSize+1))
	if err != nil {
		return nil, err
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%s/%s is not a usable kcache manifest: %s", r, name, fmt.Sprintf(format, args...))
	}
	if len(data) > remote.MaxManifestSize {
		return nil, bad("larger than %d bytes", remote.MaxManifestSize)
	}
	rec, err := index.DecodeManifest(data)
	if err != nil {
		return nil, bad("%v", err)
	}
	switch {
	case rec.Key != key:
		return nil, bad("it describes key %q", rec.Key)
	case !blobstore.ValidDigest(rec.Image.Digest) || rec.Vmlinux != nil && !blobstore.ValidDigest(rec.Vmlinux.Digest):
		return nil, bad("a blob digest is not 64 lowercase hex digits")
	}
	// The rules Store applies to what it is given (image name included).
	if _, err := recordMetadata(rec).check(time.Time{}); err != nil { // only the checks matter: the copy is discarded
		return nil, bad("%v", err)
	}
	scrubForRemote(rec) // a pusher that did not scrub must not plant its paths here
	return rec, nil
}

// matchesLocal reports whether the usable local entry under want's key has
// the same blobs and metadata as want. stored_at differs by design (each
// cache records when the entry reached it) and is not compared.
func (c *Cache) matchesLocal(ctx context.Context, want *index.Record) bool {
	e, err := c.Describe(ctx, want.Key)
	if err != nil {
		return false
	}
	have, other := e.Record, *want
	scrubForRemote(&have)
	have.StoredAt, other.StoredAt = "", ""
	return reflect.DeepEqual(have, other)
}

// fetchBlob makes b present in blobs/: nothing to do when it already is
// (with its size, one link, and either the ctime trust vouches for or bytes
// that hash right), else it downloads the object into the staging
// directory, checks size and digest, and commits it (replacing a damaged
// file). It returns the bytes downloaded, and appends the blob with its
// ctime to bs.
func (c *Cache) fetchBlob(ctx context.Context, r remote.Remote, st *staging, key string, b *BlobTransfer, opt TransferOptions, trust blobstore.Trust, bs *[]blobstore.Blob) (int64, error) {
	if in, err := c.blobs.Inode(b.Digest); err == nil && in.Size == b.Size && in.Nlink == 1 &&
		(trust(b.Digest, in.Ctime) || c.blobs.Verify(b.Digest) == nil) {
		*bs = append(*bs, blobstore.Blob{Digest: b.Digest, Size: b.Size, Ctime: in.Ctime})
		return 0, nil
	}
	name := remote.BlobName(b.Digest)
	body, obj, err := r.Get(ctx, name)
	if err != nil {
		return 0, err
	}
	defer body.Close()
	where := fmt.Sprintf("%s/%s", r, name)
	if obj.Size != b.Size {
		return 0, fmt.Errorf("%s is %d bytes, the manifest says %d; nothing installed; push the key again from a cache that has it", where, obj.Size, b.Size)
	}
	w, err := c.blobs.NewWriter(st.dir)
	if err != nil {
		return 0, err
	}
	src := newProgressReader(io.LimitReader(body, b.Size+1), opt.Progress,
		TransferProgress{Key: key, Role: b.Role, Object: name, Total: b.Size})
	n, err := io.Copy(midBlobFailpoint{w}, src)
	if err != nil {
		w.Abort()
		return n, fmt.Errorf("%w; nothing installed, run the pull again", err)
	}
	if n != b.Size {
		w.Abort()
		return n, fmt.Errorf("%s: got %d bytes, want %d; nothing installed, run the pull again", where, n, b.Size)
	}
	if got := w.Digest(); got != b.Digest {
		w.Abort()
		return n, fmt.Errorf("%s: digest mismatch: the bytes have sha256 %s; the object is damaged on the server (or was in transit); nothing installed; if a pull again fails the same way, push the key again from a cache that has it", where, got)
	}
	got, err := c.blobs.CommitAll([]*blobstore.Writer{w}, nil)
	if err != nil {
		return n, err
	}
	c.warnReplaced(got)
	*bs = append(*bs, got...)
	b.Transferred = true
	return n, nil
}

// midBlobFailpoint passes writes on and then hits the failpoint that kills a
// pull with part of a blob staged.
type midBlobFailpoint struct{ w io.Writer }

func (m midBlobFailpoint) Write(p []byte) (int, error) {
	n, err := m.w.Write(p)
	failpoint.Hit(failpoint.PullMidBlob)
	return n, err
}

// install records rec as key's entry under the key's exclusive lock: its
// manifest blob (stored_at is now, when the entry reached this cache, unless
// an earlier attempt set it), then one index transaction, which also records
// the ctimes of bs and of the manifest. A pin on the key is kept.
func (c *Cache) install(ctx context.Context, st *staging, rec *index.Record, bs []blobstore.Blob) error {
	l, err := c.acquire(ctx, rec.Key, lock.Exclusive, c.opt.StoreLockTimeout)
	if err != nil {
		return err
	}
	defer l.Release()
	if rec.StoredAt == "" {
		rec.StoredAt = c.now().UTC().Format(time.RFC3339Nano)
	}
	mb, err := c.writeManifest(st, rec)
	if err != nil {
		return err
	}
	bs = append(bs, mb)
	return c.update(ctx, func(tx *index.Tx) ([]string, error) {
		released, err := tx.Put(rec, c.hasBlob)
		if err == nil {
			err = recordCtimes(tx, bs)
		}
		failpoint.Hit(failpoint.PullBeforeCommit)
		return released, err
	})
}

// LookupRemote is Lookup that, when key has no local entry, pulls it from r
// and looks it up again. Failures of the remote are warnings (on
// Options.Logger) and leave the miss; a key the remote lacks is a quiet miss.
// A corrupt local entry is reported as such, not replaced. r may be nil.
func (c *Cache) LookupRemote(ctx context.Context, r remote.Remote, key string) (*Entry, error) {
	e, err := c.lookup(ctx, key)
	var nf *NotFoundError
	if r != nil && errors.As(err, &nf) {
		_, perr := c.Pull(ctx, r, key, TransferOptions{})
		switch {
		case perr == nil:
			e, err = c.lookup(ctx, key)
		case !errors.Is(perr, remote.ErrNotFound):
			c.warnf("%v (answering from the local cache)", perr)
		}
	}
	c.countLookup(err)
	return e, err
}
