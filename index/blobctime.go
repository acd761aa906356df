package index

import "github.com/vmihailenco/msgpack/v5"

// SetBlobCtime records ctime as the inode change time of blob digest's file
// once kcache has written or hashed it (BlobRef.Ctime). A blob the index
// does not reference, or one that is dying, is left alone.
func (t *Tx) SetBlobCtime(digest string, ctime int64) error {
	ref, ok, err := t.Blob(digest)
	if err != nil || !ok || ref.Dying != "" || ref.Ctime == ctime {
		return err
	}
	ref.Ctime = ctime
	v, err := msgpack.Marshal(&ref)
	if err != nil {
		return err
	}
	return t.tx.Bucket(bucketBlobs).Put([]byte(digest), v)
}
