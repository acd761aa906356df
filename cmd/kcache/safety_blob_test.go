package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// writeInPlace overwrites path's bytes without replacing the file (same
// inode, same size), as a write through a hard link does. Root ignores the
// 0444 mode; anyone else gets write permission first.
func writeInPlace(t *testing.T, path string, data []byte) {
	t.Helper()
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
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// sameSizeOther returns bytes of path's size that differ from its content.
func sameSizeOther(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range data {
		data[i] ^= 0x5a
	}
	return data
}

// lookupImage returns the image path `kcache lookup KEY` prints.
func lookupImage(t *testing.T, root, key string) (string, string, int) {
	t.Helper()
	stdout, stderr, code := runProc(t, root, "lookup", key)
	return strings.SplitN(stdout, "\n", 2)[0], stderr, code
}

func sampleBlob(t *testing.T, root string) string {
	d := cliSHA256(t, cliSampleImage)
	return filepath.Join(root, "blobs", "sha256", d[:2], d)
}

// A write through an exported file (root ignores its 0444 mode) never
// reaches the cache: verify, deep or not, finds nothing, and lookup serves
// the stored bytes.
func TestSafetyExportWriteDoesNotReachBlob(t *testing.T) {
	root := t.TempDir()
	safetyStore(t, root, "a", cliSampleImage)
	exp := t.TempDir()
	if _, stderr, code := runProc(t, root, "export", "a", exp); code != 0 {
		t.Fatalf("export: exit %d\n%s", code, stderr)
	}
	exported := filepath.Join(exp, "a", "bzImage")
	writeInPlace(t, exported, sameSizeOther(t, exported))
	for _, args := range [][]string{{"verify"}, {"verify", "--deep"}} {
		if _, stderr, code := runProc(t, root, args...); code != 0 {
			t.Errorf("%v after a write to the exported file: exit %d\n%s", args, code, stderr)
		}
	}
	img, stderr, code := lookupImage(t, root, "a")
	if code != 0 || cliSHA256(t, img) != cliSHA256(t, cliSampleImage) {
		t.Errorf("lookup a: exit %d, %s\n%s; want the stored bytes", code, img, stderr)
	}
}

// A blob written in place (as through a hard link, by root) is not trusted
// for deduplication: storing the same content under another key hashes it,
// finds it wrong and replaces it, so both keys serve the right bytes.
// Before that, lookup reports the damaged entry instead of serving it.
func TestSafetyDamagedBlobRepairedByStore(t *testing.T) {
	root := t.TempDir()
	safetyStore(t, root, "a", cliSampleImage)
	blob := sampleBlob(t, root)
	writeInPlace(t, blob, sameSizeOther(t, blob))
	if _, stderr, code := lookupImage(t, root, "a"); code == 0 || !strings.Contains(stderr, "image_content_mismatch") {
		t.Errorf("lookup of the damaged entry: exit %d\n%s; want image_content_mismatch", code, stderr)
	}
	_, stderr, code := runProc(t, root, "store", "b", "--image", cliSampleImage, "--arch", "x86_64", "--version", "6.14.2")
	if code != 0 {
		t.Fatalf("store b: exit %d\n%s", code, stderr)
	}
	if !strings.Contains(stderr, "replaced it") {
		t.Errorf("store b did not warn about the replaced blob:\n%s", stderr)
	}
	if cliSHA256(t, blob) != cliSHA256(t, cliSampleImage) {
		t.Fatalf("the blob still holds the damaged bytes after store b")
	}
	for _, k := range []string{"a", "b"} {
		img, stderr, code := lookupImage(t, root, k)
		if code != 0 || cliSHA256(t, img) != cliSHA256(t, cliSampleImage) {
			t.Errorf("lookup %s: exit %d, %s\n%s; want the stored bytes", k, code, img, stderr)
		}
	}
	if _, stderr, code := runProc(t, root, "verify", "--deep"); code != 0 {
		t.Errorf("verify --deep after the repair: exit %d\n%s", code, stderr)
	}
}

// verify without --deep re-hashes a blob whose file changed since it was
// stored (its ctime moved) and reports the damaged entry.
func TestSafetyVerifyFindsBlobWrittenInPlace(t *testing.T) {
	root := t.TempDir()
	safetyStore(t, root, "a", cliSampleImage)
	blob := sampleBlob(t, root)
	writeInPlace(t, blob, sameSizeOther(t, blob))
	stdout, stderr, code := runProc(t, root, "verify", "--json")
	if code != 1 || !strings.Contains(stdout, `"blob_mismatch"`) || !strings.Contains(stdout, `"key": "a"`) {
		t.Errorf("verify: exit %d\n%s\n%s; want a blob_mismatch of a", code, stdout, stderr)
	}
}

// A blob that a user hard-linked elsewhere (its link count above 1) is not
// reused by deduplication: the next store of the same content replaces it,
// so the blob has one link again and a write through the old link no
// longer reaches it.
func TestSafetyHardLinkedBlobReplacedByStore(t *testing.T) {
	root := t.TempDir()
	safetyStore(t, root, "a", cliSampleImage)
	blob := sampleBlob(t, root)
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Link(blob, link); err != nil {
		t.Skip(err)
	}
	safetyStore(t, root, "b", cliSampleImage)
	var st syscall.Stat_t
	if err := syscall.Stat(blob, &st); err != nil {
		t.Fatal(err)
	}
	if st.Nlink != 1 {
		t.Errorf("the blob has %d links after store b, want 1", st.Nlink)
	}
	writeInPlace(t, link, sameSizeOther(t, link))
	if cliSHA256(t, blob) != cliSHA256(t, cliSampleImage) {
		t.Errorf("a write through the old hard link reached the blob")
	}
}
