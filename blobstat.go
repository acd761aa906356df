package kcache

import (
	"path/filepath"
	"sync"

	"github.com/kcache/kcache/blobstore"
	"golang.org/x/sys/unix"
)

// blobStatter stats blobs relative to their open <2 hex> subdirectories
// (fstatat), so that a listing does not resolve the whole blob path of every
// entry's blobs again. Anything but success is redone with blobstore's Stat,
// so errors (missing, unreadable) read exactly as they always did.
//
// It is safe for concurrent use.
type blobStatter struct {
	c    *Cache
	once [256]sync.Once
	fds  [256]int // subdirectory fd + 1 once opened; -1 = open failed
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
	i := unhex(d[0])<<4 | unhex(d[1])
	s.once[i].Do(func() {
		fd, err := unix.Open(filepath.Join(s.c.blobs.Dir(), d[:2]), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			s.fds[i] = -1
		} else {
			s.fds[i] = fd + 1
		}
	})
	if s.fds[i] > 0 {
		var st unix.Stat_t
		if unix.Fstatat(s.fds[i]-1, d, &st, 0) == nil {
			return st.Size, nil
		}
	}
	return s.c.blobs.Stat(d)
}

// close closes the directories; the statter is not used afterwards.
func (s *blobStatter) close() {
	for i, fd := range s.fds {
		if fd > 0 {
			_ = unix.Close(fd - 1)
		}
		s.fds[i] = -1
	}
}
