package kcache_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"testing"

	"github.com/kcache/kcache"
	"github.com/kcache/kcache/internal/s3test"
)

// A local blob written in place since it was stored (as through a hard
// link) is not taken as present by pull: pull hashes it, downloads the
// object and replaces the file, so the pulled entry, and the local one
// sharing the blob, serve the right bytes.
func TestSafetyPullReplacesBlobWrittenInPlace(t *testing.T) {
	srv := s3test.Start(t)
	r := openRemote(t, srv, "")
	a, _ := newCache(t)
	e := storeKernel(t, a, "k1", "image ", "", tarball)
	if _, err := a.Push(bg, r, "k1", kcache.TransferOptions{}); err != nil {
		t.Fatal(err)
	}
	b, _ := newCache(t)
	local := storeKernel(t, b, "k2", "image ", "", tarball)
	path := local.ImagePath
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[100] ^= 0x40
	if os.Geteuid() != 0 {
		if err := os.Chmod(path, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()

	rep, err := b.Pull(bg, r, "k1", kcache.TransferOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Blobs[0].Transferred {
		t.Errorf("pull reused the damaged local image: %+v", rep.Blobs)
	}
	for _, k := range []string{"k1", "k2"} {
		got, err := b.Lookup(context.Background(), k)
		if err != nil {
			t.Fatalf("lookup %s: %v", k, err)
		}
		data, err := os.ReadFile(got.ImagePath)
		if err != nil {
			t.Fatal(err)
		}
		if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != e.Image.Digest {
			t.Errorf("%s serves bytes that hash to %x, want %s", k, sum, e.Image.Digest)
		}
	}
}
