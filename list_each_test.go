package kcache_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/kcache/kcache"
	bolt "go.etcd.io/bbolt"
)

// rows renders a listing as "key:usable" / "key:kind" words.
func rows(ls []kcache.Listed) string {
	var out []string
	for _, l := range ls {
		if l.Corrupt != nil {
			out = append(out, l.Key+":"+l.Corrupt.Kind)
		} else {
			out = append(out, l.Key+":ok")
		}
	}
	return strings.Join(out, " ")
}

func listEach(t *testing.T, c *kcache.Cache) (string, []kcache.Listed) {
	t.Helper()
	var got []kcache.Listed
	began := 0
	cur, err := c.ListEach(context.Background(), kcache.ListOptions{}, func(string) error {
		if began++; len(got) > 0 {
			t.Error("begin called after an entry")
		}
		return nil
	}, func(l kcache.Listed) error {
		got = append(got, l)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if began != 1 {
		t.Errorf("begin called %d times", began)
	}
	return cur, got
}

func rawIndex(t *testing.T, root string, fn func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(root, "index.db"), 0o644, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
}

// ListEach yields List's order (ties by key, corrupt ones last by key) while
// streaming from the by_time ordering, also on damaged indexes.
func TestListEachMatchesList(t *testing.T) {
	c, root := newCache(t)
	if _, got := listEach(t, c); len(got) != 0 {
		t.Fatalf("missing cache lists %v", got)
	}
	src := t.TempDir()
	ctx := context.Background()
	var n int
	for _, at := range []string{"2026-01-01T00:00:00Z", "2026-03-01T00:00:00Z", "2026-02-01T00:00:00Z"} {
		for _, k := range []string{"c", "a", "e", "b", "d"} {
			key := k + at[5:7]
			m := tarball
			m.BuiltAt = at
			n++
			art := kcache.Artifacts{Image: writeFile(t, src, key, []byte{byte(n), 'i'}), Vmlinux: writeFile(t, src, key+".v", []byte{byte(n), 'v'})}
			if _, err := c.Store(ctx, key, art, m); err != nil {
				t.Fatal(err)
			}
		}
	}
	check := func(what string) {
		t.Helper()
		l, err := c.List(ctx, kcache.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		_, got := listEach(t, c)
		if rows(got) != rows(l.Entries) {
			t.Errorf("%s: ListEach = %s\nList     = %s", what, rows(got), rows(l.Entries))
		}
		for i := range got {
			if got[i].Entry != nil && (got[i].Entry.ImagePath != l.Entries[i].Entry.ImagePath || got[i].Entry.BuiltAt != l.Entries[i].Entry.BuiltAt) {
				t.Errorf("%s: entry %s differs", what, got[i].Key)
			}
		}
	}
	check("consistent")

	e, _ := c.Lookup(ctx, "a03")
	if err := os.Remove(e.ImagePath); err != nil {
		t.Fatal(err)
	}
	e, _ = c.Lookup(ctx, "b01")
	if err := os.WriteFile(e.VmlinuxPath, []byte("longer than it was"), 0o644); err != nil {
		t.Fatal(err)
	}
	rawIndex(t, root, func(tx *bolt.Tx) error {
		if err := tx.Bucket([]byte("entries")).Put([]byte("d02"), []byte{0xc1}); err != nil {
			return err
		}
		return tx.Bucket([]byte("entries")).Put([]byte("zz-garbage"), []byte("not msgpack"))
	})
	// zz-garbage has no by_time key: counts differ, the buffered path.
	check("corrupt entries, buffered")
	rawIndex(t, root, func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("by_time")).Put([]byte("2026-05-01T00:00:00Z\x00gone"), nil)
	})
	// Counts agree again: the streaming path, with a dangling by_time key.
	check("corrupt entries, streamed")

	// A missing by_time key plus a stale one: every entry is still listed
	// once, the unnamed one after the other usable entries.
	rawIndex(t, root, func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("by_time")).Delete([]byte("2026-02-01T00:00:00Z\x00c02"))
	})
	rawIndex(t, root, func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("by_time")).Put([]byte("2026-06-01T00:00:00Z\x00stale"), nil)
	})
	_, got := listEach(t, c)
	l, err := c.List(ctx, kcache.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var want, corrupt []kcache.Listed
	var c02 kcache.Listed
	for _, le := range l.Entries {
		switch {
		case le.Key == "c02":
			c02 = le
		case le.Corrupt != nil:
			corrupt = append(corrupt, le)
		default:
			want = append(want, le)
		}
	}
	want = append(append(want, c02), corrupt...)
	if rows(got) != rows(want) {
		t.Errorf("damaged by_time: ListEach = %s\nwant       %s", rows(got), rows(want))
	}

	stop := errors.New("stop")
	calls := 0
	if _, err := c.ListEach(ctx, kcache.ListOptions{}, nil, func(kcache.Listed) error { calls++; return stop }); err != stop || calls != 1 {
		t.Errorf("ListEach with a failing fn = %v after %d calls; want stop after 1", err, calls)
	}
}

// A listing large enough for ListEach's worker goroutines (several batches)
// with corrupt entries among them: the same rows, blob paths and errors as
// List, and fn's error still stops it after one call.
func TestListEachManyEntriesMatchesList(t *testing.T) {
	if testing.Short() {
		t.Skip("stores 700 entries")
	}
	c, root := newCache(t)
	src := t.TempDir()
	ctx := context.Background()
	img := writeFile(t, src, "img", []byte("shared image"))
	for i := range 700 {
		key := fmt.Sprintf("k%03d", i)
		m := tarball
		m.BuiltAt = fmt.Sprintf("2026-01-01T%02d:%02d:00Z", i/60%24, i%60/3) // ties
		art := kcache.Artifacts{Image: img}
		if i%2 == 0 {
			art.Vmlinux = writeFile(t, src, key+".v", []byte(key))
		}
		if _, err := c.Store(ctx, key, art, m); err != nil {
			t.Fatal(err)
		}
	}
	e, err := c.Lookup(ctx, "k100")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(e.VmlinuxPath); err != nil {
		t.Fatal(err)
	}
	rawIndex(t, root, func(tx *bolt.Tx) error {
		for _, k := range []string{"k200", "k555"} {
			if err := tx.Bucket([]byte("entries")).Put([]byte(k), []byte{0x81, 0xa3, 'k', 'e', 'y', 0xc1}); err != nil {
				return err
			}
		}
		return nil
	})
	l, err := c.List(ctx, kcache.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, got := listEach(t, c)
	if rows(got) != rows(l.Entries) {
		t.Fatalf("ListEach = %s\nList     = %s", rows(got), rows(l.Entries))
	}
	corrupt := 0
	for i, g := range got {
		w := l.Entries[i]
		switch {
		case g.Corrupt != nil:
			corrupt++
			if *g.Corrupt != *w.Corrupt {
				t.Errorf("%s: corrupt %+v, List says %+v", g.Key, g.Corrupt, w.Corrupt)
			}
		case g.Entry.ImagePath != w.Entry.ImagePath || g.Entry.VmlinuxPath != w.Entry.VmlinuxPath ||
			g.Entry.Key != g.Key || !reflect.DeepEqual(g.Entry.Record, w.Entry.Record):
			t.Errorf("%s: entry %+v, List has %+v", g.Key, g.Entry, w.Entry)
		}
	}
	if corrupt != 3 {
		t.Errorf("%d corrupt entries, want 3", corrupt)
	}
	stop := errors.New("stop")
	calls := 0
	if _, err := c.ListEach(ctx, kcache.ListOptions{}, nil, func(kcache.Listed) error { calls++; return stop }); err != stop || calls != 1 {
		t.Errorf("ListEach with a failing fn = %v after %d calls; want stop after 1", err, calls)
	}
}
