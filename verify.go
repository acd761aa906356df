package kcache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/kcache/kcache/blobstore"
	"github.com/kcache/kcache/index"
)

// VerifyOptions tune Verify.
type VerifyOptions struct {
	// Keys limits the check to these entries; empty means every entry.
	Keys []string
	// Deep re-hashes every blob; otherwise presence and size are checked,
	// and only the blobs whose file is suspect are re-hashed: its inode
	// change time is not the one the index recorded when kcache last wrote
	// or hashed it (a write through a hard link moves it; unknown for
	// blobs stored before kcache recorded it), or it has more than one
	// link. Flipped bytes with an unchanged ctime need Deep.
	Deep bool
	// Progress, when set, is called after each blob with the number checked
	// so far and the total.
	Progress func(done, total int)
}

// Blob roles in a BlobProblem.
const (
	RoleImage    = "image"
	RoleVmlinux  = "vmlinux"
	RoleManifest = "manifest"
)

// BlobProblem is one blob of one entry that is missing or damaged.
type BlobProblem struct {
	Key    string `json:"key"`
	Role   string `json:"role"` // image, vmlinux or manifest
	Digest string `json:"digest"`
	// ErrorKind is index.CorruptBlobMissing (the file is gone) or
	// index.CorruptBlobMismatch (wrong size — truncated or grown — or, with
	// Deep, content that does not hash to the digest).
	ErrorKind string `json:"error_kind"`
	Detail    string `json:"detail"`
	// QuarantinedTo is where the bad file was moved; "" when there was no
	// file, or nothing was changed (dry run, read-only cache).
	QuarantinedTo string `json:"quarantined_to"`
	// Repaired is true for a manifest rewritten from the index record (the
	// entry stays usable); every other problem marks the entry corrupt.
	Repaired bool `json:"repaired"`
}

// VerifyReport is what Verify found and did.
type VerifyReport struct {
	// Checked counts distinct blobs checked (a blob shared by entries once).
	Checked  int           `json:"checked"`
	Deep     bool          `json:"deep"`
	Problems []BlobProblem `json:"problems"`
}

// Verify checks that every blob (image, vmlinux, manifest) of the given
// entries, or of all entries, exists with its recorded size, and with Deep
// that its content hashes to its digest. A bad file is moved to
// <root>/quarantine/<time>-<digest> (never deleted) and every entry that uses
// it is marked corrupt in the index (error_kind blob_missing or
// blob_mismatch), so list and lookup report it until the key is stored again.
// A damaged manifest is rewritten from the index record instead when that
// reproduces its digest. The bad blob is re-checked under the index write
// lock first, so one that a concurrent store has rewritten meanwhile is left
// alone. A read-only cache reports without changing anything.
func (c *Cache) Verify(ctx context.Context, opt VerifyOptions) (*VerifyReport, error) {
	for _, k := range opt.Keys {
		if err := ValidateKey(k); err != nil {
			return nil, err
		}
	}
	return c.checkBlobs(ctx, opt.Keys, opt.Deep, c.opt.ReadOnly, opt.Progress)
}

// blobUse is one entry's use of a blob.
type blobUse struct {
	key, role string
	blob      index.Blob
	marked    string // the record's CorruptMark kind, "" when unmarked
}

type blobFault struct{ kind, detail string }

// ctimeIgnored, as checkOneBlob's recorded ctime, skips the ctime check.
const ctimeIgnored = -1

func roleUses(rec *index.Record) []blobUse {
	uses := []blobUse{{key: rec.Key, role: RoleImage, blob: rec.Image}}
	if rec.Vmlinux != nil {
		uses = append(uses, blobUse{key: rec.Key, role: RoleVmlinux, blob: *rec.Vmlinux})
	}
	if rec.Manifest.Digest != "" {
		uses = append(uses, blobUse{key: rec.Key, role: RoleManifest, blob: rec.Manifest})
	}
	return uses
}

// checkBlobs is Verify's engine, shared with Doctor (which checks sizes of
// every entry). reportOnly changes nothing on disk or in the index.
func (c *Cache) checkBlobs(ctx context.Context, keys []string, deep, reportOnly bool, progress func(int, int)) (*VerifyReport, error) {
	rep := &VerifyReport{Deep: deep, Problems: []BlobProblem{}}
	uses := map[string][]blobUse{} // digest -> every use, all entries
	want := map[string]bool{}      // digests to check
	selected := map[string]bool{}
	for _, k := range keys {
		selected[k] = true
	}
	found := map[string]bool{}
	recorded := map[string]int64{} // digest -> the index's BlobRef.Ctime
	if _, err := c.view(ctx, func(tx *index.Tx) error {
		return tx.ForEach(func(key string, rec *index.Record, err error) error {
			var derr *index.DecodeError
			if errors.As(err, &derr) {
				found[key] = true // corrupt already; it names no blobs
				return nil
			}
			if err != nil {
				return err
			}
			found[key] = true
			for _, u := range roleUses(rec) {
				if _, seen := recorded[u.blob.Digest]; !seen {
					ref, _, err := tx.Blob(u.blob.Digest)
					if err != nil {
						return err
					}
					recorded[u.blob.Digest] = ref.Ctime
				}
				if rec.Corrupt != nil {
					u.marked = rec.Corrupt.Kind
				}
				uses[u.blob.Digest] = append(uses[u.blob.Digest], u)
				if len(keys) == 0 || selected[key] {
					want[u.blob.Digest] = true
				}
			}
			return nil
		})
	}); err != nil {
		return nil, fmt.Errorf("verify %s: %w", c.root, err)
	}
	for _, k := range keys {
		if !found[k] {
			return nil, &NotFoundError{Key: k}
		}
	}
	digests := make([]string, 0, len(want))
	for d := range want {
		digests = append(digests, d)
	}
	sort.Strings(digests)

	bad := map[string]blobFault{}
	fresh := map[string]int64{} // blobs hashed right whose ctime the index lacks
	for i, d := range digests {
		f, ctime, err := c.checkOneBlob(ctx, d, uses[d][0].blob.Size, deep, recorded[d])
		if err != nil {
			return nil, err
		}
		if f != nil {
			bad[d] = *f
		} else if ctime != 0 {
			fresh[d] = ctime
		}
		rep.Checked++
		if progress != nil {
			progress(i+1, len(digests))
		}
	}
	if len(fresh) > 0 && !reportOnly {
		// Best effort: an unrecorded ctime only costs a hash next time.
		_ = c.update(ctx, func(tx *index.Tx) ([]string, error) {
			for d, ct := range fresh {
				if err := tx.SetBlobCtime(d, ct); err != nil {
					return nil, err
				}
			}
			return nil, nil
		})
	}
	if len(bad) == 0 {
		return rep, nil
	}
	// Nothing to move and every entry marked already: report only, so that
	// a second run does not write the index again.
	settled := true
	for d, f := range bad {
		for _, u := range uses[d] {
			settled = settled && f.kind == index.CorruptBlobMissing && u.marked != "" && u.role != RoleManifest
		}
	}
	if reportOnly || settled {
		for d, f := range bad {
			for _, u := range uses[d] {
				rep.Problems = append(rep.Problems, BlobProblem{Key: u.key, Role: u.role, Digest: d, ErrorKind: f.kind, Detail: f.detail})
			}
		}
		sortProblems(rep.Problems)
		return rep, nil
	}
	probs, err := c.quarantineAndMark(ctx, bad, uses, deep)
	if err != nil {
		return nil, err
	}
	rep.Problems = probs
	sortProblems(rep.Problems)
	return rep, nil
}

func sortProblems(ps []BlobProblem) {
	order := map[string]int{RoleImage: 0, RoleVmlinux: 1, RoleManifest: 2}
	sort.Slice(ps, func(i, j int) bool {
		if ps[i].Key != ps[j].Key {
			return ps[i].Key < ps[j].Key
		}
		return order[ps[i].Role] < order[ps[j].Role]
	})
}

// checkOneBlob returns what is wrong with blob d, or nil. Errors other than
// a missing file or a bad content (permissions, I/O) are returned: they say
// nothing about the blob.
//
// Besides presence and size it hashes the blob, even when not deep, when
// its file is suspect: its ctime is not the one the index recorded
// (recorded, 0 when unknown) — something wrote to it, or it was never
// checked since the field exists — or it has more than one link (a hard
// link lets a write through it reach the blob). A blob that hashes right
// and whose ctime the index lacks is returned with that ctime, for the
// caller to record, so the next check is cheap again. recorded
// ctimeIgnored skips the ctime comparison (a caller without the index's
// blob records).
func (c *Cache) checkOneBlob(ctx context.Context, d string, size int64, deep bool, recorded int64) (*blobFault, int64, error) {
	in, err := c.blobs.Inode(d)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return &blobFault{index.CorruptBlobMissing, fmt.Sprintf("blob %s is missing from %s", d, c.blobs.Path(d))}, 0, nil
	case err != nil:
		return nil, 0, fmt.Errorf("verify blob %s: %w", d, err)
	case in.Size != size:
		return &blobFault{index.CorruptBlobMismatch, fmt.Sprintf("blob %s is %d bytes, the index recorded %d", d, in.Size, size)}, 0, nil
	}
	suspect := recorded != ctimeIgnored && in.Ctime != recorded || in.Nlink > 1
	if !deep && !suspect {
		return nil, 0, nil
	}
	err = c.verifyBlob(ctx, d)
	switch {
	case errors.Is(err, blobstore.ErrMismatch):
		detail := err.Error()
		if recorded != 0 && in.Ctime != recorded {
			detail += " (its file was changed after it was stored)"
		}
		if in.Nlink > 1 {
			detail += fmt.Sprintf(" (its file has %d hard links)", in.Nlink)
		}
		return &blobFault{index.CorruptBlobMismatch, detail}, 0, nil
	case errors.Is(err, fs.ErrNotExist):
		return &blobFault{index.CorruptBlobMissing, fmt.Sprintf("blob %s is missing from %s", d, c.blobs.Path(d))}, 0, nil
	case err != nil:
		return nil, 0, fmt.Errorf("verify blob %s: %w", d, err)
	}
	if recorded != ctimeIgnored && in.Ctime != recorded && in.Nlink == 1 {
		return nil, in.Ctime, nil
	}
	return nil, 0, nil
}

// quarantineAndMark re-checks each bad blob under the index write lock (a
// concurrent store may have rewritten it), moves the bad file to the
// quarantine, and marks every entry that uses it corrupt, or rewrites a bad
// manifest from its record.
func (c *Cache) quarantineAndMark(ctx context.Context, bad map[string]blobFault, uses map[string][]blobUse, deep bool) ([]BlobProblem, error) {
	var st *staging
	defer func() {
		if st != nil {
			if err := st.remove(); err != nil {
				c.warnf("%v", err)
			}
		}
	}()
	for d := range bad {
		for _, u := range uses[d] {
			if u.role == RoleManifest && st == nil {
				var err error
				if st, err = c.newStaging(ctx); err != nil {
					return nil, err
				}
			}
		}
	}
	var probs []BlobProblem
	now := c.now().UTC()
	err := c.update(ctx, func(tx *index.Tx) ([]string, error) {
		probs = nil
		digests := make([]string, 0, len(bad))
		for d := range bad {
			digests = append(digests, d)
		}
		sort.Strings(digests)
		for _, d := range digests {
			f, _, err := c.checkOneBlob(ctx, d, uses[d][0].blob.Size, deep || bad[d].kind == index.CorruptBlobMismatch, ctimeIgnored)
			if err != nil {
				return nil, err
			}
			if f == nil {
				continue // rewritten by a store meanwhile
			}
			var moved string
			if f.kind != index.CorruptBlobMissing {
				if moved, err = c.quarantine(c.blobs.Path(d), d); err != nil {
					return nil, err
				}
			}
			for _, u := range uses[d] {
				p := BlobProblem{Key: u.key, Role: u.role, Digest: d, ErrorKind: f.kind, Detail: f.detail, QuarantinedTo: moved}
				if u.role == RoleManifest && c.rewriteManifest(tx, st, u.key, d) {
					p.Repaired = true
				} else {
					reason := fmt.Sprintf("%s blob: %s", u.role, f.detail)
					if moved != "" {
						reason += "; the file was moved to " + moved
					}
					ok, err := tx.MarkCorrupt(u.key, d, index.CorruptMark{Kind: f.kind, Reason: reason, At: now.Format(time.RFC3339)})
					if err != nil {
						return nil, err
					}
					if !ok {
						continue // replaced or removed meanwhile: not this entry's problem
					}
				}
				probs = append(probs, p)
			}
		}
		return nil, nil
	})
	if err != nil {
		return nil, fmt.Errorf("verify %s: %w", c.root, err)
	}
	if probs == nil {
		probs = []BlobProblem{}
	}
	return probs, nil
}

// rewriteManifest writes key's manifest again from its index record and
// reports whether that reproduced blob d.
func (c *Cache) rewriteManifest(tx *index.Tx, st *staging, key, d string) bool {
	if st == nil {
		return false
	}
	rec, err := tx.Get(key)
	if err != nil || rec.Manifest.Digest != d {
		return false
	}
	data, err := index.EncodeManifest(rec)
	if err != nil {
		return false
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != d {
		return false
	}
	got, _, err := c.blobs.Ingest(st.dir, bytes.NewReader(data))
	return err == nil && got == d
}

func (c *Cache) quarantineDir() string { return filepath.Join(c.root, "quarantine") }

// quarantine moves path into <root>/quarantine/<UTC time>-<name> and returns
// the new path. name says where the file came from.
func (c *Cache) quarantine(path, name string) (string, error) {
	dir := c.quarantineDir()
	// Through c.fs: a symlink at quarantine/ (or at path's directories)
	// is refused, never moved into or out of.
	if err := c.fs.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create quarantine directory %s: %w", dir, err)
	}
	base := c.now().UTC().Format("20060102T150405Z") + "-" + strings.ReplaceAll(name, string(filepath.Separator), "_")
	dst := filepath.Join(dir, base)
	for i := 1; ; i++ {
		if _, err := c.fs.Lstat(dst); errors.Is(err, fs.ErrNotExist) {
			break
		}
		dst = filepath.Join(dir, fmt.Sprintf("%s.%d", base, i))
	}
	if err := c.fs.Rename(path, dst); err != nil {
		return "", fmt.Errorf("move %s to the quarantine: %w", path, err)
	}
	for _, d := range []string{filepath.Dir(path), dir} {
		_ = c.fs.SyncDir(d) // best effort: the move is done either way
	}
	return dst, nil
}

// verifyBlob is blobstore.Store.Verify with the hash loop checking ctx, so a
// deep verify of large blobs stops promptly when cancelled.
func (c *Cache) verifyBlob(ctx context.Context, d string) error {
	f, err := c.blobs.Open(d)
	if err != nil {
		return err
	}
	defer f.Close()
	return blobstore.VerifyReader(ctxReader{ctx, f}, d)
}
