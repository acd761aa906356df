package blobstore_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kcache/kcache/blobstore"
)

func setup(t *testing.T) (*blobstore.Store, string) {
	t.Helper()
	root := t.TempDir()
	staging := filepath.Join(root, "staging")
	if err := os.Mkdir(staging, 0o700); err != nil {
		t.Fatal(err)
	}
	return blobstore.New(filepath.Join(root, "blobs")), staging
}

func TestIngestStoresContentUnderItsHash(t *testing.T) {
	s, staging := setup(t)
	data := bytes.Repeat([]byte("kernel"), 100_000)
	d, n, err := s.Ingest(staging, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	if d != hex.EncodeToString(sum[:]) || n != int64(len(data)) {
		t.Fatalf("Ingest = %s, %d", d, n)
	}
	if s.Path(d) != filepath.Join(s.Dir(), d[:2], d) {
		t.Fatalf("path layout %s", s.Path(d))
	}
	got, err := os.ReadFile(s.Path(d))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("stored bytes differ (err %v)", err)
	}
	fi, _ := os.Stat(s.Path(d))
	if fi.Mode().Perm()&0o222 != 0 {
		t.Errorf("blob is writable: %v", fi.Mode())
	}
	if ents, _ := os.ReadDir(staging); len(ents) != 0 {
		t.Errorf("staging not empty after commit: %v", ents)
	}
	if err := s.Verify(d); err != nil {
		t.Errorf("Verify of an intact blob: %v", err)
	}
}

func TestIngestTwiceKeepsOneCopy(t *testing.T) {
	s, staging := setup(t)
	d1, _, err := s.Ingest(staging, strings.NewReader("same"))
	if err != nil {
		t.Fatal(err)
	}
	fi1, _ := os.Stat(s.Path(d1))
	d2, _, err := s.Ingest(staging, strings.NewReader("same"))
	if err != nil || d1 != d2 {
		t.Fatalf("second ingest = %s, %v", d2, err)
	}
	fi2, _ := os.Stat(s.Path(d2))
	if !os.SameFile(fi1, fi2) {
		t.Error("identical content was installed again instead of reused")
	}
	var seen []string
	if err := s.Walk(func(d string, size int64) error { seen = append(seen, d); return nil }, nil); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 1 || seen[0] != d1 {
		t.Fatalf("Walk = %v", seen)
	}
	if ents, _ := os.ReadDir(staging); len(ents) != 0 {
		t.Errorf("staging not empty after dedup: %v", ents)
	}
}

func TestAbortLeavesNothing(t *testing.T) {
	s, staging := setup(t)
	w, err := s.NewWriter(staging)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("partial"))
	w.Abort()
	w.Abort()
	if ents, _ := os.ReadDir(staging); len(ents) != 0 {
		t.Errorf("abort left %v", ents)
	}
	if _, _, err := w.Commit(); err == nil {
		t.Error("Commit after Abort succeeded")
	}
	if _, err := os.Stat(s.Dir()); !errors.Is(err, fs.ErrNotExist) {
		t.Error("an aborted blob created the store directory")
	}
}

func TestVerifyDetectsDamage(t *testing.T) {
	s, staging := setup(t)
	d, _, _ := s.Ingest(staging, strings.NewReader("pristine"))
	p := s.Path(d)
	os.Chmod(p, 0o644)
	os.WriteFile(p, []byte("tampered"), 0o644)
	if err := s.Verify(d); err == nil || !strings.Contains(err.Error(), "hashes to") {
		t.Fatalf("Verify of a tampered blob = %v", err)
	}
}

func TestWalkReportsForeignFiles(t *testing.T) {
	s, staging := setup(t)
	d, _, _ := s.Ingest(staging, strings.NewReader("x"))
	os.WriteFile(filepath.Join(s.Dir(), d[:2], "stray.txt"), nil, 0o644)
	misplaced := strings.Repeat("ab", 32)
	os.MkdirAll(filepath.Join(s.Dir(), "00"), 0o755)
	os.WriteFile(filepath.Join(s.Dir(), "00", misplaced), nil, 0o644)
	var blobs, foreign []string
	err := s.Walk(func(d string, _ int64) error { blobs = append(blobs, d); return nil },
		func(p string) error { foreign = append(foreign, filepath.Base(p)); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if len(blobs) != 1 || len(foreign) != 2 {
		t.Fatalf("Walk blobs %v foreign %v; want 1 blob and the stray and misplaced files", blobs, foreign)
	}
}

func TestStatRemoveAndDigestValidation(t *testing.T) {
	s, staging := setup(t)
	d, _, _ := s.Ingest(staging, strings.NewReader("abc"))
	if n, err := s.Stat(d); err != nil || n != 3 {
		t.Fatalf("Stat = %d, %v", n, err)
	}
	if err := s.Remove(d); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(d); err != nil {
		t.Fatalf("removing a missing blob: %v", err)
	}
	if _, err := s.Stat(d); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Stat after remove = %v", err)
	}
	for _, bad := range []string{"", "../../etc/passwd", strings.Repeat("A", 64), strings.Repeat("a", 63)} {
		if blobstore.ValidDigest(bad) {
			t.Errorf("ValidDigest(%q) = true", bad)
		}
		if _, err := s.Stat(bad); err == nil {
			t.Errorf("Stat(%q) accepted a bad digest", bad)
		}
		if err := s.Remove(bad); err == nil {
			t.Errorf("Remove(%q) accepted a bad digest", bad)
		}
	}
}

func TestCommitAllInstallsEveryBlob(t *testing.T) {
	s, staging := setup(t)
	contents := []string{"image bytes", "vmlinux bytes", "image bytes", "manifest"}
	var ws []*blobstore.Writer
	for _, c := range contents {
		w, err := s.NewWriter(staging)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte(c)); err != nil {
			t.Fatal(err)
		}
		ws = append(ws, w)
	}
	var order []int
	bs, err := s.CommitAll(ws, func(i int) { order = append(order, i) })
	if err != nil {
		t.Fatal(err)
	}
	if len(order) != len(contents) || order[0] != 0 || order[3] != 3 {
		t.Errorf("installed called for %v", order)
	}
	for i, c := range contents {
		sum := sha256.Sum256([]byte(c))
		if bs[i].Digest != hex.EncodeToString(sum[:]) || bs[i].Size != int64(len(c)) || ws[i].Digest() != bs[i].Digest {
			t.Errorf("blob %d = %+v", i, bs[i])
		}
		if got, err := os.ReadFile(s.Path(bs[i].Digest)); err != nil || string(got) != c {
			t.Errorf("blob %d reads %q, %v", i, got, err)
		}
	}
	if ents, _ := os.ReadDir(staging); len(ents) != 0 {
		t.Errorf("staging not empty after CommitAll: %v", ents)
	}
	if _, err := s.CommitAll(ws[:1], nil); err == nil {
		t.Error("CommitAll of committed writers succeeded")
	}
}

func TestResetReplacesContent(t *testing.T) {
	s, staging := setup(t)
	w, err := s.NewWriter(staging)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write([]byte("partial output that is dropped"))
	if err := w.Reset(); err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write([]byte("kept"))
	d, n, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("kept"))
	if d != hex.EncodeToString(sum[:]) || n != 4 {
		t.Fatalf("Commit = %s, %d", d, n)
	}
	if got, _ := os.ReadFile(s.Path(d)); string(got) != "kept" {
		t.Errorf("blob holds %q", got)
	}
}

// Path2 gives what Path gives for each digest, valid or not, and for
// stores whose directory is not a plain prefix.
func TestPath2IsPathOfBoth(t *testing.T) {
	a, b := strings.Repeat("ab", 32), strings.Repeat("0f", 32)
	odd := strings.Repeat("Zz", 32) + "é"
	for _, dir := range []string{t.TempDir(), "rel/dir/", "/", "."} {
		s := blobstore.New(dir)
		for _, pair := range [][2]string{{a, b}, {b, a}, {a, odd}, {odd, b}} {
			p, q := s.Path2(pair[0], pair[1])
			if p != s.Path(pair[0]) || q != s.Path(pair[1]) {
				t.Errorf("%s: Path2(%s, %s) = %s, %s; want %s, %s", dir, pair[0], pair[1], p, q, s.Path(pair[0]), s.Path(pair[1]))
			}
		}
	}
}
