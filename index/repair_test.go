package index_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kcache/kcache/index"
)

// A writer waiting for the lock of a file that doctor then replaces must end
// up writing to the new file, never to the replaced one.
func TestOpenFollowsAReplacedFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "index.db")
	old, err := index.Open(path, index.Options{})
	if err != nil {
		t.Fatal(err)
	}
	repl := filepath.Join(dir, "new.db")
	db, err := index.Open(repl, index.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *index.Tx) error { return tx.SetKconfigHash("0000000a") }); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()

	done := make(chan error, 1)
	go func() { // blocks on old's lock
		w, err := index.Open(path, index.Options{Timeout: time.Minute})
		if err == nil {
			err = w.Update(func(tx *index.Tx) error { return tx.SetKconfigHash(tx.KconfigHash() + "-seen") })
			_ = w.Close()
		}
		done <- err
	}()
	time.Sleep(100 * time.Millisecond) // let it reach the lock (not required for correctness)
	if err := os.Rename(repl, path); err != nil {
		t.Fatal(err)
	}
	_ = old.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("writer hangs")
	}
	db, err = index.Open(path, index.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_ = db.View(func(tx *index.Tx) error {
		if h := tx.KconfigHash(); h != "0000000a-seen" {
			t.Errorf("kconfig hash = %q; the waiting writer did not write to the new file", h)
		}
		return nil
	})
}
