// Package beneath reaches files below a directory (a cache root) without
// following a symlink in any component below it.
//
// A cache root holds only what kcache wrote, and kcache never writes a
// symlink there. A symlink below the root is therefore someone else's, and
// following it would let a write, rename or delete meant for the cache land
// on files outside it (a user's checkout, another cache). Every operation
// opens the root once (the root itself may be a symlink: that is the user's
// choice of where the cache lives) and resolves the rest with openat2(2)
// RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS, or, on kernels without openat2, one
// O_NOFOLLOW openat per component. Operations that name a final component
// (mkdir, unlink, rename, lstat) open its parent that way and then use the
// *at syscall on the final name, which never follows it.
//
// Paths given to a Root are full paths that start with the root's path
// (what callers already build with filepath.Join(root, ...)), or else
// relative to the root; what follows the root must not climb out of it
// with "..". Errors name the full path; a refused
// symlink is a *SymlinkError (errors.Is(err, ErrSymlink)).
package beneath

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrSymlink is matched by every error that refused a symlink.
var ErrSymlink = errors.New("is a symlink, which kcache never creates under its root and refuses to follow")

// SymlinkError is a path that could not be used because a component of it
// below the root is a symlink (or would lead outside the root).
type SymlinkError struct {
	Path string // the path that was asked for
	Link string // the first symlink found on it, when known
}

func (e *SymlinkError) Error() string {
	if e.Link != "" && e.Link != e.Path {
		return fmt.Sprintf("%s: %s %s", e.Path, e.Link, ErrSymlink)
	}
	if e.Link == "" {
		return fmt.Sprintf("%s: a component is a symlink or leads outside the cache root; refusing to follow it", e.Path)
	}
	return fmt.Sprintf("%s %s", e.Path, ErrSymlink)
}

// Is makes errors.Is(err, ErrSymlink) true.
func (e *SymlinkError) Is(target error) bool { return target == ErrSymlink }

// noOpenat2 is set once openat2 returned ENOSYS; tests set it to exercise
// the component-wise fallback.
var noOpenat2 atomic.Bool

// Root is a directory below which no symlink is followed. It holds only the
// path: every call opens the root anew, so a Root stays valid when the
// directory is created later.
type Root struct {
	path string
}

// New returns the Root at path. Nothing is opened or created.
func New(path string) *Root { return &Root{path: filepath.Clean(path)} }

// Path returns the root's path.
func (r *Root) Path() string { return r.path }

// Join returns the full path of rel, for messages.
func (r *Root) Join(rel string) string {
	rel, err := r.rel(rel)
	if err != nil || rel == "." {
		return r.path
	}
	return r.path + "/" + rel
}

// rel turns p into a clean path relative to the root.
func (r *Root) rel(p string) (string, error) {
	// A path that starts with the root's path (absolute or, for a relative
	// root, relative to the working directory) is a full path.
	if c := filepath.Clean(p); c == r.path {
		return ".", nil
	} else if rest, ok := strings.CutPrefix(c, strings.TrimSuffix(r.path, "/")+"/"); ok && r.path != "." {
		p = rest
	} else if filepath.IsAbs(p) {
		return "", fmt.Errorf("%s is not below the cache root %s", p, r.path)
	}
	c := filepath.Clean(p)
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", &SymlinkError{Path: filepath.Join(r.path, p)}
	}
	return c, nil
}

// openRoot opens the root directory itself (following it if it is a symlink).
func (r *Root) openRoot() (int, error) {
	for {
		fd, err := unix.Open(r.path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return -1, &fs.PathError{Op: "open", Path: r.path, Err: err}
		}
		return fd, nil
	}
}

// openat opens rel below dirfd with flags, following no symlink and not
// leaving dirfd. The error is raw (an errno); callers wrap it.
func openat(dirfd int, rel string, flags int, mode uint32) (int, error) {
	flags |= unix.O_CLOEXEC
	if !noOpenat2.Load() {
		how := unix.OpenHow{Flags: uint64(flags), Mode: uint64(mode), Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS}
		if flags&(unix.O_CREAT|unix.O_TMPFILE) == 0 {
			how.Mode = 0
		}
		for i := 0; ; i++ {
			fd, err := unix.Openat2(dirfd, rel, &how)
			if err == unix.EINTR || (err == unix.EAGAIN && i < 100) {
				continue // EAGAIN: a concurrent rename somewhere; retry
			}
			if err == unix.ENOSYS {
				noOpenat2.Store(true)
				break
			}
			return fd, err
		}
	}
	return openatWalk(dirfd, rel, flags, mode)
}

// openatWalk is openat without openat2: one O_NOFOLLOW openat per component.
func openatWalk(dirfd int, rel string, flags int, mode uint32) (int, error) {
	parts := strings.Split(rel, "/")
	cur := dirfd
	closeCur := func() {
		if cur != dirfd {
			unix.Close(cur)
		}
	}
	for i, name := range parts {
		if name == ".." {
			closeCur()
			return -1, unix.EXDEV
		}
		last := i == len(parts)-1
		f := unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
		if last {
			f = flags | unix.O_NOFOLLOW
		}
		fd, err := retryEINTR(func() (int, error) { return unix.Openat(cur, name, f, mode) })
		if err == nil && (f&unix.O_PATH != 0) {
			// O_PATH|O_NOFOLLOW opens a symlink itself: refuse it.
			var st unix.Stat_t
			if unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
				unix.Close(fd)
				err = unix.ELOOP
			}
		}
		if err == unix.ENOTDIR && !last || err == unix.ENOTDIR && f&unix.O_DIRECTORY != 0 {
			var st unix.Stat_t
			if unix.Fstatat(cur, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
				err = unix.ELOOP
			}
		}
		closeCur()
		if err != nil {
			return -1, err
		}
		cur = fd
	}
	return cur, nil
}

func retryEINTR(f func() (int, error)) (int, error) {
	for {
		fd, err := f()
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// wrap turns a raw errno from resolving rel into an error naming the path;
// ELOOP and EXDEV become a *SymlinkError naming the first symlink on it.
func (r *Root) wrap(op, rel string, err error) error {
	full := r.Join(rel)
	if err == unix.ELOOP || err == unix.EXDEV {
		return &SymlinkError{Path: full, Link: r.firstSymlink(rel)}
	}
	return &fs.PathError{Op: op, Path: full, Err: err}
}

// firstSymlink names the first component of rel that is a symlink ("" when
// none is found: the error came from something else, e.g. a race).
func (r *Root) firstSymlink(rel string) string {
	p := r.path
	for _, name := range strings.Split(rel, "/") {
		p = filepath.Join(p, name)
		fi, err := os.Lstat(p)
		if err != nil {
			return ""
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return p
		}
	}
	return ""
}

// open resolves p below the root with flags and returns the fd.
func (r *Root) open(op, p string, flags int, mode uint32) (int, string, error) {
	rel, err := r.rel(p)
	if err != nil {
		return -1, "", err
	}
	rfd, err := r.openRoot()
	if err != nil {
		return -1, rel, err
	}
	defer unix.Close(rfd)
	if rel == "." {
		fd, err := retryEINTR(func() (int, error) { return unix.Openat(rfd, ".", flags|unix.O_CLOEXEC, mode) })
		if err != nil {
			return -1, rel, r.wrap(op, rel, err)
		}
		return fd, rel, nil
	}
	fd, err := openat(rfd, rel, flags, mode)
	if err != nil {
		return -1, rel, r.wrap(op, rel, err)
	}
	return fd, rel, nil
}

// OpenFile is os.OpenFile below the root: no component, the last included,
// may be a symlink (so O_CREAT never creates a file at a symlink's target).
func (r *Root) OpenFile(p string, flag int, perm os.FileMode) (*os.File, error) {
	fd, rel, err := r.open("open", p, flag, uint32(perm.Perm()))
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), r.Join(rel)), nil
}

// Open opens p for reading.
func (r *Root) Open(p string) (*os.File, error) { return r.OpenFile(p, os.O_RDONLY, 0) }

// ReadFile reads the whole file at p.
func (r *Root) ReadFile(p string) ([]byte, error) {
	f, err := r.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// Check resolves p below the root without following any symlink and
// without opening the file for I/O; a missing last component is not an
// error (its parent must resolve). It is for files that must be opened by
// path by other code (bbolt): checked immediately before that open.
func (r *Root) Check(p string) error {
	fd, rel, err := r.open("stat", p, unix.O_PATH|unix.O_NOFOLLOW, 0)
	if err == nil {
		// O_PATH|O_NOFOLLOW gives a descriptor of a symlink at the last
		// component instead of failing: look at what was opened.
		var st unix.Stat_t
		serr := unix.Fstat(fd, &st)
		unix.Close(fd)
		if serr == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
			return &SymlinkError{Path: r.Join(rel), Link: r.Join(rel)}
		}
		return nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		dfd, name, rel, perr := r.parent("stat", p)
		if perr != nil {
			if errors.Is(perr, fs.ErrNotExist) {
				return nil // created by the caller's MkdirAll later
			}
			return perr
		}
		defer unix.Close(dfd)
		var st unix.Stat_t
		if e := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); e == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
			return &SymlinkError{Path: r.Join(rel), Link: r.Join(rel)}
		}
		return nil
	}
	return err
}

// parent opens the directory that holds p's last component and returns it
// with that component's name.
func (r *Root) parent(op, p string) (dirfd int, name, rel string, err error) {
	rel, err = r.rel(p)
	if err != nil {
		return -1, "", "", err
	}
	if rel == "." {
		return -1, "", rel, &fs.PathError{Op: op, Path: r.path, Err: unix.EINVAL}
	}
	dir, name := filepath.Split(rel)
	if dir == "" {
		dir = "."
	}
	fd, _, err := r.open(op, dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return -1, "", rel, err
	}
	return fd, name, rel, nil
}

// Lstat is os.Lstat below the root: a symlink at the last component is
// reported as one (never followed); one above it is a *SymlinkError.
func (r *Root) Lstat(p string) (os.FileInfo, error) {
	rel, err := r.rel(p)
	if err != nil {
		return nil, err
	}
	if rel == "." {
		return os.Stat(r.path)
	}
	dfd, name, rel, err := r.parent("lstat", rel)
	if err != nil {
		return nil, err
	}
	defer unix.Close(dfd)
	return lstatAt(dfd, name, r.Join(rel))
}

// Mkdir is os.Mkdir below the root.
func (r *Root) Mkdir(p string, perm os.FileMode) error {
	dfd, name, rel, err := r.parent("mkdir", p)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	if err := unix.Mkdirat(dfd, name, uint32(perm.Perm())); err != nil {
		return &fs.PathError{Op: "mkdir", Path: r.Join(rel), Err: err}
	}
	return nil
}

// MkdirAll is os.MkdirAll below the root (the root itself included): an
// existing symlink on the way is refused, never followed.
func (r *Root) MkdirAll(p string, perm os.FileMode) error {
	rel, err := r.rel(p)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(r.path, perm); err != nil {
		return err
	}
	if rel == "." {
		return nil
	}
	parts := strings.Split(rel, "/")
	for i := range parts {
		sub := strings.Join(parts[:i+1], "/")
		err := r.Mkdir(sub, perm)
		if err == nil || errors.Is(err, fs.ErrExist) {
			if errors.Is(err, fs.ErrExist) {
				fi, err := r.Lstat(sub)
				if err != nil {
					return err
				}
				if fi.Mode()&fs.ModeSymlink != 0 {
					return &SymlinkError{Path: r.Join(rel), Link: r.Join(sub)}
				}
				if !fi.IsDir() {
					return &fs.PathError{Op: "mkdir", Path: r.Join(sub), Err: unix.ENOTDIR}
				}
			}
			continue
		}
		return err
	}
	return nil
}

// Remove is os.Remove below the root: it unlinks the last component itself
// (a symlink there is removed, its target untouched) or an empty directory.
func (r *Root) Remove(p string) error {
	dfd, name, rel, err := r.parent("remove", p)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	err = unix.Unlinkat(dfd, name, 0)
	if err == unix.EISDIR {
		err = unix.Unlinkat(dfd, name, unix.AT_REMOVEDIR)
	}
	if err != nil {
		return &fs.PathError{Op: "remove", Path: r.Join(rel), Err: err}
	}
	return nil
}

// Rename is os.Rename of two paths below the root.
func (r *Root) Rename(oldp, newp string) error {
	ofd, oname, orel, err := r.parent("rename", oldp)
	if err != nil {
		return err
	}
	defer unix.Close(ofd)
	nfd, nname, nrel, err := r.parent("rename", newp)
	if err != nil {
		return err
	}
	defer unix.Close(nfd)
	if err := unix.Renameat(ofd, oname, nfd, nname); err != nil {
		return &os.LinkError{Op: "rename", Old: r.Join(orel), New: r.Join(nrel), Err: err}
	}
	return nil
}

// Link is os.Link of two paths below the root (the old one not followed).
func (r *Root) Link(oldp, newp string) error {
	ofd, oname, orel, err := r.parent("link", oldp)
	if err != nil {
		return err
	}
	defer unix.Close(ofd)
	nfd, nname, nrel, err := r.parent("link", newp)
	if err != nil {
		return err
	}
	defer unix.Close(nfd)
	if err := unix.Linkat(ofd, oname, nfd, nname, 0); err != nil {
		return &os.LinkError{Op: "link", Old: r.Join(orel), New: r.Join(nrel), Err: err}
	}
	return nil
}

// Chtimes is os.Chtimes below the root, on the file itself (not followed).
func (r *Root) Chtimes(p string, atime, mtime time.Time) error {
	dfd, name, rel, err := r.parent("chtimes", p)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	ts := []unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
	if err := unix.UtimesNanoAt(dfd, name, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &fs.PathError{Op: "chtimes", Path: r.Join(rel), Err: err}
	}
	return nil
}

// SyncDir fsyncs the directory p below the root, making the names created,
// renamed or removed in it durable.
func (r *Root) SyncDir(p string) error {
	f, err := r.OpenFile(p, os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return fmt.Errorf("fsync directory: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync directory %s: %w", f.Name(), err)
	}
	return nil
}

// CreateTemp is os.CreateTemp in the directory dir below the root; the
// file's Name is its full path.
func (r *Root) CreateTemp(dir, pattern string) (*os.File, error) {
	rel, err := r.rel(dir)
	if err != nil {
		return nil, err
	}
	prefix, suffix, _ := strings.Cut(pattern, "*")
	for range 10000 {
		name := prefix + randomName() + suffix
		f, err := r.OpenFile(filepath.Join(rel, name), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		return f, err
	}
	return nil, &fs.PathError{Op: "createtemp", Path: r.Join(rel) + "/" + pattern, Err: fs.ErrExist}
}

var tempSeq atomic.Uint64

func randomName() string {
	var b [8]byte
	if _, err := unix.Getrandom(b[:], 0); err != nil {
		return fmt.Sprintf("%d-%d", os.Getpid(), tempSeq.Add(1))
	}
	return fmt.Sprintf("%x", b[:])
}

// lstatAt is fstatat(dirfd, name, AT_SYMLINK_NOFOLLOW) as an os.FileInfo.
func lstatAt(dirfd int, name, full string) (os.FileInfo, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, &fs.PathError{Op: "lstat", Path: full, Err: err}
	}
	return &fileInfo{name: filepath.Base(full), st: st}, nil
}

// fileInfo is an os.FileInfo made from a Stat_t.
type fileInfo struct {
	name string
	st   unix.Stat_t
}

func (fi *fileInfo) Name() string       { return fi.name }
func (fi *fileInfo) Size() int64        { return fi.st.Size }
func (fi *fileInfo) ModTime() time.Time { return time.Unix(fi.st.Mtim.Unix()) }
func (fi *fileInfo) IsDir() bool        { return fi.Mode().IsDir() }
func (fi *fileInfo) Sys() any {
	return &syscall.Stat_t{Dev: fi.st.Dev, Ino: fi.st.Ino, Nlink: fi.st.Nlink, Mode: fi.st.Mode, Uid: fi.st.Uid, Gid: fi.st.Gid, Size: fi.st.Size,
		Atim: syscall.Timespec(fi.st.Atim), Mtim: syscall.Timespec(fi.st.Mtim), Ctim: syscall.Timespec(fi.st.Ctim)}
}
func (fi *fileInfo) Mode() fs.FileMode {
	m := fs.FileMode(fi.st.Mode & 0o777)
	switch fi.st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		m |= fs.ModeDir
	case unix.S_IFLNK:
		m |= fs.ModeSymlink
	case unix.S_IFIFO:
		m |= fs.ModeNamedPipe
	case unix.S_IFSOCK:
		m |= fs.ModeSocket
	case unix.S_IFCHR:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFBLK:
		m |= fs.ModeDevice
	}
	if fi.st.Mode&unix.S_ISUID != 0 {
		m |= fs.ModeSetuid
	}
	if fi.st.Mode&unix.S_ISGID != 0 {
		m |= fs.ModeSetgid
	}
	if fi.st.Mode&unix.S_ISVTX != 0 {
		m |= fs.ModeSticky
	}
	return m
}

// RenameInto renames the file at old, a path outside the root chosen by
// the caller (a staging directory elsewhere), to newp below the root; newp's
// parent is resolved without following symlinks and its last component is
// replaced, never followed.
func (r *Root) RenameInto(old, newp string) error {
	nfd, nname, nrel, err := r.parent("rename", newp)
	if err != nil {
		return err
	}
	defer unix.Close(nfd)
	if err := unix.Renameat(unix.AT_FDCWD, old, nfd, nname); err != nil {
		return &os.LinkError{Op: "rename", Old: old, New: r.Join(nrel), Err: err}
	}
	return nil
}
