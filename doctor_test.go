package kcache_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/kcache/kcache"
	"github.com/kcache/kcache/index"
)

// fill stores n entries with varied metadata (some with a vmlinux, git and
// local sources, versions, hashes) and returns their records by key.
func fill(t *testing.T, c *kcache.Cache, n int) map[string]index.Record {
	t.Helper()
	src := t.TempDir()
	for i := range n {
		m := tarball
		m.BuiltAt = fmt.Sprintf("2026-0%d-%02dT10:00:00Z", 1+i%9, 1+i%28)
		switch i % 3 {
		case 0:
			m.Version = ptr(fmt.Sprintf("6.%d.%d", i/10, i%10))
			m.ConfigHash = ptr(fmt.Sprintf("%08x", i))
		case 1:
			m.Source = kcache.Source{Type: "git", GitHash: ptr(fmt.Sprintf("%040x", i)), Ref: ptr("main")}
			m.KconfigHash = ptr(fmt.Sprintf("%08x", i*7))
		case 2:
			m.Source = kcache.Source{Type: "local", SourceTreePath: ptr("/src/linux")}
		}
		art := kcache.Artifacts{Image: writeFile(t, src, fmt.Sprintf("img%d", i), []byte(fmt.Sprintf("image %d", i)))}
		if i%4 == 0 {
			art.Vmlinux = writeFile(t, src, fmt.Sprintf("vml%d", i), []byte(fmt.Sprintf("not an ELF %d", i)))
		}
		if _, err := c.Store(context.Background(), fmt.Sprintf("k%03d", i), art, m); err != nil {
			t.Fatal(err)
		}
	}
	return records(t, c)
}

// records lists the usable entries' records, without the fields a rebuild
// cannot know when the old index is lost (last_used).
func records(t *testing.T, c *kcache.Cache) map[string]index.Record {
	t.Helper()
	l, err := c.List(context.Background(), kcache.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]index.Record{}
	for _, le := range l.Entries {
		if le.Corrupt != nil {
			t.Fatalf("entry %s is corrupt: %v", le.Key, le.Corrupt)
		}
		r := le.Entry.Record
		r.LastUsed = ""
		out[le.Key] = r
	}
	return out
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDoctorRebuildRestoresEveryEntry(t *testing.T) {
	for _, tc := range []string{"deleted", "garbage", "readable"} {
		t.Run(tc, func(t *testing.T) {
			c, root := newCache(t)
			want := fill(t, c, 100)
			if err := c.Pin(context.Background(), "k007", "bisect"); err != nil {
				t.Fatal(err)
			}
			switch tc {
			case "deleted":
				if err := os.Remove(c.IndexPath()); err != nil {
					t.Fatal(err)
				}
			case "garbage":
				garbage := make([]byte, 64<<10)
				_, _ = rand.Read(garbage)
				if err := os.WriteFile(c.IndexPath(), garbage, 0o644); err != nil {
					t.Fatal(err)
				}
				_, errList := c.List(context.Background(), kcache.ListOptions{})
				_, errLookup := c.Lookup(context.Background(), "k001")
				_, errStore := c.Store(context.Background(), "new", kcache.Artifacts{Image: writeFile(t, t.TempDir(), "i", []byte("x"))}, tarball)
				for name, err := range map[string]error{"list": errList, "lookup": errLookup, "store": errStore} {
					// The error carries the file as data (the CLI adds the
					// doctor command as its hint).
					var ice *kcache.IndexCorruptError
					if !errors.Is(err, kcache.ErrIndexCorrupt) || !strings.Contains(err.Error(), c.IndexPath()) ||
						!errors.As(err, &ice) || ice.Path != c.IndexPath() {
						t.Errorf("%s on a garbage index = %v; want an *IndexCorruptError for %s", name, err, c.IndexPath())
					}
				}
			}
			rep, err := c.Doctor(context.Background(), kcache.DoctorOptions{RebuildIndex: true})
			if err != nil {
				t.Fatal(err)
			}
			rb := rep.Rebuild
			if rb.Entries != 100 || rb.Manifests != 100 || len(rb.BadManifests) != 0 || len(rb.CorruptKeys) != 0 {
				t.Errorf("rebuild = %+v", rb)
			}
			if !rep.Healthy() {
				t.Errorf("doctor after rebuild is not healthy: %+v", rep)
			}
			got := records(t, c)
			if len(got) != len(want) {
				t.Fatalf("rebuilt %d entries, want %d", len(got), len(want))
			}
			for k, w := range want {
				if g := got[k]; !reflect.DeepEqual(g, w) {
					t.Errorf("entry %s rebuilt as\n%+v\nwant\n%+v", k, g, w)
				}
			}
			e, err := c.Lookup(context.Background(), "k007")
			if err != nil {
				t.Fatal(err)
			}
			if pinned := tc == "readable"; e.Pinned != pinned || rb.CarriedOver != pinned {
				t.Errorf("pinned = %v, carried over = %v after a rebuild from a %s index", e.Pinned, rb.CarriedOver, tc)
			}
			if _, err := os.Stat(c.IndexPath() + ".bak"); (err == nil) != (tc != "deleted") {
				t.Errorf("index.db.bak: %v", err)
			}
			// Refcounts are right: removing every entry leaves no blob.
			for k := range want {
				if err := c.Remove(context.Background(), k, kcache.RemoveOptions{Force: true}); err != nil {
					t.Fatal(err)
				}
			}
			if left := blobFiles(t, root); len(left) != 0 {
				t.Errorf("%d blobs left after removing every rebuilt entry", len(left))
			}
		})
	}
}

// A manifest of a replaced entry that survived as an orphan loses to the
// newer one.
func TestDoctorRebuildNewestManifestWins(t *testing.T) {
	c, _ := newCache(t)
	old := storeSmall(t, c, "k", []byte("old image"))
	oldManifest := readFile(t, c.BlobPath(old.Manifest.Digest))
	oldImage := readFile(t, old.ImagePath)
	newer := storeSmall(t, c, "k", []byte("new image"))
	for p, data := range map[string][]byte{c.BlobPath(old.Manifest.Digest): oldManifest, old.ImagePath: oldImage} {
		_ = os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, data, 0o444); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Remove(c.IndexPath()); err != nil {
		t.Fatal(err)
	}
	rep, err := c.Doctor(context.Background(), kcache.DoctorOptions{RebuildIndex: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Rebuild.Entries != 1 || rep.Rebuild.Superseded != 1 || len(rep.Orphans) != 2 {
		t.Errorf("rebuild = %+v, orphans %+v; want 1 entry, 1 superseded, 2 orphans (old image and manifest)", rep.Rebuild, rep.Orphans)
	}
	e, err := c.Lookup(context.Background(), "k")
	if err != nil || e.Image.Digest != newer.Image.Digest {
		t.Errorf("Lookup after rebuild = %+v, %v; want the newer entry", e, err)
	}
}

func TestDoctorHealthyChangesNothing(t *testing.T) {
	c, root := newCache(t)
	fill(t, c, 5)
	before := snapshotTree(t, root)
	for _, opt := range []kcache.DoctorOptions{{}, {DryRun: true}, {DryRun: true, RebuildIndex: true, Compact: true}} {
		rep, err := c.Doctor(context.Background(), opt)
		if err != nil {
			t.Fatal(err)
		}
		if !rep.Healthy() || (rep.Compact != nil && rep.Compact.Compacted) {
			t.Errorf("Doctor(%+v) on a healthy cache = %+v", opt, rep)
		}
		before.diff(t, snapshotTree(t, root), fmt.Sprintf("Doctor(%+v)", opt))
	}
}

func TestDoctorQuarantinesForeignFilesAndMarksMissingBlobs(t *testing.T) {
	c, root := newCache(t)
	fill(t, c, 3)
	e, err := c.Lookup(context.Background(), "k001")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(e.ImagePath); err != nil {
		t.Fatal(err)
	}
	foreign := []string{
		filepath.Join(root, "notes.txt"),
		filepath.Join(root, "blobs", "stray"),
		filepath.Join(root, "blobs", "sha256", "ab", "not-a-blob"),
	}
	for _, p := range foreign {
		_ = os.MkdirAll(filepath.Dir(p), 0o755)
		writeFile(t, filepath.Dir(p), filepath.Base(p), []byte("foreign "+p))
	}
	if err := os.Mkdir(filepath.Join(root, "olddir"), 0o755); err != nil {
		t.Fatal(err)
	}
	foreign = append(foreign, filepath.Join(root, "olddir"))
	sort.Strings(foreign)

	before := snapshotTree(t, root)
	dry, err := c.Doctor(context.Background(), kcache.DoctorOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	before.diff(t, snapshotTree(t, root), "doctor --dry-run")
	var paths []string
	for _, f := range dry.Foreign {
		paths = append(paths, f.Path)
		if f.QuarantinedTo != "" {
			t.Errorf("dry run reports %s as moved", f.Path)
		}
	}
	if fmt.Sprint(paths) != fmt.Sprint(foreign) {
		t.Errorf("dry run foreign = %v; want %v", paths, foreign)
	}
	if len(dry.Corrupt) != 1 || dry.Corrupt[0].Key != "k001" || dry.Corrupt[0].ErrorKind != index.CorruptBlobMissing {
		t.Errorf("dry run corrupt = %+v", dry.Corrupt)
	}

	rep, err := c.Doctor(context.Background(), kcache.DoctorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range rep.Foreign {
		if strings.HasSuffix(f.Path, "olddir") {
			// A directory kcache did not create is reported, never moved.
			if fi, err := os.Lstat(f.Path); err != nil || !fi.IsDir() || f.Kept == "" || f.QuarantinedTo != "" {
				t.Errorf("foreign directory %+v: not left in place (%v)", f, err)
			}
			continue
		}
		if _, err := os.Lstat(f.Path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there", f.Path)
		}
		if filepath.Dir(f.QuarantinedTo) != filepath.Join(root, "quarantine") {
			t.Errorf("%s moved to %s", f.Path, f.QuarantinedTo)
		}
		if fi, err := os.Lstat(f.QuarantinedTo); err != nil || fi.IsDir() {
			t.Errorf("quarantined %s: %v", f.QuarantinedTo, err)
		}
	}
	if len(rep.Foreign) != len(foreign) {
		t.Errorf("quarantined %d files, want %d", len(rep.Foreign), len(foreign))
	}
	if kinds := listKinds(t, c); kinds["k001"] != index.CorruptBlobMissing || kinds["k000"] != "ok" {
		t.Errorf("list after doctor = %v", kinds)
	}
	// A second run finds the entry still corrupt and the directory still
	// there, but changes nothing.
	before = snapshotTree(t, root)
	rep, err = c.Doctor(context.Background(), kcache.DoctorOptions{})
	if err != nil || len(rep.Foreign) != 1 || len(rep.Corrupt) != 1 {
		t.Errorf("second doctor = %+v, %v", rep, err)
	}
	before.diff(t, snapshotTree(t, root), "a second doctor")
}

// A file that is mostly free pages is compacted: smaller afterwards, same
// entries.
func TestDoctorCompact(t *testing.T) {
	c, _ := newCache(t)
	want := fill(t, c, 3)
	db, err := index.Open(c.IndexPath(), index.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Bloat the file with records of blobs that exist nowhere, then delete them.
	pad := strings.Repeat("x", 2000)
	err = db.Update(func(tx *index.Tx) error {
		for i := range 3000 {
			d := fmt.Sprintf("%064x", i+1)
			r := &index.Record{Key: fmt.Sprintf("pad%04d", i), Source: index.Source{Type: "tarball"}, Arch: pad,
				ImageName: "bzImage", BuiltAt: "2026-01-01T00:00:00Z", Image: index.Blob{Digest: d, Size: 1}}
			if _, err := tx.Put(r, func(string) bool { return true }); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		err = db.Update(func(tx *index.Tx) error {
			for i := range 3000 {
				if _, err := tx.Delete(fmt.Sprintf("pad%04d", i)); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	// The deleted blobs stay in the blobs bucket as dying; forget them.
	db, _ = index.Open(c.IndexPath(), index.Options{})
	_ = db.Update(func(tx *index.Tx) error {
		var ds []string
		for i := range 3000 {
			ds = append(ds, fmt.Sprintf("%064x", i+1))
		}
		return tx.Forget(ds)
	})
	_ = db.Close()

	rep, err := c.Doctor(context.Background(), kcache.DoctorOptions{Compact: true})
	if err != nil {
		t.Fatal(err)
	}
	cr := rep.Compact
	if !cr.Compacted || cr.After >= cr.Before || cr.FreeRatio < 0.5 {
		t.Errorf("compact = %+v; want a compaction to a smaller file", cr)
	}
	if fi, err := os.Stat(c.IndexPath()); err != nil || fi.Size() != cr.After {
		t.Errorf("index.db size %v, report says %d", fi, cr.After)
	}
	if got := records(t, c); !reflect.DeepEqual(got, want) {
		t.Errorf("entries changed by compaction")
	}
	rep, err = c.Doctor(context.Background(), kcache.DoctorOptions{Compact: true})
	if err != nil || rep.Compact.Compacted {
		t.Errorf("second compaction = %+v, %v; want none (nothing free)", rep.Compact, err)
	}
}
