package lock

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// remoteFS lists filesystems where flock(2) is emulated, per-client or
// silently a no-op, so that two machines sharing the cache would not exclude
// each other.
var remoteFS = map[int64]string{
	0x6969:     "NFS",
	0xFF534D42: "CIFS",
	0xFE534D42: "SMB2",
	0x00C36400: "CephFS",
	0x6B414653: "AFS",
	0x65735546: "FUSE",
}

// CheckLocalFS refuses a lock file on a network or FUSE filesystem. It looks
// at the file if it exists, else at the nearest existing parent; when statfs
// itself fails it lets the caller proceed (the open will report the problem).
func CheckLocalFS(path string) error {
	p := path
	for {
		var st unix.Statfs_t
		err := unix.Statfs(p, &st)
		if err == nil {
			if name, bad := remoteFS[int64(st.Type)]; bad {
				return fmt.Errorf("lockfile %s is on %s, where flock(2) does not reliably exclude other machines or processes; put the cache on a local filesystem", path, name)
			}
			return nil
		}
		if !os.IsNotExist(err) {
			return nil
		}
		parent := filepath.Dir(p)
		if parent == p {
			return nil
		}
		p = parent
	}
}
