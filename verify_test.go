package kcache_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kcache/kcache"
	"github.com/kcache/kcache/index"
)

// damage rewrites a (read-only) blob file in place.
func damage(t *testing.T, path string, f func([]byte) []byte) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	bad := f(append([]byte{}, data...))
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	return bad
}

func storeSmall(t *testing.T, c *kcache.Cache, key string, content []byte) *kcache.Entry {
	t.Helper()
	e, err := c.Store(context.Background(), key, kcache.Artifacts{Image: writeFile(t, t.TempDir(), "bzImage", content)}, tarball)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func listKinds(t *testing.T, c *kcache.Cache) map[string]string {
	t.Helper()
	l, err := c.List(context.Background(), kcache.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, le := range l.Entries {
		if le.Corrupt != nil {
			out[le.Key] = le.Corrupt.Kind
		} else {
			out[le.Key] = "ok"
		}
	}
	return out
}

// A flipped byte keeps the size, but the write moved the file's ctime away
// from the one the index recorded, so the default verify re-hashes that
// blob and finds it too; a truncated blob is caught by the size check. Both
// are quarantined (with their damaged bytes) and the entries listed as
// corrupt with the persisted kind. A truncated blob is blob_mismatch (the
// file is there, its content is wrong); the kind found first is kept, so the
// second (deep) run, which finds the files gone, does not turn it into
// blob_missing.
func TestVerifyQuarantinesAndMarks(t *testing.T) {
	c, root := newCache(t)
	flip := storeSmall(t, c, "flip", []byte(strings.Repeat("flip image ", 100)))
	trunc := storeSmall(t, c, "trunc", []byte(strings.Repeat("trunc image ", 100)))
	storeSmall(t, c, "good", []byte(strings.Repeat("good image ", 100)))
	flipped := damage(t, flip.ImagePath, func(b []byte) []byte { b[10] ^= 0xff; return b })
	truncated := damage(t, trunc.ImagePath, func(b []byte) []byte { return b[:len(b)/2] })

	rep, err := c.Verify(context.Background(), kcache.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Checked != 6 || rep.Deep || len(rep.Problems) != 2 {
		t.Fatalf("default verify = %+v; want 6 blobs checked and both damaged images", rep)
	}
	if p := rep.Problems[0]; p.Key != "flip" || p.ErrorKind != index.CorruptBlobMismatch || !strings.Contains(p.Detail, "changed after it was stored") {
		t.Errorf("problem = %+v; want the flipped image, found by its ctime", p)
	} else if data, err := os.ReadFile(p.QuarantinedTo); err != nil || string(data) != string(flipped) {
		t.Errorf("flipped blob quarantined to %q: %v", p.QuarantinedTo, err)
	}
	p := rep.Problems[1]
	if p.Key != "trunc" || p.Role != kcache.RoleImage || p.ErrorKind != index.CorruptBlobMismatch || p.Digest != trunc.Image.Digest {
		t.Errorf("problem = %+v", p)
	}
	if got, err := os.ReadFile(p.QuarantinedTo); err != nil || string(got) != string(truncated) ||
		filepath.Dir(p.QuarantinedTo) != filepath.Join(root, "quarantine") || !strings.HasSuffix(p.QuarantinedTo, "-"+trunc.Image.Digest) {
		t.Errorf("quarantined to %q (err %v); want the truncated bytes in quarantine/<time>-<digest>", p.QuarantinedTo, err)
	}
	if _, err := os.Stat(trunc.ImagePath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("truncated blob still in the blob directory: %v", err)
	}

	var calls, lastTotal int
	rep, err = c.Verify(context.Background(), kcache.VerifyOptions{Deep: true, Progress: func(done, total int) { calls, lastTotal = done, total }})
	if err != nil {
		t.Fatal(err)
	}
	if calls != 6 || lastTotal != 6 {
		t.Errorf("progress ended at %d/%d; want 6/6", calls, lastTotal)
	}
	got := map[string]string{}
	for _, p := range rep.Problems {
		got[p.Key+"/"+p.Role] = p.ErrorKind
	}
	if fmt.Sprint(got) != "map[flip/image:blob_missing trunc/image:blob_missing]" {
		t.Errorf("deep verify problems = %v", got)
	}
	if kinds := fmt.Sprint(listKinds(t, c)); kinds != "map[flip:blob_mismatch good:ok trunc:blob_mismatch]" {
		t.Errorf("list after verify = %s", kinds)
	}
	if _, err := c.Lookup(context.Background(), "flip"); !errors.Is(err, kcache.ErrCorruptEntry) || !strings.Contains(err.Error(), "blob_mismatch") {
		t.Errorf("Lookup(flip) = %v; want a corrupt entry (blob_mismatch)", err)
	}

	// Storing the key again writes a fresh record without the mark.
	storeSmall(t, c, "flip", []byte(strings.Repeat("flip image ", 100)))
	if _, err := c.Lookup(context.Background(), "flip"); err != nil {
		t.Errorf("Lookup after storing again: %v", err)
	}
	if _, err := c.Verify(context.Background(), kcache.VerifyOptions{Keys: []string{"nope"}}); !errors.Is(err, kcache.ErrNotFound) {
		t.Errorf("Verify of a missing key = %v; want ErrNotFound", err)
	}
	rep, err = c.Verify(context.Background(), kcache.VerifyOptions{Keys: []string{"good", "flip"}, Deep: true})
	if err != nil || len(rep.Problems) != 0 || rep.Checked != 4 {
		t.Errorf("Verify(good, flip) = %+v, %v; want 4 good blobs", rep, err)
	}
}

// A damaged manifest does not make the entry unusable: verify rewrites it
// from the index record (same bytes, same digest).
func TestVerifyRewritesDamagedManifest(t *testing.T) {
	c, _ := newCache(t)
	e := storeSmall(t, c, "k", []byte("an image"))
	path := c.BlobPath(e.Manifest.Digest)
	orig, _ := os.ReadFile(path)
	damage(t, path, func(b []byte) []byte { b[len(b)-1] ^= 1; return b })
	rep, err := c.Verify(context.Background(), kcache.VerifyOptions{Deep: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 1 || !rep.Problems[0].Repaired || rep.Problems[0].Role != kcache.RoleManifest {
		t.Fatalf("problems = %+v; want one repaired manifest", rep.Problems)
	}
	if got, err := os.ReadFile(path); err != nil || string(got) != string(orig) {
		t.Errorf("manifest not restored: %v", err)
	}
	if _, err := c.Lookup(context.Background(), "k"); err != nil {
		t.Errorf("entry unusable after a manifest repair: %v", err)
	}
}
