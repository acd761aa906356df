package migrate_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kcache/kcache/index"
	"github.com/kcache/kcache/migrate"
	"github.com/vmihailenco/msgpack/v5"
	bolt "go.etcd.io/bbolt"
)

func TestStepsReachSchemaVersion(t *testing.T) {
	for i, s := range migrate.Steps {
		if s.From != uint32(i+1) || s.Apply == nil || s.What == "" {
			t.Errorf("step %d is from %d (want %d) or incomplete", i, s.From, i+1)
		}
	}
	if last := migrate.Steps[len(migrate.Steps)-1].From + 1; last != index.SchemaVersion {
		t.Errorf("the steps end at schema %d, index.SchemaVersion is %d", last, index.SchemaVersion)
	}
}

func digest(c byte) string { return strings.Repeat(string(c), 64) }

// writeV1 builds a schema 1 index with bbolt directly, as kcache 1 wrote
// it: buckets meta, entries, by_time, blobs, pins (stats only when
// withStats, as schema 1 created it on the first counted event), two
// entries in the record encoding of the time.
func writeV1(t *testing.T, path string, withStats bool) {
	t.Helper()
	db, err := bolt.Open(path, 0o644, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		names := []string{"meta", "entries", "by_time", "blobs", "pins"}
		if withStats {
			names = append(names, "stats")
		}
		for _, n := range names {
			if _, err := tx.CreateBucket([]byte(n)); err != nil {
				return err
			}
		}
		m := tx.Bucket([]byte("meta"))
		if err := m.Put([]byte("schema_version"), binary.BigEndian.AppendUint32(nil, 1)); err != nil {
			return err
		}
		if err := m.Put([]byte("created_at"), []byte("2026-01-01T00:00:00Z")); err != nil {
			return err
		}
		if withStats {
			if err := tx.Bucket([]byte("stats")).Put([]byte(index.StatEvictions), binary.BigEndian.AppendUint64(nil, 7)); err != nil {
				return err
			}
		}
		v := "6.14.2"
		for i, key := range []string{"k1", "k2"} {
			rec := index.Record{
				Key: key, Version: &v, Source: index.Source{Type: "tarball"}, Arch: "x86_64",
				ImageName: "bzImage", BuiltAt: "2026-04-1" + string(rune('0'+i)) + "T10:00:00Z",
				Image: index.Blob{Digest: digest('a' + byte(i)), Size: 4}, StoredAt: "2026-04-18T10:00:00Z",
				Manifest: index.Blob{Digest: digest('m' + byte(i)), Size: 9},
			}
			val, err := msgpack.Marshal(&rec)
			if err != nil {
				return err
			}
			if err := tx.Bucket([]byte("entries")).Put([]byte(key), val); err != nil {
				return err
			}
			if err := tx.Bucket([]byte("by_time")).Put(append(append([]byte(rec.BuiltAt), 0), key...), nil); err != nil {
				return err
			}
			for _, d := range rec.Digests() {
				ref, _ := msgpack.Marshal(&struct {
					Size int64 `msgpack:"size"`
					Refs int64 `msgpack:"refs"`
				}{4, 1}) // a v1-era blob ref: no "dying" key
				if err := tx.Bucket([]byte("blobs")).Put([]byte(d), ref); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Step 1→2: a schema 1 file (with and without a lazily created stats bucket)
// becomes schema 2 with a stats bucket, its records, refs and counters
// intact, and the old bytes are kept in index.db.v1.bak.
func TestUpgrade1To2(t *testing.T) {
	for _, withStats := range []bool{false, true} {
		path := filepath.Join(t.TempDir(), "index.db")
		writeV1(t, path, withStats)
		old, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := index.Open(path, index.Options{}); !errors.Is(err, index.ErrSchemaOld) {
			t.Fatalf("read-write open of a v1 file: %v, want ErrSchemaOld", err)
		}
		if _, err := index.Open(path, index.Options{ReadOnly: true}); !errors.Is(err, index.ErrSchemaOld) {
			t.Fatalf("read-only open of a v1 file without ReadOld: %v, want ErrSchemaOld", err)
		}
		ro, err := index.Open(path, index.Options{ReadOnly: true, ReadOld: true})
		if err != nil {
			t.Fatalf("read-only open of a v1 file with ReadOld: %v", err)
		}
		_ = ro.Close()

		res, err := migrate.Upgrade(path, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		bak := path + ".v1.bak"
		if res.From != 1 || res.To != 2 || len(res.Backups) != 1 || res.Backups[0] != bak {
			t.Fatalf("result %+v", res)
		}
		if got, err := os.ReadFile(bak); err != nil || !bytes.Equal(got, old) {
			t.Fatalf("backup %s is not the old file byte for byte (%v)", bak, err)
		}
		db, err := index.Open(path, index.Options{})
		if err != nil {
			t.Fatalf("open after the upgrade: %v", err)
		}
		err = db.Update(func(tx *index.Tx) error {
			if v, _ := tx.Schema(); v != 2 {
				t.Errorf("schema %d after the upgrade", v)
			}
			if tx.Count() != 2 {
				t.Errorf("%d entries after the upgrade", tx.Count())
			}
			rec, err := tx.Get("k2")
			if err != nil || *rec.Version != "6.14.2" || rec.Image.Digest != digest('b') || rec.Corrupt != nil {
				t.Errorf("k2 after the upgrade: %+v %v", rec, err)
			}
			if ref, ok, err := tx.Blob(digest('a')); !ok || err != nil || ref.Refs != 1 || ref.Dying != "" {
				t.Errorf("blob ref after the upgrade: %+v %v %v", ref, ok, err)
			}
			want := int64(0)
			if withStats {
				want = 7
			}
			if got := tx.Stats()[index.StatEvictions]; got != want {
				t.Errorf("evictions %d, want %d", got, want)
			}
			return tx.AddStat(index.StatGCRuns, 1) // the bucket exists now
		})
		if err != nil {
			t.Fatal(err)
		}
		_ = db.Close()

		// Upgrading a current file does nothing and writes no backup.
		os.Remove(bak)
		if res, err := migrate.Upgrade(path, time.Second); err != nil || res.From != 2 || res.To != 2 || len(res.Backups) != 0 {
			t.Fatalf("second upgrade: %+v %v", res, err)
		}
		if _, err := os.Stat(bak); !errors.Is(err, os.ErrNotExist) {
			t.Error("a no-op upgrade wrote a backup")
		}
	}
}

// A step that fails leaves the file at its old version, unchanged.
func TestFailedStepRollsBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "index.db")
	writeV1(t, path, false)
	u, err := index.OpenUpgrade(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	err = u.Step(1, func(tx *index.UpgradeTx) error {
		if _, err := tx.Bolt().CreateBucket([]byte("stats")); err != nil {
			return err
		}
		return errors.New("boom")
	})
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("step error %v", err)
	}
	// A step that forgets a bucket of the new schema is refused too.
	if err := u.Step(1, func(*index.UpgradeTx) error { return nil }); err == nil || !errors.Is(err, index.ErrCorrupt) {
		t.Fatalf("a step that leaves the stats bucket out: %v", err)
	}
	if v, err := u.Version(); err != nil || v != 1 {
		t.Fatalf("version %d %v after failed steps", v, err)
	}
	_ = u.Close()
}

// A file from a newer kcache is refused, naming both versions.
func TestUpgradeRefusesNewer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "index.db")
	db, err := index.Open(path, index.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	b, err := bolt.Open(path, 0o644, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = b.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("meta")).Put([]byte("schema_version"), binary.BigEndian.AppendUint32(nil, index.SchemaVersion+1))
	})
	_ = b.Close()
	if err != nil {
		t.Fatal(err)
	}
	_, err = migrate.Upgrade(path, time.Second)
	if !errors.Is(err, index.ErrSchemaTooNew) || !strings.Contains(err.Error(), "schema 3") || !strings.Contains(err.Error(), "schema 2") || !strings.Contains(err.Error(), "upgrade kcache") {
		t.Fatalf("upgrade of a newer file: %v", err)
	}
}
