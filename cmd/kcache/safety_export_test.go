package main

import (
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// safetyStore stores image under key in root through a real kcache process.
func safetyStore(t *testing.T, root, key, image string) {
	t.Helper()
	if _, stderr, code := runProc(t, root, "store", key, "--image", image, "--arch", "x86_64", "--version", "6.14.2"); code != 0 {
		t.Fatalf("store %s: exit %d\n%s", key, code, stderr)
	}
}

// blobDigests returns every blob file under root/blobs with the sha256 of
// its bytes, failing the test for a blob whose bytes do not match its name.
func checkBlobsIntact(t *testing.T, root string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(filepath.Join(root, "blobs"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		if hex.EncodeToString(sum[:]) != d.Name() {
			t.Errorf("blob %s does not hash to its name", p)
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Export over a directory that is not a ktstr entry (a source checkout
// named like the key, a file, a symlink, an entry with an extra file)
// fails naming the path and leaves everything there untouched.
func TestSafetyExportRefusesForeignDir(t *testing.T) {
	root := t.TempDir()
	safetyStore(t, root, "linux", cliSampleImage)
	src := t.TempDir()
	sched := filepath.Join(src, "linux", "kernel", "sched.c")
	if err := os.MkdirAll(filepath.Dir(sched), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sched, []byte("x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := runProc(t, root, "export", "linux", src)
	if code == 0 {
		t.Errorf("export over a source checkout exited 0")
	}
	if !strings.Contains(stderr, filepath.Join(src, "linux")) {
		t.Errorf("the error does not name %s:\n%s", filepath.Join(src, "linux"), stderr)
	}
	if got, err := os.ReadFile(sched); err != nil || string(got) != "x\n" {
		t.Fatalf("sched.c after export: %q, %v", got, err)
	}

	// A regular file, a symlink and an entry with a file no entry has.
	other := t.TempDir()
	target := filepath.Join(other, "target")
	if err := os.WriteFile(target, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := map[string]func(dir string) error{
		"file":    func(dir string) error { return os.WriteFile(filepath.Join(dir, "linux"), []byte("keep"), 0o644) },
		"symlink": func(dir string) error { return os.Symlink(other, filepath.Join(dir, "linux")) },
		"extra": func(dir string) error {
			e := filepath.Join(dir, "linux")
			if err := os.Mkdir(e, 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(e, "metadata.json"), []byte(`{"image_name":"bzImage"}`), 0o644); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(e, "NOTES"), []byte("keep"), 0o644)
		},
	}
	for name, mk := range cases {
		dir := t.TempDir()
		if err := mk(dir); err != nil {
			t.Fatal(err)
		}
		_, stderr, code := runProc(t, root, "export", "linux", dir)
		if code == 0 || !strings.Contains(stderr, filepath.Join(dir, "linux")) {
			t.Errorf("%s: export exit %d, stderr %q; want a failure naming %s", name, code, stderr, filepath.Join(dir, "linux"))
		}
		switch name {
		case "file":
			if got, _ := os.ReadFile(filepath.Join(dir, "linux")); string(got) != "keep" {
				t.Errorf("file: replaced")
			}
		case "symlink":
			if fi, err := os.Lstat(filepath.Join(dir, "linux")); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
				t.Errorf("symlink: replaced")
			}
			if got, _ := os.ReadFile(target); string(got) != "keep" {
				t.Errorf("symlink: its target changed")
			}
		case "extra":
			if got, _ := os.ReadFile(filepath.Join(dir, "linux", "NOTES")); string(got) != "keep" {
				t.Errorf("extra: NOTES lost")
			}
		}
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".tmp-") {
				t.Errorf("%s: staging %s left behind", name, e.Name())
			}
		}
	}
}

// Export into the cache root, its blob directory or a symlink to the root is
// refused (a usage error naming the root) and every blob stays intact.
func TestSafetyExportRefusesCacheRoot(t *testing.T) {
	root := t.TempDir()
	safetyStore(t, root, "sha256", cliSampleImage)
	safetyStore(t, root, "k", cliSampleImage)
	before := checkBlobsIntact(t, root)
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(root, link); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{filepath.Join(root, "blobs"), root, filepath.Join(link, "blobs"), filepath.Join(link, "blobs", "new", "sub")} {
		_, stderr, code := runProc(t, root, "export", "sha256", "k", dir)
		if code != exitUsage || !strings.Contains(stderr, "inside the cache root") {
			t.Errorf("export into %s: exit %d, stderr %q; want %d and a refusal", dir, code, stderr, exitUsage)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "blobs", "new")); err == nil {
		t.Errorf("a refused export created a directory in the cache")
	}
	if after := checkBlobsIntact(t, root); after != before {
		t.Errorf("%d blobs before the exports, %d after", before, after)
	}
	if _, stderr, code := runProc(t, root, "verify", "--deep"); code != 0 {
		t.Errorf("verify --deep after the refused exports: exit %d\n%s", code, stderr)
	}
}

// Exporting a key again over its previous export replaces the ktstr entry:
// the new bytes are there, no staging is left.
func TestSafetyExportReplacesPreviousExport(t *testing.T) {
	root := t.TempDir()
	safetyStore(t, root, "k", cliSampleImage)
	dir := t.TempDir()
	if _, stderr, code := runProc(t, root, "export", "k", dir); code != 0 {
		t.Fatalf("first export: exit %d\n%s", code, stderr)
	}
	img := filepath.Join(t.TempDir(), "bzImage")
	if err := os.WriteFile(img, []byte("another kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	safetyStore(t, root, "k", img)
	if _, stderr, code := runProc(t, root, "export", "k", dir); code != 0 {
		t.Fatalf("export over the previous export: exit %d\n%s", code, stderr)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "k", "bzImage")); err != nil || string(got) != "another kernel" {
		t.Errorf("exported image after the second export: %q, %v", got, err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("export dir holds %v, want only k", ents)
	}
}

// Exported files are not hard links to the blobs: their inode differs and
// the blob's link count stays 1.
func TestSafetyExportNoHardLinks(t *testing.T) {
	root := t.TempDir()
	safetyStore(t, root, "k", cliSampleImage)
	dir := t.TempDir()
	if _, stderr, code := runProc(t, root, "export", "k", dir); code != 0 {
		t.Fatalf("export: exit %d\n%s", code, stderr)
	}
	blob := filepath.Join(root, "blobs", "sha256", cliSHA256(t, cliSampleImage)[:2], cliSHA256(t, cliSampleImage))
	var b, e syscall.Stat_t
	if err := syscall.Stat(blob, &b); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat(filepath.Join(dir, "k", "bzImage"), &e); err != nil {
		t.Fatal(err)
	}
	if b.Ino == e.Ino && b.Dev == e.Dev {
		t.Errorf("the exported image is the blob's inode")
	}
	if b.Nlink != 1 {
		t.Errorf("the blob has %d links after export, want 1", b.Nlink)
	}
}
