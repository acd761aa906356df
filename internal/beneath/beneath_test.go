package beneath

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// fixture is a root with a/b/file and an outside directory full of
// someone's work; links lists symlinks to plant.
func fixture(t *testing.T) (root, outside string) {
	t.Helper()
	base := t.TempDir()
	root = filepath.Join(base, "root")
	outside = filepath.Join(base, "outside")
	for _, d := range []string{filepath.Join(root, "a", "b"), filepath.Join(outside, "b")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write(t, filepath.Join(root, "a", "b", "file"), "mine")
	write(t, filepath.Join(outside, "b", "file"), "theirs")
	write(t, filepath.Join(outside, "work"), "precious")
	return root, outside
}

func write(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// snapshot records every file under dir with its content.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			m[p] = string(b)
		} else {
			m[p] = d.Type().String()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func sameSnapshot(t *testing.T, before, after map[string]string) {
	t.Helper()
	if len(before) != len(after) {
		t.Errorf("outside directory changed: %d entries before, %d after: %v", len(before), len(after), after)
	}
	for p, v := range before {
		if after[p] != v {
			t.Errorf("outside %s changed: %q -> %q", p, v, after[p])
		}
	}
}

func bothResolvers(t *testing.T, f func(t *testing.T)) {
	t.Run("openat2", f)
	t.Run("fallback", func(t *testing.T) {
		noOpenat2.Store(true)
		defer noOpenat2.Store(false)
		f(t)
	})
}

func wantSymlink(t *testing.T, what string, err error) {
	t.Helper()
	var se *SymlinkError
	if !errors.As(err, &se) || !errors.Is(err, ErrSymlink) {
		t.Errorf("%s: err = %v, want a *SymlinkError", what, err)
	}
}

func TestSymlinkAtEveryComponent(t *testing.T) {
	bothResolvers(t, func(t *testing.T) {
		// Replace, in turn, a, a/b and a/b/file by a symlink into outside.
		for _, comp := range []string{"a", "a/b", "a/b/file"} {
			t.Run(comp, func(t *testing.T) {
				root, outside := fixture(t)
				p := filepath.Join(root, comp)
				if err := os.RemoveAll(p); err != nil {
					t.Fatal(err)
				}
				target := filepath.Join(outside, map[string]string{"a": "", "a/b": "b", "a/b/file": "b/file"}[comp])
				if err := os.Symlink(target, p); err != nil {
					t.Fatal(err)
				}
				before := snapshot(t, outside)
				r := New(root)
				_, err := r.Open("a/b/file")
				wantSymlink(t, "open", err)
				_, err = r.OpenFile(filepath.Join(root, "a/b/file"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
				wantSymlink(t, "open for append", err)
				_, err = r.ReadFile("a/b/file")
				wantSymlink(t, "read", err)
				if comp != "a/b/file" {
					wantSymlink(t, "lstat", func() error { _, err := r.Lstat("a/b/file"); return err }())
					wantSymlink(t, "remove", r.Remove("a/b/file"))
					wantSymlink(t, "mkdir", r.Mkdir("a/b/new", 0o755))
					wantSymlink(t, "mkdirall", r.MkdirAll("a/b/new/deeper", 0o755))
					wantSymlink(t, "rename", r.Rename("a/b/file", "moved"))
					wantSymlink(t, "removeall", r.RemoveAll("a/b/file"))
					_, err = r.CreateTemp("a/b", "x-*")
					wantSymlink(t, "createtemp", err)
					_, err = r.StatRegular("a/b/file")
					wantSymlink(t, "statregular", err)
				} else {
					fi, err := r.Lstat("a/b/file")
					if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
						t.Errorf("lstat of a last-component symlink = %v, %v; want the symlink itself", fi, err)
					}
					if _, err := r.StatRegular("a/b/file"); !errors.Is(err, fs.ErrNotExist) || !errors.Is(err, ErrSymlink) {
						t.Errorf("StatRegular of a symlink = %v, want not-exist and ErrSymlink", err)
					}
				}
				wantSymlink(t, "check", r.Check("a/b/file"))
				sameSnapshot(t, before, snapshot(t, outside))
				if err := r.RemoveAll(comp); err != nil {
					t.Errorf("RemoveAll of the symlink itself: %v", err)
				}
				sameSnapshot(t, before, snapshot(t, outside))
				if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("symlink %s still there after RemoveAll: %v", p, err)
				}
			})
		}
	})
}

func TestDanglingSymlinkAtLastComponentIsNotCreated(t *testing.T) {
	bothResolvers(t, func(t *testing.T) {
		root, outside := fixture(t)
		target := filepath.Join(outside, "created-by-mistake")
		if err := os.Symlink(target, filepath.Join(root, "a", "hits")); err != nil {
			t.Fatal(err)
		}
		r := New(root)
		_, err := r.OpenFile("a/hits", os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		wantSymlink(t, "create through a dangling symlink", err)
		if !bytes.Contains([]byte(err.Error()), []byte(filepath.Join(root, "a", "hits"))) {
			t.Errorf("error %q does not name the path", err)
		}
		wantSymlink(t, "check", r.Check("a/hits"))
		if _, err := os.Lstat(target); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("the symlink's target was created: %v", err)
		}
	})
}

func TestDotDotIsRefused(t *testing.T) {
	bothResolvers(t, func(t *testing.T) {
		root, outside := fixture(t)
		before := snapshot(t, outside)
		r := New(root)
		_, err := r.Open("../outside/work")
		wantSymlink(t, "open ..", err)
		_, err = r.Open("a/../../outside/work")
		wantSymlink(t, "open a/../..", err)
		wantSymlink(t, "remove ..", r.Remove("../outside/work"))
		wantSymlink(t, "removeall ..", r.RemoveAll("a/../../outside"))
		if _, err := r.Open(filepath.Join(filepath.Dir(root), "outside", "work")); err == nil {
			t.Error("an absolute path outside the root was opened")
		}
		sameSnapshot(t, before, snapshot(t, outside))
		// ".." that stays inside is cleaned lexically and fine.
		if b, err := r.ReadFile("a/x/../b/file"); err != nil || string(b) != "mine" {
			t.Errorf("a/x/../b/file = %q, %v", b, err)
		}
	})
}

func TestRootMayBeASymlink(t *testing.T) {
	root, _ := fixture(t)
	link := filepath.Join(t.TempDir(), "cache")
	if err := os.Symlink(root, link); err != nil {
		t.Fatal(err)
	}
	b, err := New(link).ReadFile(filepath.Join(link, "a/b/file"))
	if err != nil || string(b) != "mine" {
		t.Fatalf("read through a symlinked root = %q, %v", b, err)
	}
}

func TestOperations(t *testing.T) {
	bothResolvers(t, func(t *testing.T) {
		root, _ := fixture(t)
		r := New(root)
		if err := r.MkdirAll("x/y/z", 0o755); err != nil {
			t.Fatal(err)
		}
		f, err := r.CreateTemp("x/y", "t-*")
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString("data")
		f.Close()
		if err := r.Rename(f.Name(), "x/y/z/final"); err != nil {
			t.Fatal(err)
		}
		if n, err := r.StatRegular("x/y/z/final"); err != nil || n != 4 {
			t.Fatalf("StatRegular = %d, %v", n, err)
		}
		if err := r.Link("x/y/z/final", "x/hard"); err != nil {
			t.Fatal(err)
		}
		if err := r.SyncDir("x"); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("/", filepath.Join(root, "x", "y", "slash")); err != nil {
			t.Fatal(err)
		}
		var seen []string
		err = r.WalkDir("x", func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			seen = append(seen, rel+":"+d.Type().String())
			if d.Type().IsRegular() {
				if fi, err := d.Info(); err != nil || fi.Size() != 4 {
					t.Errorf("Info(%s) = %v, %v", p, fi, err)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		sort.Strings(seen)
		want := []string{"x/hard:----------", "x/y/slash:L---------", "x/y/z/final:----------", "x/y/z:d---------", "x/y:d---------", "x:d---------"}
		sort.Strings(want)
		if len(seen) != len(want) {
			t.Fatalf("walk saw %v, want %v", seen, want)
		}
		for i := range want {
			if seen[i] != want[i] {
				t.Fatalf("walk saw %v, want %v", seen, want)
			}
		}
		if err := r.RemoveAll("x"); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(filepath.Join(root, "x")); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("x survived RemoveAll: %v", err)
		}
		if err := r.RemoveAll("x"); err != nil {
			t.Fatalf("RemoveAll of a missing path: %v", err)
		}
		if err := r.Check("nothing-here"); err != nil {
			t.Fatalf("Check of a missing file: %v", err)
		}
	})
}

func TestRemoveAllDoesNotDescendIntoSymlinkedDirectories(t *testing.T) {
	root, outside := fixture(t)
	if err := os.Symlink(outside, filepath.Join(root, "a", "b", "into-outside")); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, outside)
	if err := New(root).RemoveAll("a"); err != nil {
		t.Fatal(err)
	}
	sameSnapshot(t, before, snapshot(t, outside))
}
