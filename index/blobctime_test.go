package index_test

import (
	"path/filepath"
	"testing"

	"github.com/kcache/kcache/index"
	"github.com/vmihailenco/msgpack/v5"
	bolt "go.etcd.io/bbolt"
)

// A blobs record written before BlobRef.Ctime existed ({size, refs}) still
// decodes, with ctime 0 (unknown); SetBlobCtime adds it and Put keeps it,
// and the record round-trips with the other fields unchanged.
func TestSafetyBlobRefCtimeOptional(t *testing.T) {
	path := filepath.Join(t.TempDir(), "index.db")
	db := openRW(t, path)
	rec := record("k", "2026-01-01T00:00:00Z", 7)
	if err := db.Update(func(tx *index.Tx) error { _, err := tx.Put(rec, always); return err }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	old, err := msgpack.Marshal(map[string]any{"size": 7, "refs": 1})
	if err != nil {
		t.Fatal(err)
	}
	bdb, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := bdb.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("blobs")).Put([]byte(digest(7)), old) }); err != nil {
		t.Fatal(err)
	}
	bdb.Close()

	db = openRW(t, path)
	get := func() index.BlobRef {
		var ref index.BlobRef
		if err := db.View(func(tx *index.Tx) error {
			var ok bool
			var err error
			ref, ok, err = tx.Blob(digest(7))
			if err == nil && !ok {
				t.Fatal("blob record gone")
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return ref
	}
	if ref := get(); ref != (index.BlobRef{Size: 7, Refs: 1}) {
		t.Fatalf("old record decodes as %+v", ref)
	}
	if err := db.Update(func(tx *index.Tx) error { return tx.SetBlobCtime(digest(7), 1234) }); err != nil {
		t.Fatal(err)
	}
	if ref := get(); ref != (index.BlobRef{Size: 7, Refs: 1, Ctime: 1234}) {
		t.Fatalf("after SetBlobCtime: %+v", ref)
	}
	rec2 := record("k2", "2026-01-02T00:00:00Z", 7)
	if err := db.Update(func(tx *index.Tx) error { _, err := tx.Put(rec2, always); return err }); err != nil {
		t.Fatal(err)
	}
	if ref := get(); ref != (index.BlobRef{Size: 7, Refs: 2, Ctime: 1234}) {
		t.Fatalf("after a second Put: %+v", ref)
	}
}
