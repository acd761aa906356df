// Package fsync makes directory entries durable: after a file is created or
// renamed, its directory must be fsynced too, or a power loss can forget the
// name. Shared by the index, the blob store and the repair code.
package fsync

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// Dir fsyncs a directory. Filesystems that cannot fsync a directory (EINVAL)
// are accepted as they are: their renames are as durable as they get.
func Dir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// WriteNew creates path, which must not exist yet, with perm, copies r into
// it and fsyncs it. On error the caller removes what is left (it is usually
// inside a staging directory that goes as a whole).
func WriteNew(path string, r io.Reader, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	return f.Close()
}
