package main

// Item 1 and 7 of issue 12: no symlink under the cache root is followed.
// Each test plants a symlink where kcache keeps its own files, pointing into
// a directory that stands for someone's work, runs the real kcache binary
// (a separate process: runProc) and checks that nothing there changed.

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// safetyFile is what a snapshot records of one path.
type safetyFile struct {
	mode  fs.FileMode
	mtime time.Time
	data  string
}

// safetySnapshot records every path under dir (content, mode, mtime).
func safetySnapshot(t *testing.T, dir string) map[string]safetyFile {
	t.Helper()
	m := map[string]safetyFile{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		f := safetyFile{mode: fi.Mode(), mtime: fi.ModTime()}
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			f.data = string(b)
		}
		if fi.IsDir() {
			f.mtime = time.Time{} // reading a directory is fine; its entries are compared
		}
		m[p] = f
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func safetySame(t *testing.T, what string, before, after map[string]safetyFile) {
	t.Helper()
	for p, b := range before {
		a, ok := after[p]
		switch {
		case !ok:
			t.Errorf("%s: %s was removed", what, p)
		case a.data != b.data:
			t.Errorf("%s: %s changed content: %q -> %q", what, p, b.data, a.data)
		case a.mode != b.mode || !a.mtime.Equal(b.mtime):
			t.Errorf("%s: %s changed: mode %v mtime %v -> mode %v mtime %v", what, p, b.mode, b.mtime, a.mode, a.mtime)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s: %s appeared", what, p)
		}
	}
}

// safetyDoctorSymlinks runs doctor --json and returns the symlinks it reports.
func safetyDoctorSymlinks(t *testing.T, root string, args ...string) []string {
	t.Helper()
	stdout, stderr, _ := runProc(t, root, append([]string{"doctor", "--json"}, args...)...)
	var rep struct {
		Symlinks []struct {
			Path string `json:"path"`
		} `json:"symlinks"`
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("doctor --json: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}
	var out []string
	for _, s := range rep.Symlinks {
		out = append(out, s.Path)
	}
	return out
}

// TestSafetySymlinkUnderRoot plants a symlink at each directory kcache
// writes through (blobs/, blobs/sha256/<xx>, .tmp, .locks, quarantine/,
// .stats), pointing at a copy of what was there plus someone's files, all
// old enough for a sweep to want them. store, lookup, verify --deep, rm,
// gc (and its sweep), doctor must leave every outside file byte-identical,
// with its mtime, add nothing there, and doctor must report the symlink.
func TestSafetySymlinkUnderRoot(t *testing.T) {
	if testing.Short() {
		t.Skip("runs many kcache processes")
	}
	imgDir := t.TempDir()
	imgA := cliWrite(t, imgDir, "a", "image of a")
	imgB := cliWrite(t, imgDir, "b", "image of b")
	imgC := cliWrite(t, imgDir, "c", "image of c, stored while the symlink is there")
	digestA := cliSHA256(t, imgA)
	for _, target := range []string{"blobs", "blobs/sha256/" + digestA[:2], ".tmp", ".locks", "quarantine", ".stats"} {
		t.Run(strings.ReplaceAll(target, "/", "_"), func(t *testing.T) {
			root := cliNewRoot(t)
			for _, s := range [][]string{{"a", imgA}, {"b", imgB}} {
				if _, stderr, code := runProc(t, root, "store", s[0], "--image", s[1], "--arch", "x86_64"); code != 0 {
					t.Fatalf("store %s: %s", s[0], stderr)
				}
			}
			runProc(t, root, "lookup", "a")    // creates .stats/hits
			runProc(t, root, "lookup", "nope") // and .stats/misses
			// Work for verify and doctor's quarantine: a damaged blob (same
			// size) and a file kcache did not write.
			cliDamage(t, cliBlobPath(root, cliSHA256(t, imgB)), func(b []byte) []byte { b[0] ^= 0xff; return b })
			cliWrite(t, root, "stray.txt", "not kcache's\n")

			// Someone's work: what was at target (or a new directory),
			// moved outside, with their own files beside it.
			outside := filepath.Join(t.TempDir(), "work")
			moved := filepath.Join(outside, "moved")
			if err := os.MkdirAll(outside, 0o755); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(root, target)
			if err := os.Rename(p, moved); err != nil {
				if err := os.Mkdir(moved, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			cliWrite(t, moved, "precious.c", "int main(void) { return 0; }\n")
			cliWrite(t, outside, "NOTES", "someone's notes\n")
			old := time.Now().Add(-3 * time.Hour)
			err := filepath.WalkDir(outside, func(q string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				return os.Chtimes(q, old, old)
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(moved, p); err != nil {
				t.Fatal(err)
			}
			before := safetySnapshot(t, outside)

			for _, args := range [][]string{
				{"store", "c", "--image", imgC, "--arch", "x86_64"},
				{"store", "a2", "--image", imgA, "--arch", "x86_64"}, // deduplicates against a's blob
				{"lookup", "a"},
				{"lookup", "nope"},
				{"verify", "--deep"},
				{"rm", "a"},
				{"gc", "--keep", "1", "--grace", "0"},
				{"doctor"},
			} {
				_, stderr, code := runProc(t, root, args...)
				t.Logf("kcache %s: exit %d: %s", strings.Join(args, " "), code, strings.TrimSpace(stderr))
				safetySame(t, "after kcache "+strings.Join(args, " "), before, safetySnapshot(t, outside))
			}
			found := safetyDoctorSymlinks(t, root)
			ok := false
			for _, f := range found {
				ok = ok || f == p
			}
			if !ok {
				t.Errorf("doctor --json reports symlinks %v, want %s among them", found, p)
			}
			if fi, err := os.Lstat(p); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
				t.Errorf("the symlink %s was not left alone: %v %v", p, fi, err)
			}
			safetySame(t, "at the end", before, safetySnapshot(t, outside))
		})
	}
}

// TestSafetySymlinkBlobIsMissing replaces a blob file by a symlink to a
// file of the same size outside the root: list reports the entry as
// missing its image (lstat semantics, not the target's size), lookup fails,
// verify marks it blob_missing, doctor reports the symlink, and the target
// is untouched throughout.
func TestSafetySymlinkBlobIsMissing(t *testing.T) {
	root := cliNewRoot(t)
	blob := cliStore(t, root, "k")
	data, err := os.ReadFile(blob)
	if err != nil {
		t.Fatal(err)
	}
	outside := t.TempDir()
	same := cliWrite(t, outside, "same-size", strings.Repeat("x", len(data)))
	if err := os.Remove(blob); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(same, blob); err != nil {
		t.Fatal(err)
	}
	before := safetySnapshot(t, outside)
	if kinds := cliKinds(t, root); kinds["k"] != "image_missing" {
		t.Errorf("list --json error_kind of k = %q, want image_missing (a symlinked blob is missing)", kinds["k"])
	}
	if _, stderr, code := runProc(t, root, "lookup", "k"); code == 0 {
		t.Errorf("lookup of an entry whose blob is a symlink succeeded: %s", stderr)
	}
	runProc(t, root, "verify", "--deep")
	if kinds := cliKinds(t, root); kinds["k"] != "blob_missing" {
		t.Errorf("after verify, list --json error_kind of k = %q, want blob_missing", kinds["k"])
	}
	found := safetyDoctorSymlinks(t, root, "--dry-run")
	if len(found) != 1 || found[0] != blob {
		t.Errorf("doctor reports symlinks %v, want [%s]", found, blob)
	}
	runProc(t, root, "doctor")
	runProc(t, root, "gc", "--keep", "0", "--grace", "0")
	safetySame(t, "outside", before, safetySnapshot(t, outside))
}

// TestSafetySymlinkStatsCounter: .stats/hits and .stats/misses as dangling
// symlinks; lookups (a hit and a miss) must not create their targets.
func TestSafetySymlinkStatsCounter(t *testing.T) {
	root := cliNewRoot(t)
	cliStore(t, root, "k")
	if err := os.MkdirAll(filepath.Join(root, ".stats"), 0o755); err != nil {
		t.Fatal(err)
	}
	elsewhere := t.TempDir()
	for _, name := range []string{"hits", "misses"} {
		if err := os.Symlink(filepath.Join(elsewhere, name), filepath.Join(root, ".stats", name)); err != nil {
			t.Fatal(err)
		}
	}
	if _, stderr, code := runProc(t, root, "lookup", "k"); code != 0 {
		t.Fatalf("lookup k: exit %d: %s", code, stderr)
	}
	if _, _, code := runProc(t, root, "lookup", "missing"); code == 0 {
		t.Fatal("lookup of a missing key succeeded")
	}
	for _, name := range []string{"hits", "misses"} {
		if _, err := os.Lstat(filepath.Join(elsewhere, name)); err == nil {
			t.Errorf("a lookup created %s through the dangling symlink .stats/%s", filepath.Join(elsewhere, name), name)
		}
	}
	if ents, _ := os.ReadDir(elsewhere); len(ents) != 0 {
		t.Errorf("files appeared outside the root: %v", ents)
	}
	if stdout, _, _ := runProc(t, root, "stats", "--json"); !strings.Contains(stdout, `"hits"`) {
		t.Errorf("stats --json with symlinked counters: %s", stdout)
	}
}

// TestSafetySymlinkIndexDB: index.db as a symlink to a file outside the
// root (an existing one, and a dangling one): store refuses with an error
// naming index.db, the existing file is untouched and nothing is created
// at the dangling target.
func TestSafetySymlinkIndexDB(t *testing.T) {
	for _, existing := range []bool{true, false} {
		name := "dangling"
		if existing {
			name = "existing"
		}
		t.Run(name, func(t *testing.T) {
			// A real cache (it has kcache's root marker, so doctor works on
			// it) whose index.db was then replaced by a symlink.
			root := cliNewRoot(t)
			img0 := cliWrite(t, t.TempDir(), "bzImage", "image of k0")
			if _, stderr, code := runProc(t, root, "store", "k0", "--image", img0, "--arch", "x86_64"); code != 0 {
				t.Fatalf("store k0: exit %d: %s", code, stderr)
			}
			if err := os.Remove(filepath.Join(root, "index.db")); err != nil {
				t.Fatal(err)
			}
			outside := t.TempDir()
			target := filepath.Join(outside, "thesis.db")
			if existing {
				cliWrite(t, outside, "thesis.db", "not an index: someone's data\n")
			}
			if err := os.Symlink(target, filepath.Join(root, "index.db")); err != nil {
				t.Fatal(err)
			}
			before := safetySnapshot(t, outside)
			img := cliWrite(t, t.TempDir(), "bzImage", "image of k")
			_, stderr, code := runProc(t, root, "store", "k", "--image", img, "--arch", "x86_64")
			if code == 0 {
				t.Fatal("store through a symlinked index.db succeeded")
			}
			if !strings.Contains(stderr, filepath.Join(root, "index.db")) || !strings.Contains(stderr, "symlink") {
				t.Errorf("store's error does not name index.db as a symlink:\n%s", stderr)
			}
			for _, args := range [][]string{{"list"}, {"lookup", "k"}, {"rm", "k"}, {"gc", "--keep", "0"}, {"verify"}, {"doctor"}, {"stats"}} {
				runProc(t, root, args...)
			}
			safetySame(t, "outside", before, safetySnapshot(t, outside))
			if found := safetyDoctorSymlinks(t, root, "--dry-run"); len(found) != 1 || found[0] != filepath.Join(root, "index.db") {
				t.Errorf("doctor reports symlinks %v, want index.db", found)
			}
		})
	}
}
