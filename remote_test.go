package kcache_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kcache/kcache"
	"github.com/kcache/kcache/index"
	"github.com/kcache/kcache/internal/s3test"
	"github.com/kcache/kcache/remote"
	"github.com/kcache/kcache/remote/s3"
)

var bg = context.Background()

// openRemote connects to srv's bucket under prefix.
func openRemote(t *testing.T, srv *s3test.Server, prefix string) remote.Remote {
	t.Helper()
	r, err := s3.Open(srv.Config(prefix))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// storeKernel stores a kernel whose image and vmlinux are made of seed.
func storeKernel(t *testing.T, c *kcache.Cache, key, image, vmlinux string, meta kcache.Metadata) *kcache.Entry {
	t.Helper()
	src := t.TempDir()
	art := kcache.Artifacts{Image: writeFile(t, src, "bzImage", bytes.Repeat([]byte(image), 20000))}
	if vmlinux != "" {
		art.Vmlinux = writeFile(t, src, "vmlinux", bytes.Repeat([]byte(vmlinux), 30000))
	}
	e, err := c.Store(bg, key, art, meta)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// comparable is a record without what each cache sets for itself.
func comparable(r index.Record) index.Record {
	r.StoredAt, r.LastUsed, r.Manifest = "", "", index.Blob{}
	r.Source.SourceTreePath = nil
	return r
}

func TestPushPullRoundTrip(t *testing.T) {
	srv := s3test.Start(t)
	r := openRemote(t, srv, "team/x86")
	a, _ := newCache(t)
	b, rootB := newCache(t)

	local := kcache.Metadata{Source: kcache.Source{Type: "local", SourceTreePath: ptr("/home/dev/linux")},
		Arch: "x86_64", ImageName: "bzImage", Version: ptr("6.12.0"), ConfigHash: ptr("0badf00d"), BuiltAt: "2026-11-01T10:00:00Z"}
	e1 := storeKernel(t, a, "k1", "image one ", "vmlinux one ", local)

	rep, err := a.Push(bg, r, "k1", kcache.TransferOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := e1.Image.Size + e1.Vmlinux.Size
	if rep.Bytes != want || len(rep.Blobs) != 2 || !rep.Blobs[0].Transferred || !rep.Blobs[1].Transferred {
		t.Fatalf("first push: %+v, want both blobs, %d bytes", rep, want)
	}
	// The manifest object holds no local path.
	raw, err := os.ReadFile(srv.ObjectPath(t, "team/x86", remote.ManifestName("k1")))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte("/home/dev/linux")) {
		t.Error("the pushed manifest contains the local source tree path")
	}

	// Pulling into an empty cache gives the same entry with the same bytes.
	var progress []kcache.TransferProgress
	prep, err := b.Pull(bg, r, "k1", kcache.TransferOptions{Progress: func(p kcache.TransferProgress) { progress = append(progress, p) }})
	if err != nil {
		t.Fatal(err)
	}
	if prep.Bytes != want {
		t.Errorf("pull moved %d bytes, want %d", prep.Bytes, want)
	}
	if len(progress) == 0 || progress[len(progress)-1].Done != progress[len(progress)-1].Total {
		t.Errorf("progress reports %+v do not end complete", progress)
	}
	e2, err := b.Lookup(context.Background(), "k1")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := comparable(e2.Record), comparable(e1.Record); !equalRecords(got, want) {
		t.Errorf("pulled record differs:\n got %+v\nwant %+v", got, want)
	}
	if e2.Source.SourceTreePath != nil {
		t.Errorf("pulled entry has a source tree path %q", *e2.Source.SourceTreePath)
	}
	for _, p := range [][2]string{{e1.ImagePath, e2.ImagePath}, {e1.VmlinuxPath, e2.VmlinuxPath}} {
		x, _ := os.ReadFile(p[0])
		y, err := os.ReadFile(p[1])
		if err != nil || !bytes.Equal(x, y) {
			t.Errorf("%s and %s differ (%v)", p[0], p[1], err)
		}
	}
	if !strings.HasPrefix(e2.ImagePath, rootB) {
		t.Errorf("pulled image %s is not in cache B", e2.ImagePath)
	}

	// A second key sharing the image uploads only its vmlinux.
	e3 := storeKernel(t, a, "k2", "image one ", "vmlinux two ", tarball)
	rep, err = a.Push(bg, r, "k2", kcache.TransferOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Blobs[0].Transferred || !rep.Blobs[1].Transferred || rep.Bytes != e3.Vmlinux.Size {
		t.Errorf("push of a key sharing the image: %+v, want only the vmlinux (%d bytes)", rep, e3.Vmlinux.Size)
	}
	// Pushing an unchanged entry again moves no blob bytes; pulling an
	// entry that is already local installs nothing.
	if rep, err = a.Push(bg, r, "k1", kcache.TransferOptions{}); err != nil || rep.Bytes != 0 {
		t.Errorf("second push: %+v, %v; want 0 bytes", rep, err)
	}
	if rep, err = b.Pull(bg, r, "k1", kcache.TransferOptions{}); err != nil || !rep.UpToDate || rep.Bytes != 0 {
		t.Errorf("second pull: %+v, %v; want up to date", rep, err)
	}
	// k2 into B: its image is already there.
	if rep, err = b.Pull(bg, r, "k2", kcache.TransferOptions{}); err != nil || rep.Blobs[0].Transferred || rep.Bytes != e3.Vmlinux.Size {
		t.Errorf("pull of k2: %+v, %v; want only the vmlinux", rep, err)
	}

	entries, err := kcache.ListRemote(bg, r)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 || entries[0].Key != "k2" || entries[1].Key != "k1" || entries[1].Record == nil || *entries[1].Record.Version != "6.12.0" {
		t.Errorf("ListRemote = %+v, want k2 (newest) then k1", entries)
	}
}

func equalRecords(a, b index.Record) bool {
	x, err1 := index.EncodeManifest(&a)
	y, err2 := index.EncodeManifest(&b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}

func TestPullRejectsDamagedRemoteBlob(t *testing.T) {
	srv := s3test.Start(t)
	r := openRemote(t, srv, "")
	a, _ := newCache(t)
	e := storeKernel(t, a, "k1", "image ", "vmlinux ", tarball)
	if _, err := a.Push(bg, r, "k1", kcache.TransferOptions{}); err != nil {
		t.Fatal(err)
	}
	// Flip one byte of the vmlinux as a failing disk on the server would.
	p := srv.ObjectPath(t, "", remote.BlobName(e.Vmlinux.Digest))
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0x40
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}

	b, rootB := newCache(t)
	_, err = b.Pull(bg, r, "k1", kcache.TransferOptions{})
	if err == nil || !strings.Contains(err.Error(), "digest mismatch") || !strings.Contains(err.Error(), e.Vmlinux.Digest) {
		t.Fatalf("pull of a damaged blob: %v, want a digest mismatch naming the object", err)
	}
	if _, err := b.Describe(context.Background(), "k1"); !errors.Is(err, kcache.ErrNotFound) {
		t.Errorf("after a failed pull Describe = %v, want not found", err)
	}
	for _, d := range blobFiles(t, rootB) {
		if d == e.Vmlinux.Digest {
			t.Error("the damaged blob was installed under its digest")
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(rootB, ".tmp")); len(ents) != 0 {
		t.Errorf("staging left behind: %v", ents)
	}
}

func TestRemoteFailuresLeaveLocalCacheAlone(t *testing.T) {
	srv := s3test.Start(t)
	var warn bytes.Buffer
	root := filepath.Join(t.TempDir(), "cache")
	c := mustOpen(root, &kcache.Options{Logger: warnLogger(&warn)})
	storeKernel(t, c, "here", "image ", "", tarball)
	before, err := os.ReadFile(c.IndexPath())
	if err != nil {
		t.Fatal(err)
	}

	bad := map[string]s3.Config{}
	cfg := srv.Config("")
	cfg.SecretKey = "wrong-secret"
	bad["wrong credentials"] = cfg
	cfg = srv.Config("")
	cfg.Endpoint, cfg.Retries = "http://127.0.0.1:1", 1
	bad["unreachable endpoint"] = cfg
	cfg = srv.Config("")
	cfg.URL = "s3://no-such-bucket-here/p"
	bad["missing bucket"] = cfg
	wantMsg := map[string]string{"wrong credentials": "AWS_SECRET_ACCESS_KEY", "unreachable endpoint": "connection refused", "missing bucket": `bucket "no-such-bucket-here" does not exist`}

	for name, cfg := range bad {
		t.Run(name, func(t *testing.T) {
			r, err := s3.Open(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Push(bg, r, "here", kcache.TransferOptions{}); err == nil || !strings.Contains(err.Error(), wantMsg[name]) {
				t.Errorf("push: %v, want an error mentioning %q", err, wantMsg[name])
			}
			if _, err := c.Pull(bg, r, "there", kcache.TransferOptions{}); err == nil || errors.Is(err, remote.ErrNotFound) || !strings.Contains(err.Error(), wantMsg[name]) {
				t.Errorf("pull: %v, want an error mentioning %q", err, wantMsg[name])
			}
			if _, err := kcache.ListRemote(bg, r); err == nil {
				t.Error("ListRemote succeeded")
			}
			if now, err := os.ReadFile(c.IndexPath()); err != nil || !bytes.Equal(now, before) {
				t.Errorf("the failed push and pull changed index.db (%v)", err)
			}
			// lookup still answers from the local cache; a miss warns.
			if e, err := c.LookupRemote(bg, r, "here"); err != nil || e.Key != "here" {
				t.Errorf("LookupRemote of a local key: %v", err)
			}
			warn.Reset()
			if _, err := c.LookupRemote(bg, r, "there"); !errors.Is(err, kcache.ErrNotFound) {
				t.Errorf("LookupRemote of a missing key: %v, want not found", err)
			}
			if !strings.Contains(warn.String(), wantMsg[name]) {
				t.Errorf("warning %q does not mention %q", warn.String(), wantMsg[name])
			}
			// The lookups recorded last_used (hourly) and counted; that is
			// all they may change.
			if before, err = os.ReadFile(c.IndexPath()); err != nil {
				t.Fatal(err)
			}
		})
	}
	if l, err := c.List(context.Background(), kcache.ListOptions{}); err != nil || len(l.Entries) != 1 || l.Entries[0].Key != "here" {
		t.Errorf("local cache changed: %v %+v", err, l)
	}
}

func TestPullMissingKeyAndHostileManifest(t *testing.T) {
	srv := s3test.Start(t)
	r := openRemote(t, srv, "p")
	c, root := newCache(t)
	var warn bytes.Buffer
	if _, err := c.Pull(bg, r, "absent", kcache.TransferOptions{}); !errors.Is(err, remote.ErrNotFound) {
		t.Errorf("pull of an absent key: %v, want remote.ErrNotFound", err)
	}
	quiet := mustOpen(root, &kcache.Options{Logger: warnLogger(&warn)})
	if _, err := quiet.LookupRemote(bg, r, "absent"); !errors.Is(err, kcache.ErrNotFound) || warn.Len() != 0 {
		t.Errorf("LookupRemote of a key nobody has: %v, warning %q; want a quiet miss", err, warn.String())
	}
	for name, body := range map[string][]byte{
		"garbage":   []byte("not a manifest at all"),
		"truncated": []byte("KCACHE-MANIFEST v1\n\x8f\xa3key"),
		"otherkey":  nil, // filled below: a valid manifest of another key
	} {
		if body == nil {
			a, _ := newCache(t)
			storeKernel(t, a, "real", "i", "", tarball)
			if _, err := a.Push(bg, r, "real", kcache.TransferOptions{}); err != nil {
				t.Fatal(err)
			}
			rc, _, err := r.Get(bg, remote.ManifestName("real"))
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			_, _ = buf.ReadFrom(rc)
			rc.Close()
			body = buf.Bytes()
		}
		if err := r.Put(bg, remote.ManifestName(name), bytes.NewReader(body), int64(len(body))); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Pull(bg, r, name, kcache.TransferOptions{}); err == nil || !strings.Contains(err.Error(), "not a usable kcache manifest") {
			t.Errorf("%s: pull = %v, want an unusable-manifest error", name, err)
		}
	}
	entries, err := kcache.ListRemote(bg, r)
	if err != nil {
		t.Fatal(err)
	}
	var usable, unusable []string
	for _, e := range entries {
		if e.Record != nil {
			usable = append(usable, e.Key)
		} else {
			unusable = append(unusable, e.Key)
		}
	}
	if strings.Join(usable, ",") != "real" || strings.Join(unusable, ",") != "garbage,otherkey,truncated" {
		t.Errorf("ListRemote: usable %v, unusable %v", usable, unusable)
	}
	if l, _ := c.List(context.Background(), kcache.ListOptions{}); l != nil && len(l.Entries) != 0 {
		t.Errorf("hostile manifests installed entries: %+v", l.Entries)
	}
}

// TestPullLocksOnlyToInstall holds the key's lock shared (a harness booting
// the old entry) while a pull runs: the download completes, the install
// times out as in use, and once the lock is free a re-run downloads nothing.
func TestPullLocksOnlyToInstall(t *testing.T) {
	srv := s3test.Start(t)
	r := openRemote(t, srv, "")
	a, _ := newCache(t)
	e := storeKernel(t, a, "k", "new image ", "new vmlinux ", tarball)
	if _, err := a.Push(bg, r, "k", kcache.TransferOptions{}); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(t.TempDir(), "cache")
	b := mustOpen(root, &kcache.Options{StoreLockTimeout: 300 * time.Millisecond})
	storeKernel(t, b, "k", "old image ", "", tarball)
	l, err := b.AcquireShared(context.Background(), "k", kcache.LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := b.Pull(bg, r, "k", kcache.TransferOptions{})
	if !errors.Is(err, kcache.ErrInUse) {
		t.Fatalf("pull while the key is held: %v, want in use", err)
	}
	if rep.Bytes != e.Image.Size+e.Vmlinux.Size {
		t.Errorf("the download before the lock moved %d bytes, want %d", rep.Bytes, e.Image.Size+e.Vmlinux.Size)
	}
	if old, err := b.Describe(context.Background(), "k"); err != nil || old.Image.Digest == e.Image.Digest {
		t.Errorf("the held entry was replaced (%v)", err)
	}
	l.Release()
	rep, err = b.Pull(bg, r, "k", kcache.TransferOptions{})
	if err != nil || rep.Bytes != 0 {
		t.Fatalf("re-run: %+v, %v; want the install with nothing downloaded", rep, err)
	}
	if got, err := b.Describe(context.Background(), "k"); err != nil || got.Image.Digest != e.Image.Digest {
		t.Errorf("after the re-run: %v", err)
	}
}

// TestConcurrentPushesOfOneKey races two caches pushing different kernels
// under one key: the remote ends with one of them, complete.
func TestConcurrentPushesOfOneKey(t *testing.T) {
	srv := s3test.Start(t)
	r := openRemote(t, srv, "")
	var caches [2]*kcache.Cache
	var entries [2]*kcache.Entry
	for i := range caches {
		caches[i], _ = newCache(t)
		entries[i] = storeKernel(t, caches[i], "same", strings.Repeat("x", i+1)+" image ", strings.Repeat("y", i+1)+" vmlinux ", tarball)
	}
	for round := range 5 {
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i := range caches {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = caches[i].Push(bg, r, "same", kcache.TransferOptions{})
			}()
		}
		wg.Wait()
		if errs[0] != nil || errs[1] != nil {
			t.Fatalf("round %d: %v / %v", round, errs[0], errs[1])
		}
		b, _ := newCache(t)
		if _, err := b.Pull(bg, r, "same", kcache.TransferOptions{}); err != nil {
			t.Fatalf("round %d: pull: %v", round, err)
		}
		got, err := b.Lookup(context.Background(), "same")
		if err != nil {
			t.Fatal(err)
		}
		if got.Image.Digest != entries[0].Image.Digest && got.Image.Digest != entries[1].Image.Digest {
			t.Errorf("round %d: pulled an image that neither pushed", round)
		}
		winner := 0
		if got.Image.Digest == entries[1].Image.Digest {
			winner = 1
		}
		if got.Vmlinux.Digest != entries[winner].Vmlinux.Digest {
			t.Errorf("round %d: image of one push, vmlinux of the other", round)
		}
	}
}

func TestPushRefusesDamagedLocalBlob(t *testing.T) {
	srv := s3test.Start(t)
	r := openRemote(t, srv, "")
	c, _ := newCache(t)
	e := storeKernel(t, c, "k", "image ", "", tarball)
	if err := os.Chmod(e.ImagePath, 0o644); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(e.ImagePath)
	data[0] ^= 1
	if err := os.WriteFile(e.ImagePath, data, 0o444); err != nil {
		t.Fatal(err)
	}
	// The write moved the blob's ctime: the entry reads as corrupt.
	if _, err := c.Push(bg, r, "k", kcache.TransferOptions{}); !errors.Is(err, kcache.ErrCorruptEntry) {
		t.Fatalf("push of a blob written in place: %v", err)
	}
	// Bit rot leaves the ctime alone: push's own hash check refuses it.
	recordCtimeOf(t, c, e.Image.Digest)
	if _, err := c.Push(bg, r, "k", kcache.TransferOptions{}); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("push of a damaged blob: %v", err)
	}
	if _, err := r.Stat(bg, remote.BlobName(e.Image.Digest)); !errors.Is(err, remote.ErrNotFound) {
		t.Errorf("the damaged blob reached the remote (stat: %v)", err)
	}
	if _, err := r.Stat(bg, remote.ManifestName("k")); !errors.Is(err, remote.ErrNotFound) {
		t.Errorf("a manifest was published (stat: %v)", err)
	}
}

// A manifest pushed by something that did not scrub it (another tool, an
// older kcache) must not plant the pusher's local paths in this cache.
func TestPullScrubsLocalPaths(t *testing.T) {
	srv := s3test.Start(t)
	r := openRemote(t, srv, "")
	a, _ := newCache(t)
	local := kcache.Metadata{Source: kcache.Source{Type: "local", SourceTreePath: ptr("/home/someone/linux")}, Arch: "x86_64", ImageName: "bzImage"}
	e := storeKernel(t, a, "k", "image ", "", local)
	if _, err := a.Push(bg, r, "k", kcache.TransferOptions{}); err != nil {
		t.Fatal(err)
	}
	rec := e.Record
	manifest, err := index.EncodeManifest(&rec) // unscrubbed: the tree path is in it
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(manifest, []byte("/home/someone/linux")) {
		t.Fatal("test setup: the manifest does not carry the path")
	}
	if err := r.Put(bg, remote.ManifestName("k"), bytes.NewReader(manifest), int64(len(manifest))); err != nil {
		t.Fatal(err)
	}
	b, _ := newCache(t)
	if _, err := b.Pull(bg, r, "k", kcache.TransferOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := b.Describe(context.Background(), "k")
	if err != nil {
		t.Fatal(err)
	}
	if got.Source.SourceTreePath != nil {
		t.Errorf("the pulled entry carries the pusher's path %q", *got.Source.SourceTreePath)
	}
}
