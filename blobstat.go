package kcache

import (
	"sync"

	"github.com/kcache/kcache/blobstore"
	"github.com/kcache/kcache/internal/beneath"
)

// blobStatter stats blobs relative to their open <2 hex> subdirectories
// (fstatat), so that a listing does not resolve the whole blob path of every
// entry's blobs again. The blob directory is opened once per listing and
// each subdirectory once from it, without following a symlink (see package
// beneath), and blobs are stat'ed with AT_SYMLINK_NOFOLLOW: a blob that is a
// symlink is missing. Anything but success is redone with blobstore's Stat,
// so errors (missing, unreadable, a symlinked directory) read exactly as
// they always did.
//
// It is safe for concurrent use.
type blobStatter struct {
	c      *Cache
	topOne sync.Once
	top    *beneath.Dir // nil when blobs/sha256 could not be opened
	once   [256]sync.Once
	dirs   [256]*beneath.Dir // nil = not opened (or failed)
}

func (c *Cache) newBlobStatter() *blobStatter { return &blobStatter{c: c} }

func unhex(b byte) int {
	switch {
	case b >= '0' && b <= '9':
		return int(b - '0')
	case b >= 'a' && b <= 'f':
		return int(b-'a') + 10
	}
	return -1
}

func (s *blobStatter) stat(d string) (int64, error) {
	if !blobstore.ValidDigest(d) {
		return s.c.blobs.Stat(d)
	}
	s.topOne.Do(func() {
		if dir, err := s.c.fs.OpenDir(s.c.blobs.Dir()); err == nil {
			s.top = dir
		}
	})
	i := unhex(d[0])<<4 | unhex(d[1])
	s.once[i].Do(func() {
		if s.top == nil {
			return
		}
		if dir, err := s.top.OpenDir(d[:2]); err == nil {
			s.dirs[i] = dir
		}
	})
	if dir := s.dirs[i]; dir != nil {
		if n, err := dir.StatSize(d); err == nil {
			return n, nil
		}
	}
	return s.c.blobs.Stat(d)
}

// close closes the directories; the statter is not used afterwards.
func (s *blobStatter) close() {
	for i, dir := range s.dirs {
		_ = dir.Close()
		s.dirs[i] = nil
	}
	_ = s.top.Close()
	s.top = nil
}
