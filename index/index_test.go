package index_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kcache/kcache/index"
	"github.com/vmihailenco/msgpack/v5"
	bolt "go.etcd.io/bbolt"
)

func digest(n int) string { return fmt.Sprintf("%064x", n) }

func record(key, builtAt string, img int) *index.Record {
	return &index.Record{
		Key: key, Source: index.Source{Type: "tarball"}, Arch: "x86_64", ImageName: "bzImage",
		BuiltAt: builtAt, Image: index.Blob{Digest: digest(img), Size: int64(img)},
		Manifest: index.Blob{Digest: digest(1_000_000 + img), Size: 10},
	}
}

func always(string) bool { return true }

func openRW(t *testing.T, path string) *index.DB {
	t.Helper()
	db, err := index.Open(path, index.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestOpenCreatesAndReadOnlyDoesNot(t *testing.T) {
	path := filepath.Join(t.TempDir(), "index.db")
	if _, err := index.Open(path, index.Options{ReadOnly: true}); !errors.Is(err, index.ErrNoIndex) {
		t.Fatalf("read-only open of a missing file = %v; want ErrNoIndex", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("read-only open created the file")
	}
	db := openRW(t, path)
	if err := db.View(func(tx *index.Tx) error {
		if v, created := tx.Schema(); v != index.SchemaVersion || created == "" {
			return fmt.Errorf("schema %d created %q", v, created)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Fatalf("creation left temporary files: %v", ents)
	}
}

func TestPutDeleteRefcounts(t *testing.T) {
	db := openRW(t, filepath.Join(t.TempDir(), "index.db"))
	var released []string
	update := func(fn func(tx *index.Tx) ([]string, error)) {
		t.Helper()
		if err := db.Update(func(tx *index.Tx) error {
			var err error
			released, err = fn(tx)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	a, b := record("a", "2026-01-01T00:00:00Z", 1), record("b", "2026-01-02T00:00:00Z", 1) // share image 1
	update(func(tx *index.Tx) ([]string, error) { return tx.Put(a, always) })
	update(func(tx *index.Tx) ([]string, error) { return tx.Put(b, always) })
	refs := func(d string) int64 {
		var r index.BlobRef
		db.View(func(tx *index.Tx) error { r, _, _ = tx.Blob(d); return nil })
		return r.Refs
	}
	if refs(digest(1)) != 2 {
		t.Fatalf("shared image refs = %d; want 2", refs(digest(1)))
	}
	a2 := record("a", "2026-01-03T00:00:00Z", 2) // replace a's image
	update(func(tx *index.Tx) ([]string, error) { return tx.Put(a2, always) })
	if refs(digest(1)) != 1 || refs(digest(2)) != 1 || len(released) != 0 {
		t.Fatalf("after replace: refs %d/%d released %v", refs(digest(1)), refs(digest(2)), released)
	}
	update(func(tx *index.Tx) ([]string, error) { return tx.Delete("b") })
	if strings.Join(released, ",") != digest(1)+","+digest(1_000_001) {
		t.Fatalf("delete b released %v; want image 1 and b's manifest", released)
	}
	// Put refuses a blob that the index does not know and that does not exist.
	err := db.Update(func(tx *index.Tx) error {
		_, err := tx.Put(record("c", "2026-01-04T00:00:00Z", 3), func(string) bool { return false })
		return err
	})
	if !errors.Is(err, index.ErrBlobVanished) {
		t.Fatalf("Put with a vanished blob = %v; want ErrBlobVanished", err)
	}
	if err := db.View(func(tx *index.Tx) error {
		if _, err := tx.Get("c"); !errors.Is(err, index.ErrNotFound) {
			return fmt.Errorf("failed put left a record: %v", err)
		}
		if _, err := tx.Delete("zzz"); !errors.Is(err, index.ErrNotFound) {
			return fmt.Errorf("Delete of a missing key = %v", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestNewestUsesTimeOrder(t *testing.T) {
	db := openRW(t, filepath.Join(t.TempDir(), "index.db"))
	db.Update(func(tx *index.Tx) error {
		for i, k := range []string{"c", "a", "b", "d"} {
			if _, err := tx.Put(record(k, fmt.Sprintf("2026-01-0%dT00:00:00Z", 4-i%3), i), always); err != nil {
				return err
			}
		}
		return nil
	})
	var got []string
	db.View(func(tx *index.Tx) error {
		return tx.Newest(0, func(k, at string) error { got = append(got, k+"@"+at[8:10]); return nil })
	})
	if want := "d@04 c@04 a@03 b@02"; strings.Join(got, " ") != want {
		t.Fatalf("Newest = %v; want %s", got, want)
	}
}

func TestDecodeErrorKinds(t *testing.T) {
	path := filepath.Join(t.TempDir(), "index.db")
	openRW(t, path).Close()
	b, err := bolt.Open(path, 0o644, nil)
	if err != nil {
		t.Fatal(err)
	}
	drift, _ := msgpack.Marshal(map[string]any{"key": "drift", "arch": "x86_64"})
	b.Update(func(tx *bolt.Tx) error {
		tx.Bucket([]byte("entries")).Put([]byte("garbage"), []byte{0xc1, 0xff, 0x00})
		return tx.Bucket([]byte("entries")).Put([]byte("drift"), drift)
	})
	b.Close()
	db := openRW(t, path)
	kinds := map[string]string{}
	db.View(func(tx *index.Tx) error {
		return tx.ForEach(func(k string, rec *index.Record, err error) error {
			var de *index.DecodeError
			if errors.As(err, &de) {
				kinds[k] = de.Kind + ": " + de.Detail
			}
			return nil
		})
	})
	if !strings.HasPrefix(kinds["garbage"], "malformed") || !strings.HasPrefix(kinds["drift"], "schema_drift: missing field `source`") {
		t.Fatalf("decode kinds = %v", kinds)
	}
}

// A damaged blob record is ErrCorrupt naming the digest, on every path that
// reads one: Blob, ForEachBlob, DyingBlobs, Put's check of its blobs and the
// reference counting of Delete.
func TestDamagedBlobRecordIsCorrupt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "index.db")
	db := openRW(t, path)
	if err := db.Update(func(tx *index.Tx) error {
		_, err := tx.Put(record("k", "2026-01-01T00:00:00Z", 1), always)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	b, err := bolt.Open(path, 0o644, nil)
	if err != nil {
		t.Fatal(err)
	}
	bad := digest(1) // k's image
	if err := b.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("blobs")).Put([]byte(bad), []byte{0xc1})
	}); err != nil {
		t.Fatal(err)
	}
	b.Close()
	db = openRW(t, path)
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, index.ErrCorrupt) || !strings.Contains(err.Error(), "blob record "+bad) {
			t.Errorf("%s of a damaged blob record = %v; want ErrCorrupt naming %s", what, err, bad)
		}
	}
	db.View(func(tx *index.Tx) error {
		_, _, err := tx.Blob(bad)
		check("Blob", err)
		check("ForEachBlob", tx.ForEachBlob(func(string, index.BlobRef) error { return nil }))
		_, err = tx.DyingBlobs()
		check("DyingBlobs", err)
		return nil
	})
	check("Put", db.Update(func(tx *index.Tx) error {
		_, err := tx.Put(record("k2", "2026-01-01T00:00:00Z", 1), always)
		return err
	}))
	check("Delete", db.Update(func(tx *index.Tx) error {
		_, err := tx.Delete("k")
		return err
	}))
}

func TestSchemaTooNewIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "index.db")
	openRW(t, path).Close()
	b, _ := bolt.Open(path, 0o644, nil)
	b.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("meta")).Put([]byte("schema_version"), binary.BigEndian.AppendUint32(nil, index.SchemaVersion+1))
	})
	b.Close()
	for _, ro := range []bool{true, false} {
		_, err := index.Open(path, index.Options{ReadOnly: ro})
		if !errors.Is(err, index.ErrSchemaTooNew) || !strings.Contains(err.Error(), "upgrade kcache") {
			t.Errorf("open (read-only %v) of a newer schema = %v", ro, err)
		}
	}
}

func TestForeignFileIsCorrupt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "index.db")
	os.WriteFile(path, []byte(strings.Repeat("not a bbolt file\n", 1000)), 0o644)
	if _, err := index.Open(path, index.Options{ReadOnly: true}); !errors.Is(err, index.ErrCorrupt) {
		t.Fatalf("open of a foreign file = %v; want ErrCorrupt", err)
	}
}

// fill writes n records so the file spans many pages.
func fill(t *testing.T, path string, n int) {
	db := openRW(t, path)
	if err := db.Update(func(tx *index.Tx) error {
		for i := range n {
			if _, err := tx.Put(record(fmt.Sprintf("key-%05d", i), "2026-01-01T00:00:00Z", i+1), always); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
}

// walk opens path read-only and decodes every record.
func walk(path string) error {
	db, err := index.Open(path, index.Options{ReadOnly: true})
	if err != nil {
		return err
	}
	defer db.Close()
	return db.View(func(tx *index.Tx) error {
		return tx.ForEach(func(string, *index.Record, error) error { return nil })
	})
}

// TestTruncatedFileIsCorruptNotSIGBUS: reading a mapping past the end of a
// truncated file would kill the process; it must be an error instead.
func TestTruncatedFileIsCorruptNotSIGBUS(t *testing.T) {
	path := filepath.Join(t.TempDir(), "index.db")
	fill(t, path, 3000)
	fi, _ := os.Stat(path)
	if err := os.Truncate(path, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	if err := walk(path); !errors.Is(err, index.ErrCorrupt) {
		t.Fatalf("walk of a truncated index = %v; want ErrCorrupt", err)
	}
}

// TestDamagedPageIsCorruptNotPanic zeroes data pages one at a time: a walk
// must return ErrCorrupt (or succeed, if the page was free), never crash.
func TestDamagedPageIsCorruptNotPanic(t *testing.T) {
	dir := t.TempDir()
	orig := filepath.Join(dir, "orig.db")
	fill(t, orig, 3000)
	data, _ := os.ReadFile(orig)
	pageSize := os.Getpagesize()
	corrupt := 0
	for pg := 2; pg*pageSize < len(data); pg += 29 {
		damaged := append([]byte{}, data...)
		clear(damaged[pg*pageSize : (pg+1)*pageSize])
		path := filepath.Join(dir, fmt.Sprintf("p%d.db", pg))
		os.WriteFile(path, damaged, 0o644)
		if err := walk(path); err != nil {
			if !errors.Is(err, index.ErrCorrupt) {
				t.Fatalf("page %d zeroed: %v; want ErrCorrupt", pg, err)
			}
			corrupt++
		}
	}
	if corrupt == 0 {
		t.Fatal("no damaged page was detected; the test damaged nothing that is read")
	}
}

func TestManifestRoundTrip(t *testing.T) {
	r := record("m", "2026-01-01T00:00:00Z", 5)
	r.LastUsed = "2026-02-01T00:00:00Z"
	data, err := index.EncodeManifest(r)
	if err != nil {
		t.Fatal(err)
	}
	if !index.IsManifest(data) {
		t.Fatal("manifest lacks its magic")
	}
	got, err := index.DecodeManifest(data)
	if err != nil {
		t.Fatal(err)
	}
	if got.Key != "m" || got.Image != r.Image || got.Manifest != (index.Blob{}) || got.LastUsed != "" {
		t.Fatalf("round trip = %+v", got)
	}
	if _, err := index.DecodeManifest([]byte("\x7fELF...")); err == nil {
		t.Fatal("DecodeManifest accepted an ELF file")
	}
}

// TestDyingBlobs: a blob released by a removal stays dying until Forget;
// Put refuses it meanwhile, and takes it over once the mark is abandoned.
func TestDyingBlobs(t *testing.T) {
	db := openRW(t, filepath.Join(t.TempDir(), "index.db"))
	a := record("a", "2026-01-01T00:00:00Z", 1)
	var released []string
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(db.Update(func(tx *index.Tx) error { _, err := tx.Put(a, always); return err }))
	must(db.Update(func(tx *index.Tx) error { var err error; released, err = tx.Delete("a"); return err }))
	if len(released) != 2 {
		t.Fatalf("released %v", released)
	}
	put := func() error {
		return db.Update(func(tx *index.Tx) error { _, err := tx.Put(record("b", "2026-01-02T00:00:00Z", 1), always); return err })
	}
	if err := put(); !errors.Is(err, index.ErrBlobDying) {
		t.Fatalf("Put of a dying blob = %v; want ErrBlobDying", err)
	}
	must(db.View(func(tx *index.Tx) error {
		dying, err := tx.DyingBlobs()
		if len(dying) != 2 {
			return fmt.Errorf("DyingBlobs = %v, %v", dying, err)
		}
		return err
	}))
	must(db.Update(func(tx *index.Tx) error { return tx.Forget(released) }))
	must(put())
	// A dying mark older than DyingAbandonAfter is taken over.
	must(db.Update(func(tx *index.Tx) error { _, err := tx.Delete("b"); return err }))
	old := index.DyingAbandonAfter
	index.DyingAbandonAfter = 0
	defer func() { index.DyingAbandonAfter = old }()
	must(put())
	must(db.View(func(tx *index.Tx) error {
		ref, ok, err := tx.Blob(digest(1))
		if !ok || ref.Refs != 1 || ref.Dying != "" {
			return fmt.Errorf("taken-over blob = %+v, %v, %v", ref, ok, err)
		}
		return err
	}))
}
