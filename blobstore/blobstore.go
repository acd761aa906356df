// Package blobstore is a content-addressed directory of immutable files:
//
//	<dir>/<2 hex>/<64 hex>     the bytes whose SHA-256 is the file name
//
// Content is written to a temporary file in a caller-chosen staging directory
// while it is hashed, fsynced, renamed into place, and the parent directory is
// fsynced, so a blob path either does not exist or holds exactly its content.
// Identical content is stored once. The package knows nothing about entries or
// reference counts; deciding when a blob may be removed is the caller's job.
//
// Every file the store reaches is resolved below its root (see NewBeneath)
// without following a symlink: a symlink at the blob directory, a <2 hex>
// subdirectory or a blob is never written, read or deleted through, and a
// blob that is a symlink counts as missing.
package blobstore

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/kcache/kcache/internal/beneath"
	"golang.org/x/sys/unix"
)

// Store is a blob directory.
type Store struct {
	root   *beneath.Root // nothing below it is followed if a symlink
	dir    string
	prefix string // filepath.Clean(dir) + "/", "" when that is not a plain join
}

// New returns the store rooted at dir, below which no symlink is followed.
// Nothing is created until a blob is.
func New(dir string) *Store { return NewBeneath(beneath.New(dir), dir) }

// NewBeneath returns the store at dir, which is root or a directory below
// it: no symlink between root and a blob is followed (a cache's blob store
// lives in <root>/blobs/sha256, and a symlink at blobs/ must not make it
// write elsewhere). Nothing is created until a blob is.
func NewBeneath(root *beneath.Root, dir string) *Store {
	s := &Store{root: root, dir: dir}
	if c := filepath.Clean(dir); c != "/" && c != "." && c != "" {
		s.prefix = c + string(filepath.Separator)
	}
	return s
}

// Dir returns the store's directory.
func (s *Store) Dir() string { return s.dir }

// ValidDigest reports whether d is 64 lowercase hex characters.
func ValidDigest(d string) bool {
	if len(d) != sha256.Size*2 {
		return false
	}
	for i := 0; i < len(d); i++ {
		if !lowerHex[d[i]] {
			return false
		}
	}
	return true
}

// lowerHex tells the bytes of a digest: 0-9 and a-f.
var lowerHex = func() (t [256]bool) {
	for _, c := range "0123456789abcdef" {
		t[c] = true
	}
	return t
}()

// Path returns where the blob with digest d lives (whether or not it exists).
func (s *Store) Path(d string) string {
	if s.prefix != "" && ValidDigest(d) {
		return s.prefix + d[:2] + string(filepath.Separator) + d // what Join gives, without its Clean
	}
	return filepath.Join(s.dir, d[:2], d)
}

// Path2 is Path of two blobs, built as one string (a listing builds both
// paths of every entry).
func (s *Store) Path2(a, b string) (string, string) {
	if s.prefix == "" || !ValidDigest(a) || !ValidDigest(b) {
		return s.Path(a), s.Path(b)
	}
	sep := string(filepath.Separator)
	both := s.prefix + a[:2] + sep + a + s.prefix + b[:2] + sep + b
	n := len(both) / 2 // both paths have the same length
	return both[:n], both[n:]
}

// Stat returns the size of blob d; a missing blob is an fs.ErrNotExist
// error, and so is one that is not a regular file (a symlink is not
// followed: it is not a blob).
func (s *Store) Stat(d string) (int64, error) {
	if !ValidDigest(d) {
		return 0, fmt.Errorf("blob %q: not a sha256 digest", d)
	}
	return s.root.StatRegular(s.Path(d))
}

// Lstat returns the file info of blob d without following a symlink; one
// that is not a regular file is an fs.ErrNotExist error (as for Stat).
func (s *Store) Lstat(d string) (os.FileInfo, error) {
	if !ValidDigest(d) {
		return nil, fmt.Errorf("blob %q: not a sha256 digest", d)
	}
	fi, err := s.root.Lstat(s.Path(d))
	if err == nil && !fi.Mode().IsRegular() {
		return nil, &fs.PathError{Op: "lstat", Path: s.Path(d), Err: fs.ErrNotExist}
	}
	return fi, err
}

// Open opens blob d for reading, following no symlink (a blob that is a
// symlink is refused with an error matching beneath.ErrSymlink).
func (s *Store) Open(d string) (*os.File, error) {
	if !ValidDigest(d) {
		return nil, fmt.Errorf("blob %q: not a sha256 digest", d)
	}
	return s.root.Open(s.Path(d))
}

// Root returns what the store resolves its paths below.
func (s *Store) Root() *beneath.Root { return s.root }

// Remove deletes blob d; a blob that is already gone is not an error.
func (s *Store) Remove(d string) error {
	if !ValidDigest(d) {
		return fmt.Errorf("remove blob %q: not a sha256 digest", d)
	}
	// Unlinks the name itself: a symlink there is removed, its target
	// untouched; one above it refuses.
	if err := s.root.Remove(s.Path(d)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove blob %s: %w", d, err)
	}
	return nil
}

// Writer hashes and stages one blob. Call Commit to install it or Abort to
// drop it; both are safe to call after the other.
type Writer struct {
	s    *Store
	f    *os.File
	h    hash.Hash
	n    int64
	done bool
}

// NewWriter starts a blob whose bytes are staged in stagingDir, which must be
// on the same filesystem as the store (rename is what makes a blob appear).
// A stagingDir below the store's root is reached without following symlinks.
func (s *Store) NewWriter(stagingDir string) (*Writer, error) {
	var f *os.File
	var err error
	if s.below(stagingDir) {
		f, err = s.root.CreateTemp(stagingDir, "blob-*")
	} else {
		f, err = os.CreateTemp(stagingDir, "blob-*")
	}
	if err != nil {
		return nil, fmt.Errorf("stage blob: %w", err)
	}
	return &Writer{s: s, f: f, h: sha256.New()}, nil
}

// below reports whether p is the store's root or below it.
func (s *Store) below(p string) bool {
	r := s.root.Path()
	return p == r || strings.HasPrefix(filepath.Clean(p), strings.TrimSuffix(r, "/")+"/")
}

// remove removes a staged file (by path: it is below the root or where
// the caller chose to stage).
func (s *Store) remove(p string) {
	if s.below(p) {
		_ = s.root.Remove(p)
	} else {
		_ = os.Remove(p)
	}
}

// Write adds p to the blob.
func (w *Writer) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.h.Write(p[:n])
	w.n += int64(n)
	if err != nil {
		return n, fmt.Errorf("write staged blob %s: %w", w.f.Name(), err)
	}
	return n, nil
}

// Size returns how many bytes have been written so far.
func (w *Writer) Size() int64 { return w.n }

// Commit makes the blob durable and visible and returns its digest and size.
func (w *Writer) Commit() (digest string, size int64, err error) {
	if w.done {
		return "", 0, errors.New("blob writer already finished")
	}
	bs, err := w.s.CommitAll([]*Writer{w}, nil)
	if err != nil {
		return "", 0, err
	}
	return bs[0].Digest, bs[0].Size, nil
}

// Digest returns the SHA-256 of what has been written so far: the name the
// blob gets if nothing more is written.
func (w *Writer) Digest() string { return hex.EncodeToString(w.h.Sum(nil)) }

// Reset drops what has been written so far, so that the writer (and its
// staged file) can take other content.
func (w *Writer) Reset() error {
	if w.done {
		return errors.New("blob writer already finished")
	}
	if err := w.f.Truncate(0); err != nil {
		return fmt.Errorf("reset staged blob %s: %w", w.f.Name(), err)
	}
	if _, err := w.f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("reset staged blob %s: %w", w.f.Name(), err)
	}
	w.h.Reset()
	w.n = 0
	return nil
}

// Blob is a committed blob.
type Blob struct {
	Digest string
	Size   int64
	// Ctime is the installed file's inode change time (unix nanoseconds)
	// as CommitAll left it: a later write through any link to the file, a
	// chmod or a rename moves it, which is how a caller that records it can
	// tell later that the file may no longer hold this content. 0 when the
	// file was gone again by then (a concurrent remover).
	Ctime int64
	// Replaced is true when a file was already at the blob's path but did
	// not hold its content (or had other hard links) and was replaced.
	Replaced bool
}

// Trust tells CommitAll whether the file already at a blob's path, whose
// inode change time is ctime, may be taken to hold the blob's content
// without reading it: true when the caller recorded that very ctime after
// the file was last written or checked. A nil Trust trusts nothing.
type Trust func(digest string, ctime int64) bool

// Inode is what Lstat says about a blob file.
type Inode struct {
	Size  int64
	Ctime int64  // inode change time, unix nanoseconds
	Nlink uint64 // a blob kcache wrote has exactly one link
}

// Inode returns what the blob file d is; a missing blob, or something
// other than a regular file at its path, is an fs.ErrNotExist error.
func (s *Store) Inode(d string) (Inode, error) {
	if !ValidDigest(d) {
		return Inode{}, fmt.Errorf("blob %q: not a sha256 digest", d)
	}
	return s.lstatInode(s.Path(d))
}

// lstatInode lstats path below the store's root, following no symlink.
func (s *Store) lstatInode(path string) (Inode, error) {
	fi, err := s.root.Lstat(path)
	if err != nil {
		return Inode{}, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return Inode{}, fmt.Errorf("lstat %s: no stat data", path)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return Inode{}, &fs.PathError{Op: "lstat", Path: path, Err: fmt.Errorf("not a regular file: %w", fs.ErrNotExist)}
	}
	return Inode{Size: st.Size, Ctime: st.Ctim.Nano(), Nlink: uint64(st.Nlink)}, nil
}

// CommitAll is CommitAllTrust trusting no existing file.
func (s *Store) CommitAll(ws []*Writer, installed func(i int)) ([]Blob, error) {
	return s.CommitAllTrust(ws, nil, installed)
}

// CommitAllTrust commits several writers of this store together, which costs
// fewer journal commits than committing them one by one: it starts the
// write-back of every staged file, fsyncs each, then renames each into
// place (calling installed(i), when not nil, right after writer i's blob is
// in place), then fsyncs the directories the renames changed. When it
// returns without error every blob is durable under its name; on error the
// staged files that were not installed are removed (blobs already renamed
// stay, unreferenced, for a sweep).
//
// A blob whose path already holds a file is deduplicated (the staged copy
// dropped) only when that file can be shown to hold the content: a single
// link, and trust vouches for its ctime, or else its bytes hash to the
// digest. Otherwise (a write through a hard link, say) the staged copy is
// renamed over it: the file at a blob path is kcache's own, and the staged
// bytes are the proof of what belongs there.
func (s *Store) CommitAllTrust(ws []*Writer, trust Trust, installed func(i int)) (_ []Blob, err error) {
	for _, w := range ws {
		if w.done || w.s != s {
			return nil, errors.New("blob writer already finished or of another store")
		}
	}
	defer func() {
		for _, w := range ws {
			w.Abort() // those not installed; a no-op for the others
		}
	}()
	for _, w := range ws {
		if err := w.f.Chmod(0o444); err != nil {
			return nil, fmt.Errorf("chmod staged blob %s: %w", w.f.Name(), err)
		}
		// Start the write-back of every file before waiting for any, so
		// that their block allocations share one journal commit. A hint
		// only; the fsync below is what makes the bytes durable.
		_ = unix.SyncFileRange(int(w.f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
	}
	for _, w := range ws {
		if err := w.f.Sync(); err != nil {
			return nil, fmt.Errorf("fsync staged blob %s: %w", w.f.Name(), err)
		}
	}
	bs := make([]Blob, len(ws))
	var dirs []string // directories to fsync, in order
	seen := map[string]bool{}
	addDir := func(d string) {
		if !seen[d] {
			seen[d] = true
			dirs = append(dirs, d)
		}
	}
	for i, w := range ws {
		tmp := w.f.Name()
		if err := w.f.Close(); err != nil {
			return nil, fmt.Errorf("close staged blob %s: %w", tmp, err)
		}
		w.done = true
		digest := w.Digest()
		bs[i] = Blob{Digest: digest, Size: w.n}
		final := s.Path(digest)
		// Lstat, and only a regular file counts: a symlink planted at the
		// blob path is replaced by the rename below, never trusted or touched.
		if in, err := s.lstatInode(final); err == nil && in.Size == w.n && in.Nlink == 1 &&
			(trust != nil && trust(digest, in.Ctime) || s.Verify(digest) == nil) {
			// Already stored: identical content. Refresh its time so a
			// sweep's grace period counts from this use, not from when an
			// earlier, perhaps orphaned, copy was written.
			now := time.Now()
			_ = s.root.Chtimes(final, now, now)
			s.remove(tmp)
		} else {
			bs[i].Replaced = err == nil
			sub := filepath.Dir(final)
			if _, err := s.root.Lstat(sub); errors.Is(err, fs.ErrNotExist) {
				if err := s.root.MkdirAll(sub, 0o755); err != nil {
					s.remove(tmp)
					return nil, fmt.Errorf("create blob directory %s: %w", sub, err)
				}
				addDir(s.dir) // before sub: the new name of sub lives there
			}
			var err error
			if s.below(tmp) {
				err = s.root.Rename(tmp, final)
			} else {
				err = s.root.RenameInto(tmp, final)
			}
			if err != nil {
				s.remove(tmp)
				return nil, fmt.Errorf("install blob %s: %w", digest, err)
			}
			addDir(sub)
		}
		// After the last change kcache makes to the file (rename, chtimes):
		// the ctime a caller records must be the file's settled one. A
		// file a concurrent remover unlinked meanwhile leaves it unknown
		// (0); the caller's own presence check deals with the vanished blob.
		if in, err := s.lstatInode(final); err == nil {
			bs[i].Ctime = in.Ctime
		}
		if installed != nil {
			installed(i)
		}
	}
	for _, d := range dirs {
		if err := s.root.SyncDir(d); err != nil {
			return nil, err
		}
	}
	return bs, nil
}

// Abort drops the staged bytes.
func (w *Writer) Abort() {
	if w.done {
		return
	}
	w.done = true
	_ = w.f.Close()
	w.s.remove(w.f.Name())
}

// Ingest copies r into a new blob staged in stagingDir.
func (s *Store) Ingest(stagingDir string, r io.Reader) (digest string, size int64, err error) {
	w, err := s.NewWriter(stagingDir)
	if err != nil {
		return "", 0, err
	}
	if _, err := io.Copy(w, r); err != nil {
		w.Abort()
		return "", 0, err
	}
	return w.Commit()
}

// Walk calls fn for every file under the store that is named like a blob,
// with its size. Other files are passed to foreign (may be nil) so callers can
// report or quarantine them. Symlinks are never followed nor passed to
// foreign; a store directory that is (or lies below) a symlink is an error
// naming it. WalkSymlinks reports them instead.
func (s *Store) Walk(fn func(digest string, size int64) error, foreign func(path string) error) error {
	return s.WalkSymlinks(fn, foreign, nil)
}

// WalkSymlinks is Walk that passes every symlink it meets, the store
// directory itself included, to symlink (when not nil), so that callers
// can report them; a symlink is never followed.
func (s *Store) WalkSymlinks(fn func(digest string, size int64) error, foreign, symlink func(path string) error) error {
	err := s.root.WalkDir(s.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == filepath.Clean(s.dir) && errors.Is(err, fs.ErrNotExist) {
				return fs.SkipAll
			}
			if errors.Is(err, beneath.ErrSymlink) && symlink != nil {
				var se *beneath.SymlinkError
				if errors.As(err, &se) && se.Link != "" {
					p = se.Link
				}
				return symlink(p)
			}
			return err
		}
		if d.IsDir() {
			return nil
		}
		if d.Type()&fs.ModeSymlink != 0 {
			if symlink != nil {
				return symlink(p)
			}
			return nil
		}
		name := d.Name()
		if d.Type().IsRegular() && ValidDigest(name) && filepath.Base(filepath.Dir(p)) == name[:2] {
			fi, err := d.Info()
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed since the directory was read: not there
			}
			if err != nil {
				return err
			}
			return fn(name, fi.Size())
		}
		if foreign != nil {
			return foreign(p)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("walk blobs in %s: %w", s.dir, err)
	}
	return nil
}

// ErrMismatch is matched by Verify's error when a blob's content does not
// hash to its name.
var ErrMismatch = errors.New("content does not match the digest")

// Verify re-hashes blob d and reports a mismatch as an error matching
// ErrMismatch; a missing blob is an fs.ErrNotExist error.
func (s *Store) Verify(d string) error {
	f, err := s.Open(d)
	if err != nil {
		return err
	}
	defer f.Close()
	return VerifyReader(f, d)
}

// VerifyReader hashes what r holds to its end and reports a mismatch with d
// as an error matching ErrMismatch (for a blob already open, as one being
// uploaded is).
func VerifyReader(r io.Reader, d string) error {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return fmt.Errorf("read blob %s: %w", d, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != d {
		return fmt.Errorf("blob %s: %w: it hashes to %s", d, ErrMismatch, got)
	}
	return nil
}
