package index

// Blob records: reference counts, dying marks and what a removal releases.

import (
	"fmt"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

func (t *Tx) dropRefs(rec *Record) (released []string, err error) {
	for _, d := range rec.Digests() {
		left, err := t.addRef(d, 0, -1)
		if err != nil {
			return nil, err
		}
		if left == 0 {
			released = append(released, d)
		}
	}
	return released, nil
}

// addRef changes a blob's reference count by delta and returns the new count;
// at zero the blob is marked dying (see Forget).
func (t *Tx) addRef(digest string, size int64, delta int64) (int64, error) {
	b := t.tx.Bucket(bucketBlobs)
	ref := BlobRef{Size: size}
	if v := b.Get([]byte(digest)); v != nil {
		var err error
		if ref, err = decodeBlobRef(digest, v); err != nil {
			return 0, err
		}
	}
	ref.Refs += delta
	if ref.Refs <= 0 {
		ref.Refs, ref.Dying = 0, time.Now().UTC().Format(time.RFC3339Nano)
	}
	v, err := msgpack.Marshal(&ref)
	if err != nil {
		return 0, err
	}
	return ref.Refs, b.Put([]byte(digest), v)
}

// Blob returns the bookkeeping for a digest, if the index references it.
func (t *Tx) Blob(digest string) (BlobRef, bool, error) {
	v := t.tx.Bucket(bucketBlobs).Get([]byte(digest))
	if v == nil {
		return BlobRef{}, false, nil
	}
	ref, err := decodeBlobRef(digest, v)
	if err != nil {
		return BlobRef{}, false, err
	}
	return ref, true, nil
}

// decodeBlobRef decodes the blobs bucket's value for digest.
func decodeBlobRef[K string | []byte](digest K, v []byte) (BlobRef, error) {
	var ref BlobRef
	if err := msgpack.Unmarshal(v, &ref); err != nil {
		return BlobRef{}, fmt.Errorf("%w: blob record %s: %v", ErrCorrupt, digest, err)
	}
	return ref, nil
}

// Forget deletes the records of blobs that are still dying, once their
// files are gone. A blob that was referenced again meanwhile is kept.
func (t *Tx) Forget(digests []string) error {
	b := t.tx.Bucket(bucketBlobs)
	for _, d := range digests {
		ref, ok, err := t.Blob(d)
		if err != nil {
			return err
		}
		if ok && ref.Refs == 0 && ref.Dying != "" {
			if err := b.Delete([]byte(d)); err != nil {
				return err
			}
		}
	}
	return nil
}

// ForEachBlob calls fn for every blob the index knows, in digest order.
func (t *Tx) ForEachBlob(fn func(digest string, ref BlobRef) error) error {
	return t.tx.Bucket(bucketBlobs).ForEach(func(k, v []byte) error {
		ref, err := decodeBlobRef(k, v)
		if err != nil {
			return err
		}
		return fn(string(k), ref)
	})
}

// DyingBlobs returns the blobs released by a removal whose files may not be
// unlinked yet, with the time they were released.
func (t *Tx) DyingBlobs() (map[string]time.Time, error) {
	out := map[string]time.Time{}
	err := t.tx.Bucket(bucketBlobs).ForEach(func(k, v []byte) error {
		ref, err := decodeBlobRef(k, v)
		if err != nil {
			return err
		}
		if ref.Dying != "" {
			since, _ := time.Parse(time.RFC3339Nano, ref.Dying)
			out[string(k)] = since
		}
		return nil
	})
	return out, err
}
