package kcache_test

// Issue 12 items 3 and 9: migrate --remove-source deletes only the files it
// imported and verified, and a migration stopped by an error still reports
// what it did.

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kcache/kcache/internal/tmpfstest"

	"github.com/kcache/kcache"
	"github.com/kcache/kcache/internal/legacy"
	"github.com/kcache/kcache/migrate"
)

// migWrite writes path (creating parents) and returns the bytes written.
func migWrite(t *testing.T, path string, data []byte) []byte {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return data
}

func migRandom(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// migDirNames lists a directory's names, sorted.
func migDirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func migSameFile(t *testing.T, path string, want []byte) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Errorf("%s: %v", path, err)
		return
	}
	if !fi.Mode().IsRegular() {
		t.Errorf("%s is %v, not a regular file", path, fi.Mode())
		return
	}
	got, err := os.ReadFile(path)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("%s changed (%d bytes, want %d; %v)", path, len(got), len(want), err)
	}
}

// --remove-source unlinks an entry's metadata.json, image and imported
// vmlinux, and nothing else: files it did not import stay byte-identical,
// with their directory, and the report says why the directory stayed; a
// symlinked image or entry directory is neither followed nor removed; a
// clean entry directory goes completely.
func TestSafetyMigrateRemoveSourceOnlyImportedFiles(t *testing.T) {
	f := migFixture(t)
	var withVm, noVm []string
	for _, k := range migKeys(f.Valid) {
		if f.Valid[k].Meta.HasVmlinux {
			withVm = append(withVm, k)
		} else {
			noVm = append(noVm, k)
		}
	}
	if len(withVm) < 2 || len(noVm) < 5 {
		t.Fatalf("fixture: %d entries with a vmlinux, %d without", len(withVm), len(noVm))
	}
	dir := func(k string) string { return filepath.Join(f.Root, k) }
	outside := t.TempDir()

	// (a) an entry with files ktstr never writes.
	kNotes := withVm[0]
	notes := migWrite(t, filepath.Join(dir(kNotes), "NOTES"), []byte("bisect: good at this one\n"))
	debug := migWrite(t, filepath.Join(dir(kNotes), "vmlinux.debug"), migRandom(t, 64<<10))
	// (b) a vmlinux while has_vmlinux is false: not imported.
	kStray := noVm[0]
	stray := migWrite(t, filepath.Join(dir(kStray), "vmlinux"), migRandom(t, 32<<10))
	// (c) has_vmlinux true, and vmlinux is a directory with content.
	kVmDir := noVm[1]
	m := f.Valid[kVmDir].Meta
	m.HasVmlinux = true
	md, err := legacy.MarshalMetadata(m)
	if err != nil {
		t.Fatal(err)
	}
	migWrite(t, filepath.Join(dir(kVmDir), "metadata.json"), md)
	inner := migWrite(t, filepath.Join(dir(kVmDir), "vmlinux", "build.log"), []byte("make -j64\n"))
	// (d) clean entries, with and without a vmlinux.
	kClean := []string{withVm[1], noVm[2]}
	// A symlinked image: importable (ktstr reads through it), never removed.
	kLinkImg := noVm[3]
	img := filepath.Join(dir(kLinkImg), f.Valid[kLinkImg].Meta.ImageName)
	target := filepath.Join(outside, "bzImage-elsewhere")
	imgData, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	migWrite(t, target, imgData)
	if err := os.Remove(img); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, img); err != nil {
		t.Fatal(err)
	}
	// A symlinked entry directory: importable, never removed through.
	kLinkDir := noVm[4]
	moved := filepath.Join(outside, "entry")
	if err := os.Rename(dir(kLinkDir), moved); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(moved, dir(kLinkDir)); err != nil {
		t.Fatal(err)
	}
	movedBefore := snapshotTree(t, moved)

	c := mustOpen(t.TempDir(), &kcache.Options{})
	r, err := c.Migrate(context.Background(), kcache.MigrateOptions{From: f.Root, RemoveSource: true, LockTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := migImportedKeys(r), migKeys(f.Valid); !reflect.DeepEqual(got, want) {
		t.Fatalf("imported %v\nwant %v", got, want)
	}
	kept := map[string]string{}
	for _, p := range r.SourceDirsKept {
		kept[p.Key] = p.Reason
	}
	notRemoved := map[string]string{}
	for _, p := range r.NotRemoved {
		notRemoved[p.Key] = p.Reason
	}
	removed := func(k string) bool { return slices.Contains(r.RemovedFromSource, k) }

	t.Run("foreign-files", func(t *testing.T) {
		if got := migDirNames(t, dir(kNotes)); !reflect.DeepEqual(got, []string{"NOTES", "vmlinux.debug"}) {
			t.Fatalf("left in %s: %v; want only NOTES and vmlinux.debug", dir(kNotes), got)
		}
		migSameFile(t, filepath.Join(dir(kNotes), "NOTES"), notes)
		migSameFile(t, filepath.Join(dir(kNotes), "vmlinux.debug"), debug)
		if !removed(kNotes) || !strings.Contains(kept[kNotes], "NOTES") || !strings.Contains(kept[kNotes], "vmlinux.debug") {
			t.Errorf("removed %v, kept %q; want removed with its directory kept for NOTES and vmlinux.debug", removed(kNotes), kept[kNotes])
		}
	})
	t.Run("vmlinux-without-flag", func(t *testing.T) {
		if got := migDirNames(t, dir(kStray)); !reflect.DeepEqual(got, []string{"vmlinux"}) {
			t.Fatalf("left in %s: %v; want only vmlinux", dir(kStray), got)
		}
		migSameFile(t, filepath.Join(dir(kStray), "vmlinux"), stray)
		if !removed(kStray) || !strings.Contains(kept[kStray], "vmlinux") {
			t.Errorf("removed %v, kept %q", removed(kStray), kept[kStray])
		}
		if e, err := c.Describe(context.Background(), kStray); err != nil || e.HasVmlinux {
			t.Errorf("kcache's %s: %+v, %v; want no vmlinux", kStray, e, err)
		}
	})
	t.Run("vmlinux-directory", func(t *testing.T) {
		if got := migDirNames(t, dir(kVmDir)); !reflect.DeepEqual(got, []string{"vmlinux"}) {
			t.Fatalf("left in %s: %v", dir(kVmDir), got)
		}
		migSameFile(t, filepath.Join(dir(kVmDir), "vmlinux", "build.log"), inner)
		if !removed(kVmDir) || !strings.Contains(kept[kVmDir], "vmlinux (a directory)") {
			t.Errorf("removed %v, kept %q", removed(kVmDir), kept[kVmDir])
		}
	})
	t.Run("clean-entry", func(t *testing.T) {
		for _, k := range kClean {
			if !removed(k) || kept[k] != "" {
				t.Errorf("%s: removed %v, kept %q", k, removed(k), kept[k])
			}
			if _, err := os.Lstat(dir(k)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s: the directory is still there (%v)", k, err)
			}
			migCheckEntry(t, c, f.Valid[k])
		}
	})
	t.Run("symlinked-image", func(t *testing.T) {
		if l, err := os.Readlink(img); err != nil || l != target {
			t.Fatalf("the image symlink: %q, %v", l, err)
		}
		migSameFile(t, target, imgData)
		if _, err := os.Stat(filepath.Join(dir(kLinkImg), "metadata.json")); err != nil {
			t.Fatal(err)
		}
		if removed(kLinkImg) || !strings.Contains(notRemoved[kLinkImg], "symbolic link") {
			t.Errorf("removed %v, not removed because %q", removed(kLinkImg), notRemoved[kLinkImg])
		}
	})
	t.Run("symlinked-entry-dir", func(t *testing.T) {
		if l, err := os.Readlink(dir(kLinkDir)); err != nil || l != moved {
			t.Fatalf("the entry symlink: %q, %v", l, err)
		}
		movedBefore.diff(t, snapshotTree(t, moved), "migrate --remove-source through a symlinked entry")
		if removed(kLinkDir) || !strings.Contains(notRemoved[kLinkDir], "symbolic link") {
			t.Errorf("removed %v, not removed because %q", removed(kLinkDir), notRemoved[kLinkDir])
		}
	})
	// Every other valid entry went completely.
	special := []string{kNotes, kStray, kVmDir, kLinkImg, kLinkDir}
	for _, k := range migKeys(f.Valid) {
		if slices.Contains(special, k) {
			continue
		}
		if _, err := os.Lstat(dir(k)); !removed(k) || !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: removed %v, directory: %v", k, removed(k), err)
		}
	}
}

// migTmpfsSource writes a ktstr cache of n entries with 1.5 MiB random
// images (no vmlinux) for a kcache on a 4 MiB filesystem: two fit, the
// third fails with ENOSPC.
func migTmpfsSource(t *testing.T, n int) (root string, keys []string, images map[string][]byte) {
	t.Helper()
	root, work := t.TempDir(), t.TempDir()
	images = map[string][]byte{}
	for i := range n {
		key := fmt.Sprintf("6.16.%d-tarball-x86_64", i)
		data := migRandom(t, 3<<19)
		p := filepath.Join(work, key)
		migWrite(t, p, data)
		v := fmt.Sprintf("6.16.%d", i)
		if _, err := legacy.Store(root, key, p, "", legacy.Metadata{Version: &v, Source: legacy.Source{Type: "tarball"},
			Arch: "x86_64", ImageName: "bzImage", BuiltAt: fmt.Sprintf("2026-06-%02dT00:00:00Z", i+1)}); err != nil {
			t.Fatal(err)
		}
		keys, images[key] = append(keys, key), data
	}
	return root, keys, images
}

// A migration that runs out of space midway returns its report with the
// error: the entries imported (and removed from the source) before the
// failure are in it, and exactly those are in kcache and gone from the
// source; the rest of the source is untouched.
func TestSafetyMigrateFailureKeepsReport(t *testing.T) {
	mnt := tmpfstest.Mount(t, "4m")
	from, keys, images := migTmpfsSource(t, 5)
	c := mustOpen(filepath.Join(mnt, "cache"), &kcache.Options{})
	r, err := c.Migrate(context.Background(), kcache.MigrateOptions{From: from, RemoveSource: true, LockTimeout: time.Second})
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("migrate onto a 4 MiB filesystem: %v; want ENOSPC", err)
	}
	if r == nil {
		t.Fatal("no report with the error")
	}
	done := migImportedKeys(r)
	if len(done) == 0 || len(done) >= len(keys) || !reflect.DeepEqual(done, keys[:len(done)]) {
		t.Fatalf("imported %v; want a strict prefix of %v", done, keys)
	}
	if !reflect.DeepEqual(r.RemovedFromSource, done) {
		t.Fatalf("removed from the source %v; want %v", r.RemovedFromSource, done)
	}
	if r.From != from || r.BytesIn != int64(len(done))*int64(len(images[keys[0]])) {
		t.Fatalf("report %+v", r)
	}
	for _, k := range done {
		if _, err := os.Lstat(filepath.Join(from, k)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: still in the source (%v)", k, err)
		}
		if e, err := c.Describe(context.Background(), k); err != nil || e.Image.Size != int64(len(images[k])) {
			t.Errorf("%s in kcache: %v", k, err)
		}
	}
	for _, k := range keys[len(done):] {
		migSameFile(t, filepath.Join(from, k, "bzImage"), images[k])
		if _, err := c.Describe(context.Background(), k); !errors.Is(err, kcache.ErrNotFound) {
			t.Errorf("%s: in kcache (%v)", k, err)
		}
	}
	left, err := migrate.ListKeys(from)
	if err != nil || !reflect.DeepEqual(left, keys[len(done):]) {
		t.Fatalf("left in the source: %v, %v", left, err)
	}
	t.Logf("failed after %d of %d entries", len(done), len(keys))
}
