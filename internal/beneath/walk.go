package beneath

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"golang.org/x/sys/unix"
)

// Dir is an open directory below the root, for callers that reach many
// names in it (a listing stats every blob): names relative to it are
// resolved from its descriptor, without resolving the root again.
type Dir struct {
	fd   int
	path string // full path, for messages
}

// OpenDir opens the directory p below the root.
func (r *Root) OpenDir(p string) (*Dir, error) {
	fd, rel, err := r.open("open", p, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, err
	}
	return &Dir{fd: fd, path: r.Join(rel)}, nil
}

// Path returns the directory's full path.
func (d *Dir) Path() string { return d.path }

// Close closes the directory.
func (d *Dir) Close() error {
	if d == nil || d.fd < 0 {
		return nil
	}
	err := unix.Close(d.fd)
	d.fd = -1
	return err
}

// OpenDir opens the subdirectory rel of d, following no symlink.
func (d *Dir) OpenDir(rel string) (*Dir, error) {
	fd, err := openat(d.fd, rel, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	full := filepath.Join(d.path, rel)
	if err == unix.ELOOP || err == unix.EXDEV {
		return nil, &SymlinkError{Path: full}
	}
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: full, Err: err}
	}
	return &Dir{fd: fd, path: full}, nil
}

// Lstat is fstatat(d, name, AT_SYMLINK_NOFOLLOW): name must be one
// component; a symlink is reported as one, never followed.
func (d *Dir) Lstat(name string) (os.FileInfo, error) {
	return lstatAt(d.fd, name, d.path+"/"+name)
}

// StatSize returns the size of the regular file name in d without
// following it; anything but a regular file (a symlink, a directory) is
// reported as not existing. It allocates nothing on success, for listings.
func (d *Dir) StatSize(name string) (int64, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return 0, &fs.PathError{Op: "lstat", Path: d.path + "/" + name, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return 0, &fs.PathError{Op: "lstat", Path: d.path + "/" + name, Err: notRegular(st.Mode)}
	}
	return st.Size, nil
}

// notRegular is the error of a blob-like name that is not a regular file:
// it matches fs.ErrNotExist (the file the caller wants is not there) and,
// for a symlink, ErrSymlink.
func notRegular(mode uint32) error {
	if mode&unix.S_IFMT == unix.S_IFLNK {
		return errNotRegular{symlink: true}
	}
	return errNotRegular{}
}

type errNotRegular struct{ symlink bool }

func (e errNotRegular) Error() string {
	if e.symlink {
		return "is a symlink, not a regular file (not followed)"
	}
	return "is not a regular file"
}

func (e errNotRegular) Is(target error) bool {
	return target == fs.ErrNotExist || (e.symlink && target == ErrSymlink)
}

// StatRegular is Dir.StatSize of p below the root (one resolution of its
// parent): the size of a regular file, fs.ErrNotExist for anything else.
func (r *Root) StatRegular(p string) (int64, error) {
	dfd, name, rel, err := r.parent("lstat", p)
	if err != nil {
		return 0, err
	}
	defer unix.Close(dfd)
	d := Dir{fd: dfd, path: filepath.Dir(r.Join(rel))}
	return d.StatSize(name)
}

// ReadDir reads the directory d, sorted by name. Entries' types come from
// lstat: a symlink is an entry of type fs.ModeSymlink.
func (d *Dir) ReadDir() ([]fs.DirEntry, error) {
	dup, err := unix.Openat(d.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: d.path, Err: err}
	}
	f := os.NewFile(uintptr(dup), d.path)
	defer f.Close()
	ents, err := f.ReadDir(-1)
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name() < ents[j].Name() })
	return ents, err
}

// ReadDir is os.ReadDir of p below the root.
func (r *Root) ReadDir(p string) ([]fs.DirEntry, error) {
	d, err := r.OpenDir(p)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.ReadDir()
}

// WalkDir is filepath.WalkDir of p below the root, with full paths: it
// descends only into real directories, opened from their parent's
// descriptor without following a symlink, and reports a symlink as an
// entry of type fs.ModeSymlink (never followed). A symlink at p itself, or
// above it, is fn's error for p (a *SymlinkError).
func (r *Root) WalkDir(p string, fn fs.WalkDirFunc) error {
	rel, err := r.rel(p)
	if err != nil {
		return fn(p, nil, err)
	}
	full := r.Join(rel)
	d, err := r.OpenDir(rel)
	if err != nil {
		err = fn(full, nil, err)
		if errors.Is(err, fs.SkipDir) || errors.Is(err, fs.SkipAll) {
			return nil
		}
		return err
	}
	fi, err := os.Lstat(full)
	if err != nil {
		d.Close()
		err = fn(full, nil, err)
		if errors.Is(err, fs.SkipDir) || errors.Is(err, fs.SkipAll) {
			return nil
		}
		return err
	}
	err = walkDir(d, full, fs.FileInfoToDirEntry(fi), fn)
	if errors.Is(err, fs.SkipDir) || errors.Is(err, fs.SkipAll) {
		return nil
	}
	return err
}

// walkDir walks the open directory d (closing it).
func walkDir(d *Dir, path string, de fs.DirEntry, fn fs.WalkDirFunc) error {
	defer d.Close()
	if err := fn(path, de, nil); err != nil {
		return err
	}
	ents, err := d.ReadDir()
	if err != nil {
		if err := fn(path, de, err); err != nil {
			if errors.Is(err, fs.SkipDir) {
				return nil
			}
			return err
		}
	}
	for _, e := range ents {
		sub := path + "/" + e.Name()
		if !e.IsDir() {
			if err := fn(sub, atEntry{e, d, sub}, nil); err != nil {
				if errors.Is(err, fs.SkipDir) {
					return nil // skip the rest of this directory
				}
				return err
			}
			continue
		}
		child, err := d.OpenDir(e.Name())
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // vanished during the walk
			}
			if err := fn(sub, e, err); err != nil && !errors.Is(err, fs.SkipDir) {
				return err
			}
			continue
		}
		if err := walkDir(child, sub, e, fn); err != nil {
			if errors.Is(err, fs.SkipDir) {
				continue
			}
			return err
		}
	}
	return nil
}

// RemoveAll removes p and, when it is a directory, everything in it,
// without ever following a symlink: entries are unlinked from their
// parent's descriptor (a symlink is removed, its target untouched) and
// subdirectories are opened O_NOFOLLOW. A missing p is not an error; a
// symlink above p is a *SymlinkError and nothing is removed.
func (r *Root) RemoveAll(p string) error {
	dfd, name, rel, err := r.parent("remove", p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	defer unix.Close(dfd)
	if err := removeAllAt(dfd, name, r.Join(rel)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func removeAllAt(dirfd int, name, full string) error {
	err := unix.Unlinkat(dirfd, name, 0)
	if err == nil || err == unix.ENOENT {
		return nil
	}
	if err != unix.EISDIR && err != unix.EPERM {
		return &fs.PathError{Op: "remove", Path: full, Err: err}
	}
	fd, err := retryEINTR(func() (int, error) {
		return unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	})
	if err == unix.ENOENT {
		return nil
	}
	if err != nil {
		return &fs.PathError{Op: "remove", Path: full, Err: err}
	}
	d := &Dir{fd: fd, path: full}
	for {
		ents, rerr := d.ReadDir()
		for _, e := range ents {
			if err := removeAllAt(d.fd, e.Name(), full+"/"+e.Name()); err != nil {
				d.Close()
				return err
			}
		}
		if rerr != nil {
			d.Close()
			return fmt.Errorf("remove %s: %w", full, rerr)
		}
		if len(ents) == 0 {
			break
		}
	}
	d.Close()
	if err := unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR); err != nil && err != unix.ENOENT {
		return &fs.PathError{Op: "remove", Path: full, Err: err}
	}
	return nil
}

// atEntry is a DirEntry whose Info is fstatat on its open directory (not a
// stat of its path, which would resolve the components above it again).
type atEntry struct {
	fs.DirEntry
	d    *Dir
	full string
}

func (e atEntry) Info() (fs.FileInfo, error) { return lstatAt(e.d.fd, e.Name(), e.full) }
