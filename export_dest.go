package kcache

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Export writes only into directories that are not kcache's and replaces only
// what it can prove is a ktstr entry: a user's checkout that happens to be
// named like the key, or the cache's own blob directory, must never be
// swapped out and deleted. The rules live here:
//
//   - DIR must not be the cache root or lie beneath it (compared by device
//     and inode of DIR and each of its ancestors after resolving symlinks, so
//     a symlinked path to the root is caught too).
//   - DIR/KEY is replaced only when it is a real directory (not a symlink)
//     that holds a regular metadata.json naming its image (image_name) and
//     nothing but the files a ktstr entry can have: metadata.json, the image
//     file named by image_name, vmlinux and .config (the sidecar older ktstr
//     versions wrote), each a regular file. Anything else at DIR/KEY is
//     refused with an error naming it.
//   - The replaced entry is removed file by file (only those names), then
//     rmdir'd: never a recursive removal of whatever is there.

// ktstrEntryExtras are the file names a ktstr entry may hold besides its
// image (whose name metadata.json gives).
var ktstrEntryExtras = []string{"metadata.json", "vmlinux", ".config"}

// errNotKtstrEntry is matched by the error of a path that export refuses to
// replace because it is not a ktstr entry.
var errNotKtstrEntry = errors.New("not a ktstr cache entry; refusing to replace it")

// ktstrEntryFiles returns the files of the ktstr entry directory dir, or an
// error naming dir (and what in it) when dir is not one.
func ktstrEntryFiles(dir string) ([]string, error) {
	fi, err := os.Lstat(dir)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%s is a %s, %w", dir, fileKind(fi.Mode()), errNotKtstrEntry)
	}
	imageName, err := ktstrImageName(filepath.Join(dir, "metadata.json"))
	if err != nil {
		return nil, fmt.Errorf("%s: %v: %w", dir, err, errNotKtstrEntry)
	}
	allowed := map[string]bool{imageName: true}
	for _, n := range ktstrEntryExtras {
		allowed[n] = true
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		if !allowed[e.Name()] {
			return nil, fmt.Errorf("%s holds %s, which no ktstr entry has: %w", dir, p, errNotKtstrEntry)
		}
		if !e.Type().IsRegular() {
			return nil, fmt.Errorf("%s holds %s, a %s: %w", dir, p, fileKind(e.Type()), errNotKtstrEntry)
		}
		names = append(names, e.Name())
	}
	return names, nil
}

// ktstrImageName reads the image_name of a ktstr metadata.json, which must
// be a regular file (a symlink is not followed) naming a plain file.
func ktstrImageName(path string) (string, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return "", fmt.Errorf("no readable metadata.json (%w)", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return "", errors.New("metadata.json is not a regular file")
	}
	var m struct {
		ImageName *string `json:"image_name"`
	}
	if err := json.NewDecoder(io.LimitReader(f, 1<<20)).Decode(&m); err != nil {
		return "", fmt.Errorf("metadata.json is not ktstr's: %v", err)
	}
	switch n := m.ImageName; {
	case n == nil || *n == "" || *n == "." || *n == ".." || strings.ContainsRune(*n, '/'):
		return "", errors.New("metadata.json names no plain image file")
	case *n == "metadata.json" || *n == "vmlinux" || *n == ".config":
		return "", fmt.Errorf("metadata.json names %q as its image", *n)
	default:
		return *n, nil
	}
}

func fileKind(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m.IsDir():
		return "directory"
	case m.IsRegular():
		return "regular file"
	default:
		return "special file"
	}
}

// removeKtstrEntry removes the ktstr entry directory dir: it checks again
// that dir is one, unlinks exactly its entry files and removes the then
// empty directory. Anything that appeared meanwhile makes the rmdir fail,
// and is left in place.
func removeKtstrEntry(dir string) error {
	names, err := ktstrEntryFiles(dir)
	if err != nil {
		return err
	}
	return removeNames(dir, names)
}

// removeNames unlinks dir/name for each name (a missing one is fine), then
// removes dir, which must then be empty.
func removeNames(dir string, names []string) error {
	for _, n := range names {
		if err := os.Remove(filepath.Join(dir, n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	if err := unix.Rmdir(dir); err != nil {
		return fmt.Errorf("remove %s: %w (left in place)", dir, err)
	}
	return nil
}

// checkExportDir refuses a destination that is the cache root or lies
// beneath it. dir need not exist: its nearest existing ancestor is checked
// (before anything is created); Export checks again once dir exists.
func (c *Cache) checkExportDir(dir string) error {
	var root unix.Stat_t
	err := unix.Stat(c.root, &root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // no cache yet: nothing to protect
	}
	if err != nil {
		return fmt.Errorf("export: %s: %w", c.root, err)
	}
	p, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for {
		if _, err := os.Stat(p); err == nil {
			break
		}
		parent := filepath.Dir(p)
		if parent == p {
			return nil
		}
		p = parent
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return err
	}
	for q := real; ; q = filepath.Dir(q) {
		var st unix.Stat_t
		if err := unix.Stat(q, &st); err != nil {
			return err
		}
		if st.Dev == root.Dev && st.Ino == root.Ino {
			return invalidf("export: %s is inside the cache root %s; export writes outside the cache only", dir, c.root)
		}
		if filepath.Dir(q) == q {
			return nil
		}
	}
}
