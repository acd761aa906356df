package kcache_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/kcache/kcache"
	"github.com/kcache/kcache/index"
)

var tarball = kcache.Metadata{Source: kcache.Source{Type: "tarball"}, Arch: "x86_64", ImageName: "bzImage"}

// blobFiles lists the digests of every blob file under root.
func blobFiles(t testing.TB, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(filepath.Join(root, "blobs"), func(p string, d os.DirEntry, err error) error {
		if errors.Is(err, os.ErrNotExist) {
			return filepath.SkipAll
		}
		if err == nil && !d.IsDir() {
			out = append(out, d.Name())
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func newCache(t testing.TB) (*kcache.Cache, string) {
	t.Helper()
	root := filepath.Join(t.TempDir(), "cache")
	var warn bytes.Buffer
	return mustOpen(root, &kcache.Options{Logger: warnLogger(&warn)}), root
}

func TestStoreLookupRoundTrip(t *testing.T) {
	c, _ := newCache(t)
	src := t.TempDir()
	image := bytes.Repeat([]byte("image-bytes "), 5000)
	vmlinux := append([]byte("\x7fELF"), bytes.Repeat([]byte{1, 2, 3}, 9000)...)
	img := writeFile(t, src, "bzImage", image)
	vml := writeFile(t, src, "vmlinux", vmlinux)
	meta := tarball
	meta.Version = ptr("6.14.2")
	meta.BuiltAt = "2026-04-18T12:00:00+02:00"
	if _, err := c.Store(context.Background(), "k1", kcache.Artifacts{Image: img, Vmlinux: vml}, meta); err != nil {
		t.Fatal(err)
	}
	e, err := c.Lookup(context.Background(), "k1")
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string][]byte{e.ImagePath: image, e.VmlinuxPath: vmlinux, img: image, vml: vmlinux} {
		got, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: content differs from what was stored (err %v)", path, err)
		}
	}
	if e.BuiltAt != "2026-04-18T10:00:00Z" || *e.Version != "6.14.2" || !e.HasVmlinux || e.VmlinuxStripped {
		t.Errorf("record = %+v", e.Record)
	}
	if e.ImagePath == img || !strings.HasPrefix(e.ImagePath, c.Root()) {
		t.Errorf("image path %s is not inside the cache", e.ImagePath)
	}
}

func TestStoreDeduplicatesAndRemoveReleases(t *testing.T) {
	c, root := newCache(t)
	src := t.TempDir()
	img := writeFile(t, src, "bzImage", []byte("shared image"))
	ctx := context.Background()
	a, err := c.Store(ctx, "a", kcache.Artifacts{Image: img}, tarball)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Store(ctx, "b", kcache.Artifacts{Image: img}, tarball)
	if err != nil {
		t.Fatal(err)
	}
	if a.ImagePath != b.ImagePath {
		t.Fatalf("same image stored twice: %s vs %s", a.ImagePath, b.ImagePath)
	}
	// one image blob plus one manifest per entry
	if got := blobFiles(t, root); len(got) != 3 {
		t.Fatalf("blob files = %v; want the shared image and two manifests", got)
	}
	if err := c.Remove(ctx, "a", kcache.RemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(b.ImagePath); err != nil {
		t.Fatalf("removing a deleted the image b still uses: %v", err)
	}
	if _, err := c.Lookup(ctx, "a"); !errors.Is(err, kcache.ErrNotFound) {
		t.Fatalf("Lookup(a) after rm = %v; want ErrNotFound", err)
	}
	if err := c.Remove(ctx, "b", kcache.RemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := blobFiles(t, root); len(got) != 0 {
		t.Fatalf("blob files after removing both = %v; want none", got)
	}
	if err := c.Remove(ctx, "b", kcache.RemoveOptions{}); !errors.Is(err, kcache.ErrNotFound) {
		t.Fatalf("second Remove(b) = %v; want ErrNotFound", err)
	}
}

func TestStoreReplaceReleasesOldBlobs(t *testing.T) {
	c, root := newCache(t)
	src := t.TempDir()
	ctx := context.Background()
	old, err := c.Store(ctx, "k", kcache.Artifacts{Image: writeFile(t, src, "old", []byte("old image"))}, tarball)
	if err != nil {
		t.Fatal(err)
	}
	other, err := c.Store(ctx, "other", kcache.Artifacts{Image: writeFile(t, src, "o", []byte("other image"))}, tarball)
	if err != nil {
		t.Fatal(err)
	}
	cur, err := c.Store(ctx, "k", kcache.Artifacts{Image: writeFile(t, src, "new", []byte("new image"))}, tarball)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old.ImagePath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("old image blob survived the replacement: %v", err)
	}
	if _, err := os.Stat(c.BlobPath(old.Manifest.Digest)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("old manifest survived the replacement: %v", err)
	}
	want := []string{cur.Image.Digest, cur.Manifest.Digest, other.Image.Digest, other.Manifest.Digest}
	sort.Strings(want)
	if got := blobFiles(t, root); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("blob files = %v; want %v", got, want)
	}
	// Storing identical content again keeps every blob.
	if _, err := c.Store(ctx, "k", kcache.Artifacts{Image: writeFile(t, src, "new2", []byte("new image"))}, tarball); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cur.ImagePath); err != nil {
		t.Errorf("re-storing identical content removed its blob: %v", err)
	}
}

// TestManifestDescribesEntry: the manifest blob alone reproduces the record,
// which is what makes the index rebuildable.
func TestManifestDescribesEntry(t *testing.T) {
	c, _ := newCache(t)
	src := t.TempDir()
	meta := tarball
	meta.Version, meta.KconfigHash, meta.ConfigHash = ptr("6.1"), ptr("c0bd848c"), ptr("1f2e3d4c")
	e, err := c.Store(context.Background(), "m", kcache.Artifacts{
		Image: writeFile(t, src, "i", []byte("img")), Vmlinux: writeFile(t, src, "v", []byte("vml")),
	}, meta)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(c.BlobPath(e.Manifest.Digest))
	if err != nil {
		t.Fatal(err)
	}
	rec, err := index.DecodeManifest(data)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Key != "m" || rec.Image != e.Image || *rec.Vmlinux != *e.Vmlinux || *rec.KconfigHash != "c0bd848c" ||
		*rec.ConfigHash != "1f2e3d4c" || rec.BuiltAt != e.BuiltAt || rec.StoredAt != e.StoredAt {
		t.Errorf("manifest record %+v does not match entry %+v", rec, e.Record)
	}
}

func TestStoreRejectsBadMetadataBeforeTouchingDisk(t *testing.T) {
	c, root := newCache(t)
	img := writeFile(t, t.TempDir(), "bzImage", []byte("x"))
	bad := map[string]kcache.Metadata{}
	m := tarball
	m.Source.Type = "svn"
	bad["source type"] = m
	m = tarball
	m.Source.Ref = ptr("v6.1")
	bad["tarball source has no git hash, ref"] = m
	m = tarball
	m.KconfigHash = ptr("XYZ")
	bad["8 lowercase hex"] = m
	m = tarball
	m.BuiltAt = "yesterday"
	bad["RFC 3339"] = m
	m = tarball
	m.Arch = ""
	bad["arch is required"] = m
	m = tarball
	m.SourceVmlinuxSize = new(uint64)
	bad["set together"] = m
	for want, meta := range bad {
		if _, err := c.Store(context.Background(), "k", kcache.Artifacts{Image: img}, meta); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Store with bad metadata = %v; want an error containing %q", err, want)
		}
	}
	if _, err := c.Store(context.Background(), "k", kcache.Artifacts{Image: filepath.Join(root, "nope")}, tarball); err == nil || !strings.Contains(err.Error(), "open image") {
		t.Errorf("Store of a missing image = %v", err)
	}
	if _, err := c.Store(context.Background(), "k", kcache.Artifacts{Image: t.TempDir()}, tarball); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("Store of a directory as image = %v", err)
	}
	if _, err := os.Stat(root); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a refused store created the root")
	}
}

func TestListOrderAndCorruption(t *testing.T) {
	c, _ := newCache(t)
	src := t.TempDir()
	ctx := context.Background()
	for i, k := range []struct{ key, at string }{
		{"old", "2026-01-01T00:00:00Z"}, {"new-b", "2026-03-01T00:00:00Z"},
		{"new-a", "2026-03-01T00:00:00Z"}, {"mid", "2026-02-01T00:00:00Z"}, {"broken", "2026-12-01T00:00:00Z"},
	} {
		m := tarball
		m.BuiltAt = k.at
		if _, err := c.Store(ctx, k.key, kcache.Artifacts{Image: writeFile(t, src, k.key, []byte{byte(i), 'x'})}, m); err != nil {
			t.Fatal(err)
		}
	}
	e, err := c.Lookup(ctx, "broken")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(e.ImagePath); err != nil {
		t.Fatal(err)
	}
	l, err := c.List(ctx, kcache.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, le := range l.Entries {
		keys = append(keys, le.Key)
	}
	if got, want := strings.Join(keys, " "), "new-a new-b mid old broken"; got != want {
		t.Errorf("list order = %q; want %q", got, want)
	}
	last := l.Entries[len(l.Entries)-1]
	if last.Corrupt == nil || last.Corrupt.Kind != "image_missing" {
		t.Errorf("broken entry = %+v; want corrupt image_missing", last)
	}
	if _, err := c.Lookup(ctx, "broken"); !errors.Is(err, kcache.ErrCorruptEntry) || !strings.Contains(err.Error(), "image_missing") {
		t.Errorf("Lookup of a corrupt entry = %v", err)
	}
	newest, err := c.Newest(ctx, 2)
	if err != nil || strings.Join(newest, " ") != "broken new-b" {
		t.Errorf("Newest(2) = %v, %v; want [broken new-b] (by_time order, ties reverse key)", newest, err)
	}
}

func TestUnstrippedLookupWarnsEveryTime(t *testing.T) {
	root := filepath.Join(t.TempDir(), "c")
	var warn bytes.Buffer
	c := mustOpen(root, &kcache.Options{Logger: warnLogger(&warn)})
	src := t.TempDir()
	if _, err := c.Store(context.Background(), "k", kcache.Artifacts{
		Image: writeFile(t, src, "i", []byte("i")), Vmlinux: writeFile(t, src, "v", []byte("v")),
	}, tarball); err != nil {
		t.Fatal(err)
	}
	warn.Reset()
	for range 3 {
		if _, err := c.Lookup(context.Background(), "k"); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(warn.String(), "unstripped"); n != 3 {
		t.Errorf("3 lookups printed %d unstripped warnings: %q", n, warn.String())
	}
}
