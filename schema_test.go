package kcache_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kcache/kcache"
	"github.com/kcache/kcache/index"
	bolt "go.etcd.io/bbolt"
)

// downgradeToV1 turns the index at root into what kcache with schema 1
// wrote: schema_version 1 and no stats bucket (schema 1 created it lazily).
// Records, refs and pins were the same then.
func downgradeToV1(t *testing.T, root string) []byte {
	t.Helper()
	path := filepath.Join(root, "index.db")
	b, err := bolt.Open(path, 0o644, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = b.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket([]byte("stats")); err != nil {
			return err
		}
		return tx.Bucket([]byte("meta")).Put([]byte("schema_version"), binary.BigEndian.AppendUint32(nil, 1))
	})
	if cerr := b.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func schemaOf(t *testing.T, root string) uint32 {
	t.Helper()
	db, err := index.Open(filepath.Join(root, "index.db"), index.Options{ReadOnly: true, ReadOld: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v uint32
	if err := db.View(func(tx *index.Tx) error { v, _ = tx.Schema(); return nil }); err != nil {
		t.Fatalf("schema of %s: %v", root, err)
	}
	return v
}

func storeTwo(t *testing.T, c *kcache.Cache) {
	t.Helper()
	src := t.TempDir()
	for i, k := range []string{"k1", "k2"} {
		img := writeFile(t, src, k, []byte("image "+k))
		m := tarball
		m.BuiltAt = []string{"2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"}[i]
		if _, err := c.Store(context.Background(), k, kcache.Artifacts{Image: img}, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Pin(context.Background(), "k1", "keep"); err != nil {
		t.Fatal(err)
	}
}

// A schema 1 index opens through the library: a read-only cache reads it as
// it is (no upgrade, no backup); any other open upgrades it to schema 2,
// keeping index.db.v1.bak equal to the old bytes, with every entry and pin
// intact. Doctor does not take the backup for a foreign file.
func TestSchemaV1IndexUpgradedOnOpen(t *testing.T) {
	c, root := newCache(t)
	storeTwo(t, c)
	old := downgradeToV1(t, root)
	bak := filepath.Join(root, "index.db.v1.bak")

	ro := mustOpen(root, &kcache.Options{ReadOnly: true})
	l, err := ro.List(context.Background(), kcache.ListOptions{})
	if err != nil {
		t.Fatalf("read-only list of a v1 index: %v", err)
	}
	if len(l.Entries) != 2 || l.Entries[0].Key != "k2" || l.Entries[1].Entry == nil || !l.Entries[1].Entry.Pinned {
		t.Fatalf("read-only list of a v1 index: %+v", l.Entries)
	}
	if _, err := ro.Stats(context.Background()); err != nil {
		t.Fatalf("read-only stats of a v1 index: %v", err)
	}
	if _, err := os.Stat(bak); !errors.Is(err, os.ErrNotExist) || schemaOf(t, root) != 1 {
		t.Fatal("a read-only cache upgraded the index")
	}

	var warn bytes.Buffer
	c = mustOpen(root, &kcache.Options{Logger: warnLogger(&warn)})
	l, err = c.List(context.Background(), kcache.ListOptions{})
	if err != nil {
		t.Fatalf("list of a v1 index: %v", err)
	}
	if len(l.Entries) != 2 || l.Entries[0].Key != "k2" || l.Entries[1].Key != "k1" || !l.Entries[1].Entry.Pinned || l.Entries[0].Entry.BuiltAt != "2026-02-01T00:00:00Z" {
		t.Fatalf("list after the upgrade: %+v", l.Entries)
	}
	if v := schemaOf(t, root); v != index.SchemaVersion {
		t.Fatalf("schema %d after list, want %d", v, index.SchemaVersion)
	}
	if got, err := os.ReadFile(bak); err != nil || !bytes.Equal(got, old) {
		t.Fatalf("%s is not the v1 file byte for byte: %v", bak, err)
	}
	if !strings.Contains(warn.String(), "from schema 1 to 2") || !strings.Contains(warn.String(), bak) {
		t.Errorf("no upgrade notice: %q", warn.String())
	}
	for _, k := range []string{"k1", "k2"} {
		if _, err := c.Lookup(context.Background(), k); err != nil {
			t.Errorf("lookup %s after the upgrade: %v", k, err)
		}
	}
	if err := c.Remove(context.Background(), "k2", kcache.RemoveOptions{}); err != nil { // counts an eviction: the stats bucket is there
		t.Fatal(err)
	}
	rep, err := c.Doctor(context.Background(), kcache.DoctorOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range rep.Foreign {
		if f.Path == bak {
			t.Errorf("doctor calls the upgrade backup foreign")
		}
	}
}

// doctor --rebuild-index on a v1 index upgrades it first and carries its
// pins and counters over.
func TestSchemaV1RebuildIndex(t *testing.T) {
	c, root := newCache(t)
	storeTwo(t, c)
	downgradeToV1(t, root)
	rep, err := c.Doctor(context.Background(), kcache.DoctorOptions{RebuildIndex: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Rebuild == nil || rep.Rebuild.OldIndex != "readable" || !rep.Rebuild.CarriedOver || rep.Rebuild.Entries != 2 {
		t.Fatalf("rebuild of a v1 index: %+v", rep.Rebuild)
	}
	if schemaOf(t, root) != index.SchemaVersion {
		t.Fatal("the rebuilt index is not current")
	}
	e, err := c.Describe(context.Background(), "k1")
	if err != nil || !e.Pinned {
		t.Fatalf("k1 after rebuilding a v1 index: %+v %v", e, err)
	}
}
