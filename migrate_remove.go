package kcache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/kcache/kcache/index"
	"github.com/kcache/kcache/internal/fsync"
	"github.com/kcache/kcache/lock"
	"github.com/kcache/kcache/migrate"
	"golang.org/x/sys/unix"
)

// removeLegacy removes from the ktstr cache at from the files of entry key
// that kcache imported, if they are verifiably what rec holds; see Migrate.
// It returns, when the directory had to stay, why (the other things in it).
//
// Only files are unlinked, never a directory tree: the user may keep notes,
// debug files or anything else in an entry directory, and those were never
// imported, so removing them would destroy data kcache does not hold. Every
// file is opened without following a symlink, hashed through that
// descriptor, and unlinked only if the name still refers to the same,
// unmodified inode; a symlink anywhere in the entry (the directory itself
// included) is never followed or removed.
func (c *Cache) removeLegacy(ctx context.Context, from, key string, rec *index.Record) (keptBecause string, err error) {
	lockPath := migrate.LockPath(from, key)
	l, err := lock.Acquire(ctx, lockPath, lock.Exclusive, 0, fmt.Sprintf("ktstr cache entry %q", key))
	if err != nil {
		return "", err
	}
	defer l.Release()
	dir := filepath.Join(from, key)
	// O_NOFOLLOW: an entry directory that is a symlink is someone else's
	// directory as far as removal is concerned.
	d, err := os.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
		return "", fmt.Errorf("%s is a symbolic link or not a directory; kept, and what it points to too", dir)
	}
	if err != nil {
		return "", err
	}
	defer d.Close()
	dfd := int(d.Fd())

	var buf strings.Builder
	md, err := readEntryFile(dfd, migrate.MetadataFile, &buf)
	if err != nil {
		return "", fmt.Errorf("%s: %w; kept", dir, err)
	}
	defer md.f.Close()
	m, corrupt := migrate.ParseMetadata([]byte(buf.String()))
	if corrupt != nil {
		return "", fmt.Errorf("the source entry changed and is now corrupt (%s); kept", corrupt.Reason)
	}
	meta, err := legacyMetadata(m).check(c.now())
	if err != nil {
		return "", err
	}
	differs := errors.New("the source entry differs from kcache's; kept (a later migration imports it)")
	if !legacyMetaMatches(rec, meta, m.VmlinuxStripped) {
		return "", differs
	}
	// Import takes <dir>/vmlinux when has_vmlinux is set and it is a
	// regular file (symlinks followed, as ktstr reads it); the source still
	// matches kcache only if that gives the same answer now.
	var vst unix.Stat_t
	importable := m.HasVmlinux && unix.Fstatat(dfd, "vmlinux", &vst, 0) == nil && vst.Mode&unix.S_IFMT == unix.S_IFREG
	if importable != rec.HasVmlinux {
		return "", differs
	}

	h := sha256.New()
	img, err := readEntryFile(dfd, m.ImageName, h)
	if err != nil {
		return "", fmt.Errorf("%s: %w; kept", dir, err)
	}
	defer img.f.Close()
	if img.size != rec.Image.Size || hexSum(h) != rec.Image.Digest {
		return "", differs
	}
	files := []*entryFile{md, img}
	if rec.HasVmlinux {
		h.Reset()
		vm, err := readEntryFile(dfd, "vmlinux", h)
		if err != nil {
			return "", fmt.Errorf("%s: %w; kept", dir, err)
		}
		defer vm.f.Close()
		if vm.size != rec.Migrated.VmlinuxSize || hexSum(h) != rec.Migrated.VmlinuxSHA256 {
			return "", differs
		}
		files = append(files, vm)
	}
	for _, b := range []*index.Blob{&rec.Image, rec.Vmlinux} {
		if b == nil {
			continue
		}
		if err := c.blobs.Verify(b.Digest); err != nil {
			return "", fmt.Errorf("kcache's copy does not verify (%w); the source is kept", err)
		}
	}

	// The last check before unlinking: each name still refers to the inode
	// that was hashed, unchanged since (size, mtime and ctime; ctime moves
	// on every write and on every link or rename of the inode).
	for _, ef := range files {
		var st unix.Stat_t
		if err := unix.Fstatat(dfd, ef.name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return "", fmt.Errorf("%s/%s: %w; kept", dir, ef.name, err)
		}
		if !sameInode(&st, &ef.st) {
			return "", fmt.Errorf("%s/%s changed while it was checked; kept", dir, ef.name)
		}
	}
	// metadata.json first: once it is gone ktstr no longer sees an entry, so
	// an interruption between the unlinks leaves a directory ktstr lists as
	// corrupt ("missing"), never an entry ktstr would serve half of.
	for _, ef := range files {
		if err := unix.Unlinkat(dfd, ef.name, 0); err != nil {
			return "", fmt.Errorf("remove %s/%s: %w", dir, ef.name, err)
		}
	}
	if err := unix.Fsync(dfd); err != nil {
		c.warnf("fsync %s: %v", dir, err)
	}
	others, err := entryOthers(d, dfd)
	if err != nil {
		return "", fmt.Errorf("%s: %w", dir, err)
	}
	if len(others) > 0 {
		return "contains " + strings.Join(others, ", ") + " (not imported; kept with the directory)", nil
	}
	// rmdir removes only an empty directory and never follows a symlink:
	// anything that appeared meanwhile keeps the directory.
	if err := unix.Rmdir(dir); err != nil {
		if errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST) {
			return "something was added to the directory while its files were removed; kept", nil
		}
		return "", fmt.Errorf("remove %s: %w", dir, err)
	}
	if err := fsync.Dir(from); err != nil {
		c.warnf("%v", err)
	}
	return "", nil
}

// entryFile is one file of a legacy entry that removal read: opened
// without following a symlink, with its status after the read.
type entryFile struct {
	name string
	f    *os.File
	st   unix.Stat_t
	size int64
}

// readEntryFile opens name in the directory dfd without following a
// symlink, checks that it is a regular file and copies it to w. The caller
// closes the returned file.
func readEntryFile(dfd int, name string, w io.Writer) (*entryFile, error) {
	// O_NONBLOCK: a FIFO put there must not block the open; the type is
	// checked on the descriptor right after.
	fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ELOOP) {
		return nil, fmt.Errorf("%s is a symbolic link (neither it nor its target is removed)", name)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	ef := &entryFile{name: name, f: os.NewFile(uintptr(fd), name)}
	if err := unix.Fstat(fd, &ef.st); err != nil {
		ef.f.Close()
		return nil, fmt.Errorf("stat %s: %w", name, err)
	}
	if ef.st.Mode&unix.S_IFMT != unix.S_IFREG {
		ef.f.Close()
		return nil, fmt.Errorf("%s is %s, not a regular file", name, modeWord(ef.st.Mode))
	}
	n, err := io.Copy(w, ef.f)
	if err == nil {
		err = unix.Fstat(fd, &ef.st)
	}
	if err != nil {
		ef.f.Close()
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if n != ef.st.Size {
		ef.f.Close()
		return nil, fmt.Errorf("%s changed while it was read", name)
	}
	ef.size = n
	return ef, nil
}

// entryOthers lists what is left in an entry directory, each name with its
// type when it is not a regular file, sorted.
func entryOthers(d *os.File, dfd int) ([]string, error) {
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	for i, n := range names {
		var st unix.Stat_t
		if unix.Fstatat(dfd, n, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT != unix.S_IFREG {
			names[i] = n + " (" + modeWord(st.Mode) + ")"
		}
	}
	return names, nil
}

// sameInode reports whether two stats are of the same inode, unmodified.
func sameInode(a, b *unix.Stat_t) bool {
	return a.Dev == b.Dev && a.Ino == b.Ino && a.Size == b.Size && a.Mtim == b.Mtim && a.Ctim == b.Ctim
}

// modeWord names a file type for messages.
func modeWord(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFLNK:
		return "a symbolic link"
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFCHR, unix.S_IFBLK:
		return "a device"
	case unix.S_IFREG:
		return "a regular file"
	}
	return "of an unknown type"
}

func hexSum(h hash.Hash) string { return hex.EncodeToString(h.Sum(nil)) }
