package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/kcache/kcache/index"
	"github.com/kcache/kcache/internal/legacy"
)

// Shape of a -direct entry i (the same kernel on both sides):
//
//   - source cycles through tarball, git (7-hex hash and a ref), local (tree
//     path, hash, source vmlinux size and mtime), tarball; the key is
//     <version or hash>-<source>-x86_64-kc<kconfig hash>;
//   - config_hash is a CRC-32 of i; kconfig_hash is the same for most
//     entries, another one every 7th; build_id set, config_hz every 5th;
//   - built_at is one minute per two entries, so every built_at is shared
//     by two keys (the tie order is exercised);
//   - its own 256-byte image; the vmlinux (16 KiB, "stripped") is one file
//     shared by every entry: one blob on the kcache side, hard links on the
//     ktstr side (one file per 10,000 entries: ext4's link limit). kcache
//     also gets each entry's manifest blob.
//   - every 100th entry is pinned, every 3rd has a last_used time; the
//     current kconfig hash is set (so most entries match, every 7th is stale).
const (
	directImage   = 256
	directVmlinux = 16384
	directBatch   = 20000 // records per index transaction
)

type directEntry struct {
	key    string
	meta   legacy.Metadata
	rec    index.Record
	image  []byte
	digest string
}

func str(s string) *string { return &s }

func makeDirect(i int, vmlinux index.Blob) directEntry {
	builtAt := time.Unix(1775000000+int64(i/2)*60, 0).UTC().Format("2006-01-02T15:04:05Z")
	var b [8]byte
	b[0], b[1], b[2], b[3] = byte(i), byte(i>>8), byte(i>>16), byte(i>>24)
	cfg := fmt.Sprintf("%08x", crc32.ChecksumIEEE(b[:]))
	kc := "cc0bd848"
	if i%7 == 0 {
		kc = "1f2e3d4c"
	}
	hash := fmt.Sprintf("%07x", crc32.ChecksumIEEE(append(b[:], 'g'))>>4)
	var src index.Source
	var lsrc legacy.Source
	var version *string
	var svSize *uint64
	var svMtime *int64
	var key string
	switch i % 4 {
	case 1:
		ref := fmt.Sprintf("v6.%d-rc%d", 10+i%6, i%8)
		src = index.Source{Type: "git", GitHash: str(hash), Ref: str(ref)}
		lsrc = legacy.Source{Type: "git", GitHash: str(hash), Ref: str(ref)}
		key = fmt.Sprintf("%s-%d-git-x86_64-kc%s", hash, i, kc)
	case 2:
		tree := fmt.Sprintf("/home/dev/src/linux-%d", i%5)
		src = index.Source{Type: "local", GitHash: str(hash), SourceTreePath: str(tree)}
		lsrc = legacy.Source{Type: "local", GitHash: str(hash), SourceTreePath: str(tree)}
		key = fmt.Sprintf("local-%s-%d-x86_64-kc%s", hash, i, kc)
		sz, mt := uint64(60000000+i), int64(1774000000+i)
		svSize, svMtime = &sz, &mt
	default:
		version = str(fmt.Sprintf("6.14.%d", i))
		src = index.Source{Type: "tarball"}
		lsrc = legacy.Source{Type: "tarball"}
		key = fmt.Sprintf("6.14.%d-tarball-x86_64-kc%s", i, kc)
	}
	image := make([]byte, directImage)
	for j := range image {
		image[j] = byte(j * 31)
	}
	copy(image, b[:])
	sum := sha256.Sum256(image)
	digest := hex.EncodeToString(sum[:])
	e := directEntry{key: key, image: image, digest: digest,
		meta: legacy.Metadata{Version: version, Source: lsrc, Arch: "x86_64", ImageName: "bzImage",
			ConfigHash: str(cfg), BuiltAt: builtAt, KtstrKconfigHash: str(kc), HasVmlinux: true,
			VmlinuxStripped: true, SourceVmlinuxSize: svSize, SourceVmlinuxMtimeSecs: svMtime},
	}
	orig := int64(60000000 + i)
	vm := vmlinux
	e.rec = index.Record{Key: key, Version: version, Source: src, Arch: "x86_64", ImageName: "bzImage",
		ConfigHash: str(cfg), BuiltAt: builtAt, KconfigHash: str(kc), HasVmlinux: true, VmlinuxStripped: true,
		SourceVmlinuxSize: svSize, SourceVmlinuxMtimeSecs: svMtime,
		Image: index.Blob{Digest: digest, Size: directImage}, Vmlinux: &vm, VmlinuxOriginalSize: &orig,
		BuildID:  str(hex.EncodeToString(sum[:20])),
		StoredAt: time.Unix(1775000000+int64(i)*60, 123456789).UTC().Format(time.RFC3339Nano)}
	if i%5 == 0 {
		hz := uint64(1000)
		e.rec.ConfigHZ = &hz
	}
	if i%3 == 0 {
		e.rec.LastUsed = time.Unix(1776000000+int64(i), 0).UTC().Format(time.RFC3339)
	}
	return e
}

// writeBlob writes data as blob <dir>/<2>/<digest> (no fsync, no staging).
func writeBlob(dir, digest string, data []byte) error {
	sub := filepath.Join(dir, digest[:2])
	if err := os.MkdirAll(sub, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(sub, digest), data, 0o644)
}

func runDirect(n int, ktstr, kroot string) error {
	blobs := filepath.Join(kroot, "blobs", "sha256")
	for _, d := range []string{ktstr, blobs} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	vdata := make([]byte, directVmlinux)
	for j := range vdata {
		vdata[j] = byte(j*7 + j>>8)
	}
	vsum := sha256.Sum256(vdata)
	vmlinux := index.Blob{Digest: hex.EncodeToString(vsum[:]), Size: directVmlinux}
	if err := writeBlob(blobs, vmlinux.Digest, vdata); err != nil {
		return err
	}
	// ext4 allows 65,000 links to a file: one shared copy per 10,000 entries.
	shared := func(i int) string { return filepath.Join(ktstr, fmt.Sprintf(".shared-vmlinux-%d", i/10000)) }
	for i := 0; i < n; i += 10000 {
		if err := os.WriteFile(shared(i), vdata, 0o644); err != nil {
			return err
		}
	}

	// Files first (both sides, in parallel), then the index in batches.
	recs := make([]index.Record, n)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	const workers = 4
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				e := makeDirect(i, vmlinux)
				if err := writeDirect(ktstr, blobs, shared(i), &e); err != nil {
					errs <- err
					return
				}
				recs[i] = e.rec
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "listgen: %d entries' files written\n", n)

	db, err := index.Open(filepath.Join(kroot, "index.db"), index.Options{})
	if err != nil {
		return err
	}
	exists := func(string) bool { return true }
	for lo := 0; lo < n; lo += directBatch {
		hi := min(lo+directBatch, n)
		err := db.Update(func(tx *index.Tx) error {
			if lo == 0 {
				if err := tx.SetKconfigHash("cc0bd848"); err != nil {
					return err
				}
			}
			for i := lo; i < hi; i++ {
				if _, err := tx.Put(&recs[i], exists); err != nil {
					return err
				}
				if i%100 == 0 {
					if err := tx.Pin(recs[i].Key, index.Pin{PinnedAt: recs[i].StoredAt, Reason: "bench baseline"}); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			db.Close()
			return err
		}
		fmt.Fprintf(os.Stderr, "listgen: %d/%d indexed\n", hi, n)
	}
	return db.Close()
}

func writeDirect(ktstr, blobs, sharedVmlinux string, e *directEntry) error {
	dir := filepath.Join(ktstr, e.key)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "bzImage"), e.image, 0o644); err != nil {
		return err
	}
	if err := os.Link(sharedVmlinux, filepath.Join(dir, "vmlinux")); err != nil {
		return err
	}
	meta, err := legacy.MarshalMetadata(e.meta)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "metadata.json"), meta, 0o644); err != nil {
		return err
	}
	if err := writeBlob(blobs, e.digest, e.image); err != nil {
		return err
	}
	manifest, err := index.EncodeManifest(&e.rec)
	if err != nil {
		return err
	}
	msum := sha256.Sum256(manifest)
	e.rec.Manifest = index.Blob{Digest: hex.EncodeToString(msum[:]), Size: int64(len(manifest))}
	return writeBlob(blobs, e.rec.Manifest.Digest, manifest)
}
