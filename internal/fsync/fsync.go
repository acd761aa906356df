// Package fsync makes directory entries durable: after a file is created or
// renamed, its directory must be fsynced too, or a power loss can forget the
// name. Shared by the index, the blob store and the repair code.
package fsync

import (
	"errors"
	"fmt"
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
