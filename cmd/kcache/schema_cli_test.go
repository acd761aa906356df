package main

import (
	"encoding/binary"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kcache/kcache/index"
	bolt "go.etcd.io/bbolt"
)

func setSchema(t *testing.T, root string, v uint32) {
	t.Helper()
	b, err := bolt.Open(filepath.Join(root, "index.db"), 0o644, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = b.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("meta")).Put([]byte("schema_version"), binary.BigEndian.AppendUint32(nil, v))
	})
	if cerr := b.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
}

// An index from a newer kcache (SchemaVersion+1) is refused by reading and
// writing commands alike, with exit 1 and a message that names both
// versions and says to upgrade kcache; store copies nothing first.
func TestNewerSchemaRefusedByCLI(t *testing.T) {
	root := t.TempDir()
	if _, stderr, code := runProc(t, root, "store", "k", "--image", cliSampleImage); code != 0 {
		t.Fatalf("store: exit %d\n%s", code, stderr)
	}
	newer := uint32(index.SchemaVersion + 1)
	setSchema(t, root, newer)
	blobsBefore := countFiles(t, filepath.Join(root, "blobs"))
	for _, argv := range [][]string{
		{"list"}, {"list", "--json"}, {"lookup", "k"}, {"store", "k2", "--image", cliSampleImage},
		{"--read-only", "list"},
	} {
		_, stderr, code := runProc(t, root, argv...)
		if code != exitError {
			t.Errorf("kcache %s: exit %d, want %d\n%s", strings.Join(argv, " "), code, exitError, stderr)
		}
		for _, want := range []string{fmt.Sprintf("schema %d", newer), fmt.Sprintf("schema %d", index.SchemaVersion), "upgrade kcache"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("kcache %s: stderr lacks %q:\n%s", strings.Join(argv, " "), want, stderr)
			}
		}
	}
	if n := countFiles(t, filepath.Join(root, "blobs")); n != blobsBefore {
		t.Errorf("a refused store left %d new blob files", n-blobsBefore)
	}
}

// An index from an older kcache: `--read-only list` reads it as it is and
// `list` upgrades it, saying so on stderr.
func TestOlderSchemaCLI(t *testing.T) {
	root := t.TempDir()
	if _, stderr, code := runProc(t, root, "store", "k", "--image", cliSampleImage); code != 0 {
		t.Fatalf("store: exit %d\n%s", code, stderr)
	}
	setSchema(t, root, 1)
	stdout, stderr, code := runProc(t, root, "--read-only", "list")
	if code != 0 || !strings.Contains(stdout, "k ") || strings.Contains(stderr, "upgraded") {
		t.Fatalf("--read-only list of a v1 index: exit %d\n%s\n%s", code, stdout, stderr)
	}
	stdout, stderr, code = runProc(t, root, "list")
	if code != 0 || !strings.Contains(stdout, "k ") || !strings.Contains(stderr, "from schema 1 to 2") {
		t.Fatalf("list of a v1 index: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if _, stderr, code = runProc(t, root, "list"); strings.Contains(stderr, "upgraded") || code != 0 {
		t.Errorf("second list upgraded again: exit %d\n%s", code, stderr)
	}
}

func countFiles(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return nil
	})
	return n
}
