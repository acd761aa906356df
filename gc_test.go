package kcache_test

// Tests of Clean and GC on real caches: entries stored with Store into a
// bbolt file in t.TempDir(), last_used set through the index package, a
// fake clock and an injected free-space probe, and real processes holding
// locks (the holdshared and storer helper roles of process_test.go).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/kcache/kcache"
	"github.com/kcache/kcache/index"
	bolt "go.etcd.io/bbolt"
)

// gcNow is the fake clock of every gc test.
var gcNow = time.Date(2031, 6, 1, 12, 0, 0, 0, time.UTC)

func gcClock() time.Time { return gcNow }

// gcClocked opens c's root again with the fake clock: the fixture stores
// by the real clock, gc judges by gcNow (Options.Now).
func gcClocked(c *kcache.Cache) *kcache.Cache {
	return mustOpen(c.Root(), &kcache.Options{Now: gcClock})
}

var (
	gcVersions = []string{"6.1", "6.6", "6.12"}
	gcArches   = []string{"x86_64", "aarch64"}
	gcSources  = []string{"tarball", "git"}
)

// gcEnt is what the test knows about one stored entry.
type gcEnt struct {
	key                    string
	version, arch, source  string
	builtAt                time.Time
	lastUsed               time.Time
	image, manifest, bytes int64 // sizes; bytes = image + manifest
}

// gcFixture stores n entries k00..k<n-1>: k<i> was built i hours after a
// base time (so the highest index is the newest), has version, arch and
// source cycling through the lists above, its own image of 1000+i bytes, and
// was last used (i*7 mod n) days before gcNow, so recency order differs from
// build order.
func gcFixture(t testing.TB, n int) (*kcache.Cache, string, []gcEnt) {
	t.Helper()
	root := filepath.Join(t.TempDir(), "cache")
	c := mustOpen(root, &kcache.Options{})
	src := t.TempDir()
	base := gcNow.Add(-400 * 24 * time.Hour)
	ents := make([]gcEnt, n)
	for i := range n {
		e := gcEnt{key: fmt.Sprintf("k%02d", i), version: gcVersions[i%3], arch: gcArches[i%2],
			source: gcSources[(i/2)%2], builtAt: base.Add(time.Duration(i) * time.Hour),
			lastUsed: gcNow.Add(-time.Duration((i*7)%n) * 24 * time.Hour)}
		img := filepath.Join(src, e.key)
		if err := os.WriteFile(img, procContent("image", i, 1000+i, "gc"), 0o644); err != nil {
			t.Fatal(err)
		}
		v := e.version
		meta := kcache.Metadata{Version: &v, Source: kcache.Source{Type: e.source}, Arch: e.arch,
			ImageName: "bzImage", BuiltAt: e.builtAt.Format(time.RFC3339)}
		st, err := c.Store(context.Background(), e.key, kcache.Artifacts{Image: img}, meta)
		if err != nil {
			t.Fatal(err)
		}
		e.image, e.manifest = st.Image.Size, st.Manifest.Size
		e.bytes = e.image + e.manifest
		ents[i] = e
	}
	gcSetLastUsed(t, root, ents)
	return c, root, ents
}

func gcSetLastUsed(t testing.TB, root string, ents []gcEnt) {
	t.Helper()
	db, err := index.Open(filepath.Join(root, "index.db"), index.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *index.Tx) error {
		for _, e := range ents {
			if !e.lastUsed.IsZero() {
				if err := tx.SetLastUsed(e.key, e.lastUsed); err != nil {
					return err
				}
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// gcKeys returns the keys of the entries c lists, sorted.
func gcKeys(t testing.TB, c *kcache.Cache) []string {
	t.Helper()
	l, err := c.List(context.Background(), kcache.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, e := range l.Entries {
		keys = append(keys, e.Key)
	}
	sort.Strings(keys)
	return keys
}

func gcRemovedKeys(r []kcache.Removed) []string {
	var keys []string
	for _, x := range r {
		keys = append(keys, x.Key)
	}
	sort.Strings(keys)
	return keys
}

// gcMinus returns the keys of ents not in drop, sorted.
func gcMinus(ents []gcEnt, drop []string) []string {
	var keys []string
	for _, e := range ents {
		if !slices.Contains(drop, e.key) {
			keys = append(keys, e.key)
		}
	}
	sort.Strings(keys)
	return keys
}

func gcSame(t *testing.T, what string, got, want []string) {
	t.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s:\n got  %q\n want %q", what, got, want)
	}
}

// gcDryThenReal runs opt as a dry run, then for real, and checks that both
// report the same victims with the same reasons and freed bytes, the same
// pinned and in-use entries, and that the real run removed exactly those
// entries and the blobs it says it freed. It returns the real report.
func gcDryThenReal(t *testing.T, c *kcache.Cache, root string, opt kcache.GCOptions) *kcache.GCReport {
	t.Helper()
	c = gcClocked(c)
	before := gcKeys(t, c)
	blobsBefore := len(blobFiles(t, root))
	opt.DryRun = true
	dry, err := c.GC(context.Background(), opt)
	if err != nil {
		t.Fatalf("dry run: %v", err)
	}
	gcSame(t, "a dry run changed the cache", gcKeys(t, c), before)
	opt.DryRun = false
	real, err := c.GC(context.Background(), opt)
	if err != nil {
		t.Fatalf("real run: %v", err)
	}
	if !reflect.DeepEqual(dry.Removed, real.Removed) {
		t.Errorf("dry run and real run differ:\n dry  %+v\n real %+v", dry.Removed, real.Removed)
	}
	gcSame(t, "kept pinned (dry vs real)", dry.KeptPinned, real.KeptPinned)
	if dry.FreedBytes != real.FreedBytes {
		t.Errorf("dry run frees %d bytes, real run %d", dry.FreedBytes, real.FreedBytes)
	}
	var dryBusy, realBusy []string
	for _, h := range dry.KeptInUse {
		dryBusy = append(dryBusy, h.Key)
	}
	for _, h := range real.KeptInUse {
		realBusy = append(realBusy, h.Key)
	}
	gcSame(t, "kept in use (dry vs real)", dryBusy, realBusy)
	removed := gcRemovedKeys(real.Removed)
	var want []string
	for _, k := range before {
		if !slices.Contains(removed, k) {
			want = append(want, k)
		}
	}
	gcSame(t, "entries left after the real run", gcKeys(t, c), want)
	var sum int64
	for _, r := range real.Removed {
		sum += r.FreedBytes
	}
	if sum != real.FreedBytes {
		t.Errorf("per-entry freed bytes add up to %d, the total says %d", sum, real.FreedBytes)
	}
	if got := len(blobFiles(t, root)); got > blobsBefore {
		t.Errorf("blob files: %d before gc, %d after", blobsBefore, got)
	}
	return real
}

func gcPtr[T any](v T) *T { return &v }

// One cache of 50 entries, several policies, each checked against the
// survivors computed here from what the fixture knows.
func TestGCPolicies(t *testing.T) {
	type tc struct {
		name string
		opt  kcache.GCOptions
		// keep says whether an entry survives.
		keep   func(e gcEnt, ents []gcEnt) bool
		reason string
	}
	newest := func(n int) func(gcEnt, []gcEnt) bool {
		return func(e gcEnt, ents []gcEnt) bool { return e.builtAt.After(ents[len(ents)-1-n].builtAt) }
	}
	perGroup := func(field func(gcEnt) string, n int) func(gcEnt, []gcEnt) bool {
		return func(e gcEnt, ents []gcEnt) bool {
			newer := 0
			for _, o := range ents {
				if field(o) == field(e) && o.builtAt.After(e.builtAt) {
					newer++
				}
			}
			return newer < n
		}
	}
	age := func(d time.Duration) func(gcEnt, []gcEnt) bool {
		return func(e gcEnt, _ []gcEnt) bool { return gcNow.Sub(e.lastUsed) <= d }
	}
	cases := []tc{
		{"keep", kcache.GCOptions{Keep: gcPtr(10)}, newest(10), "keep 10"},
		{"keep0", kcache.GCOptions{Keep: gcPtr(0)}, func(gcEnt, []gcEnt) bool { return false }, "keep 0"},
		{"keep-per-version", kcache.GCOptions{KeepPer: map[string]int{"version": 2}},
			perGroup(func(e gcEnt) string { return e.version }, 2), "keep-per version:2"},
		{"keep-per-arch", kcache.GCOptions{KeepPer: map[string]int{"arch": 3}},
			perGroup(func(e gcEnt) string { return e.arch }, 3), "keep-per arch:3"},
		{"keep-per-source", kcache.GCOptions{KeepPer: map[string]int{"source": 1}},
			perGroup(func(e gcEnt) string { return e.source }, 1), "keep-per source:1"},
		{"max-age", kcache.GCOptions{MaxAge: 10 * 24 * time.Hour}, age(10 * 24 * time.Hour), "max-age 10d"},
		{"union", kcache.GCOptions{Keep: gcPtr(5), KeepPer: map[string]int{"version": 1}, MaxAge: 3 * 24 * time.Hour},
			func(e gcEnt, ents []gcEnt) bool {
				return newest(5)(e, ents) || perGroup(func(e gcEnt) string { return e.version }, 1)(e, ents) || age(3*24*time.Hour)(e, ents)
			}, "keep 5, keep-per version:1, max-age 3d"},
	}
	for _, cs := range cases {
		t.Run(cs.name, func(t *testing.T) {
			c, root, ents := gcFixture(t, 50)
			var want []string
			for _, e := range ents {
				if cs.keep(e, ents) {
					want = append(want, e.key)
				}
			}
			sort.Strings(want)
			if len(want) == 0 && cs.name != "keep0" || len(want) == len(ents) {
				t.Fatalf("bad case: %d survivors of %d", len(want), len(ents))
			}
			rep := gcDryThenReal(t, c, root, cs.opt)
			gcSame(t, "survivors", gcKeys(t, c), want)
			for _, r := range rep.Removed {
				if r.Reason != cs.reason {
					t.Errorf("%s removed with reason %q, want %q", r.Key, r.Reason, cs.reason)
				}
			}
		})
	}
}

// max-size removes least recently used entries first until the total fits;
// min-free with an injected probe does the same walk against free space.
func TestGCMaxSizeAndMinFreeLRU(t *testing.T) {
	for _, mode := range []string{"max-size", "min-free", "min-free-pct"} {
		t.Run(mode, func(t *testing.T) {
			c, root, ents := gcFixture(t, 50)
			var total int64
			for _, e := range ents {
				total += e.bytes
			}
			const need = 10_000 // bytes to free: about 5 entries' worth
			lru := slices.Clone(ents)
			sort.Slice(lru, func(i, j int) bool { return lru[i].lastUsed.Before(lru[j].lastUsed) })
			var want []string
			for freed := int64(0); freed < need; lru = lru[1:] {
				want = append(want, lru[0].key)
				freed += lru[0].bytes
			}
			sort.Strings(want)
			opt := kcache.GCOptions{}
			probed := ""
			probe := func(free, size uint64) func(string) (uint64, uint64, error) {
				return func(p string) (uint64, uint64, error) { probed = p; return free, size, nil }
			}
			switch mode {
			case "max-size":
				opt.MaxSize = total - need
			case "min-free":
				opt.MinFree = 1 << 20
				opt.FreeSpace = probe(1<<20-need, 1<<30)
			default:
				opt.MinFreePercent = 25
				opt.FreeSpace = probe(1<<20-need, 4<<20) // 25% of 4 MiB is 1 MiB
			}
			rep := gcDryThenReal(t, c, root, opt)
			gcSame(t, "removed (least recently used first)", gcRemovedKeys(rep.Removed), want)
			if mode != "max-size" && probed != root {
				t.Errorf("free-space probe asked about %q, want the cache root %q", probed, root)
			}
			if rep.SizeBefore != total {
				t.Errorf("size_before %d, want %d", rep.SizeBefore, total)
			}
		})
	}
}

// With stored_at as the fallback for entries never looked up: an entry
// stored "long ago" by the fake clock's measure is old.
func TestGCMaxAgeFallsBackToStoredAt(t *testing.T) {
	c, root, ents := gcFixture(t, 3)
	// Forget last_used of k01 by re-storing it (a new record).
	img := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(img, []byte("fresh image"), 0o644); err != nil {
		t.Fatal(err)
	}
	v := "6.6"
	if _, err := c.Store(context.Background(), "k01", kcache.Artifacts{Image: img}, kcache.Metadata{Version: &v, Source: kcache.Source{Type: "tarball"}, Arch: "x86_64", ImageName: "bzImage"}); err != nil {
		t.Fatal(err)
	}
	_ = ents
	// Relative to the real clock, the store was just now: max-age 1h keeps it.
	rep, err := c.GC(context.Background(), kcache.GCOptions{MaxAge: time.Hour, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(gcRemovedKeys(rep.Removed), "k01") {
		t.Errorf("a fresh store is condemned by max-age 1h (stored_at fallback ignored?): %+v", rep.Removed)
	}
	// With the fake clock years ahead, it is old.
	rep = gcDryThenReal(t, c, root, kcache.GCOptions{MaxAge: 24 * time.Hour})
	if !slices.Contains(gcRemovedKeys(rep.Removed), "k01") {
		t.Errorf("max-age 1d at %s kept an entry stored now: %+v", gcNow, rep.Removed)
	}
}

// Pins survive every policy and are reported; entries in use (a real
// process holds the shared lock) are skipped and reported with the holder,
// by the dry run as by the real run; a later gc removes them.
func TestGCPinsAndInUse(t *testing.T) {
	c, root, _ := gcFixture(t, 20)
	if err := c.Pin(context.Background(), "k00", "bisect base"); err != nil {
		t.Fatal(err)
	}
	h := procStartHelper(t, "holdshared", root, "k01")
	h.expectLine("ready")
	rep := gcDryThenReal(t, c, root, kcache.GCOptions{Keep: gcPtr(5)})
	gcSame(t, "kept pinned", rep.KeptPinned, []string{"k00"})
	if len(rep.KeptInUse) != 1 || rep.KeptInUse[0].Key != "k01" {
		t.Fatalf("kept in use: %+v, want k01", rep.KeptInUse)
	}
	found := false
	for _, hd := range rep.KeptInUse[0].Holders {
		found = found || hd.PID == h.pid()
	}
	if !found {
		t.Errorf("kept_in_use does not name holder pid %d: %+v", h.pid(), rep.KeptInUse[0].Holders)
	}
	gcSame(t, "survivors", gcKeys(t, c), []string{"k00", "k01", "k15", "k16", "k17", "k18", "k19"})
	if err := h.stdin.Close(); err != nil {
		t.Fatal(err)
	}
	h.mustSucceed()
	rep = gcDryThenReal(t, c, root, kcache.GCOptions{Keep: gcPtr(5)})
	gcSame(t, "removed once the holder left", gcRemovedKeys(rep.Removed), []string{"k01"})
	gcSame(t, "survivors", gcKeys(t, c), []string{"k00", "k15", "k16", "k17", "k18", "k19"})
}

// The size walk steps over pinned and busy entries: they free nothing.
func TestGCMaxSizeStepsOverPinned(t *testing.T) {
	c, root, ents := gcFixture(t, 10)
	lru := slices.Clone(ents)
	sort.Slice(lru, func(i, j int) bool { return lru[i].lastUsed.Before(lru[j].lastUsed) })
	if err := c.Pin(context.Background(), lru[0].key, ""); err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, e := range ents {
		total += e.bytes
	}
	rep := gcDryThenReal(t, c, root, kcache.GCOptions{MaxSize: total - 1})
	gcSame(t, "removed", gcRemovedKeys(rep.Removed), []string{lru[1].key})
	if len(rep.KeptPinned) != 0 {
		t.Errorf("max-size condemned a pinned entry: %q", rep.KeptPinned)
	}
}

// Two entries sharing an image: removing one frees only its manifest;
// removing the other then frees the image too. Sizes and dedup count for
// max-size as well: the shared image is counted once.
func TestGCDedupAwareFreedBytes(t *testing.T) {
	root := filepath.Join(t.TempDir(), "cache")
	c := mustOpen(root, &kcache.Options{})
	img := filepath.Join(t.TempDir(), "bzImage")
	if err := os.WriteFile(img, procContent("image", 1, 50_000, "shared"), 0o644); err != nil {
		t.Fatal(err)
	}
	var es []*kcache.Entry
	for i, key := range []string{"a-old", "b-new"} {
		meta := tarball
		meta.BuiltAt = fmt.Sprintf("2030-01-0%dT00:00:00Z", i+1)
		e, err := c.Store(context.Background(), key, kcache.Artifacts{Image: img}, meta)
		if err != nil {
			t.Fatal(err)
		}
		es = append(es, e)
	}
	if es[0].Image.Digest != es[1].Image.Digest {
		t.Fatal("the two entries do not share their image")
	}
	rep := gcDryThenReal(t, c, root, kcache.GCOptions{Keep: gcPtr(1)})
	if len(rep.Removed) != 1 || rep.Removed[0].Key != "a-old" || rep.Removed[0].FreedBytes != es[0].Manifest.Size {
		t.Fatalf("removed %+v; want a-old freeing only its manifest (%d bytes)", rep.Removed, es[0].Manifest.Size)
	}
	if _, err := os.Stat(c.BlobPath(es[0].Image.Digest)); err != nil {
		t.Fatalf("the shared image went with the first entry: %v", err)
	}
	if rep.SizeBefore != es[0].Image.Size+es[0].Manifest.Size+es[1].Manifest.Size {
		t.Errorf("size_before %d counts the shared image twice?", rep.SizeBefore)
	}
	rep = gcDryThenReal(t, c, root, kcache.GCOptions{Keep: gcPtr(0)})
	if len(rep.Removed) != 1 || rep.Removed[0].FreedBytes != es[1].Image.Size+es[1].Manifest.Size {
		t.Fatalf("removed %+v; want b-new freeing the image and its manifest", rep.Removed)
	}
	if got := blobFiles(t, root); len(got) != 0 {
		t.Errorf("blobs left: %q", got)
	}

	// Both at once: the image is credited once, to the second in order.
	for i, key := range []string{"a-old", "b-new"} {
		meta := tarball
		meta.BuiltAt = fmt.Sprintf("2030-01-0%dT00:00:00Z", i+1)
		e, err := c.Store(context.Background(), key, kcache.Artifacts{Image: img}, meta)
		if err != nil {
			t.Fatal(err)
		}
		es[i] = e
	}
	rep = gcDryThenReal(t, c, root, kcache.GCOptions{Keep: gcPtr(0)})
	if want := es[0].Image.Size + es[0].Manifest.Size + es[1].Manifest.Size; rep.FreedBytes != want {
		t.Errorf("freed %d, want %d (the shared image once)", rep.FreedBytes, want)
	}
}

// gc with no policy removes no entry; it sweeps orphan blobs past the grace
// period (not younger ones), records its run in the stats, and leaves
// corrupt entries alone (reporting them).
func TestGCHousekeepingOnly(t *testing.T) {
	c, root, ents := gcFixture(t, 5)
	// An orphan blob file, old, and a young one.
	mk := func(content string, age time.Duration) string {
		w := filepath.Join(t.TempDir(), "x")
		if err := os.WriteFile(w, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		d := procSha256Hex([]byte(content))
		p := c.BlobPath(d)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(w, p); err != nil {
			t.Fatal(err)
		}
		at := gcNow.Add(-age) // the sweep's grace is judged by Options.Now
		if err := os.Chtimes(p, at, at); err != nil {
			t.Fatal(err)
		}
		return p
	}
	old, young := mk("old orphan", 3*time.Hour), mk("young orphan", time.Minute)
	// A corrupt entry: its image file is gone.
	e, err := c.Lookup(context.Background(), ents[2].key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(e.ImagePath); err != nil {
		t.Fatal(err)
	}
	rep, err := gcClocked(c).GC(context.Background(), kcache.GCOptions{DryRun: true, Grace: 2 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if rep.OrphansRemoved != 1 || len(rep.Removed) != 0 {
		t.Errorf("dry run: %d orphans, removed %+v; want 1 orphan, no entry", rep.OrphansRemoved, rep.Removed)
	}
	rep, err = gcClocked(c).GC(context.Background(), kcache.GCOptions{Grace: 2 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Removed) != 0 || len(rep.Policies) != 0 {
		t.Errorf("gc without policies removed %+v (policies %q)", rep.Removed, rep.Policies)
	}
	gcSame(t, "corrupt entries reported", rep.Corrupt, []string{ents[2].key})
	if rep.OrphansRemoved != 1 || rep.OrphanBytes != int64(len("old orphan")) {
		t.Errorf("orphans removed %d (%d bytes), want 1 (%d bytes)", rep.OrphansRemoved, rep.OrphanBytes, len("old orphan"))
	}
	if _, err := os.Stat(old); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the old orphan is still there: %v", err)
	}
	if _, err := os.Stat(young); err != nil {
		t.Errorf("the orphan younger than the grace period was removed: %v", err)
	}
	if got := len(gcKeys(t, c)); got != 5 {
		t.Errorf("%d entries left, want all 5", got)
	}
	stats := gcStats(t, root)
	if stats[index.StatGCRuns] != 1 || stats[index.StatLastGC] != gcNow.Unix() || stats[index.StatLastGCFree] != int64(len("old orphan")) {
		t.Errorf("stats after one gc: %v", stats)
	}
	// A real run with removals adds up.
	rep, err = gcClocked(c).GC(context.Background(), kcache.GCOptions{Keep: gcPtr(1)})
	if err != nil {
		t.Fatal(err)
	}
	stats = gcStats(t, root)
	if stats[index.StatGCRuns] != 2 || stats[index.StatLastGCFree] != rep.FreedBytes || stats[index.StatEvictions] != int64(len(rep.Removed)) {
		t.Errorf("stats after the second gc (freed %d, removed %d): %v", rep.FreedBytes, len(rep.Removed), stats)
	}
	gcSame(t, "the corrupt entry survives gc", rep.Corrupt, []string{ents[2].key})
}

func gcStats(t *testing.T, root string) map[string]int64 {
	t.Helper()
	db, err := index.Open(filepath.Join(root, "index.db"), index.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var s map[string]int64
	if err := db.View(func(tx *index.Tx) error { s = tx.Stats(); return nil }); err != nil {
		t.Fatal(err)
	}
	return s
}

// gc on a cache that does not exist creates nothing.
func TestGCMissingCacheCreatesNothing(t *testing.T) {
	root := filepath.Join(t.TempDir(), "cache")
	c := mustOpen(root, &kcache.Options{})
	if _, err := c.GC(context.Background(), kcache.GCOptions{Keep: gcPtr(1)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Clean(context.Background(), kcache.CleanOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(root); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("gc created the root: %v", err)
	}
}

func TestGCRejectsBadOptions(t *testing.T) {
	c, _, _ := gcFixture(t, 1)
	for _, opt := range []kcache.GCOptions{
		{Keep: gcPtr(-1)}, {KeepPer: map[string]int{"colour": 1}}, {KeepPer: map[string]int{"arch": -1}},
		{MaxAge: -time.Hour}, {MaxSize: -1}, {MinFreePercent: 101}, {MinFree: 1, MinFreePercent: 1},
	} {
		if _, err := c.GC(context.Background(), opt); !errors.Is(err, kcache.ErrInvalid) {
			t.Errorf("GC(%+v): %v, want ErrInvalid", opt, err)
		}
	}
}

// A writer killed mid-store leaves its staging directory; the next gc
// removes it. A live writer's (here: stopped) staging directory stays.
func TestGCStagingOfDeadAndLiveWriters(t *testing.T) {
	root, work := t.TempDir(), t.TempDir()
	c := procHelperCache(root)
	if _, err := procStoreGen(c, "base", work, 0); err != nil {
		t.Fatal(err)
	}
	img, vml, err := procWriteKernel(work, 1, 64<<20, 1<<20, "big")
	if err != nil {
		t.Fatal(err)
	}
	// The live one first: every store sweeps dead writers' directories.
	live, liveDir := procStopMidIngest(t, root, "live", img, vml, nil)
	dead, deadDir := procStopMidIngest(t, root, "dead", img, vml, nil)
	dead.kill()
	_ = dead.wait()

	rep, err := c.GC(context.Background(), kcache.GCOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	gcSame(t, "staging a dry run would remove", rep.StagingRemoved, []string{filepath.Base(deadDir)})
	rep, err = c.GC(context.Background(), kcache.GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	gcSame(t, "staging removed", rep.StagingRemoved, []string{filepath.Base(deadDir)})
	if _, err := os.Stat(deadDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the dead writer's staging directory survived gc: %v", err)
	}
	if _, err := os.Stat(liveDir); err != nil {
		t.Errorf("gc removed the live writer's staging directory: %v", err)
	}
	// Once the live writer goes on, it finishes its store.
	if err := live.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	_ = live.stdin.Close()
	live.mustSucceed()
	if _, err := c.Lookup(context.Background(), "live"); err != nil {
		t.Errorf("the writer gc left alone did not finish its store: %v", err)
	}
	procCheckTmpEmpty(t, root)
}

// ---- clean ----

// gcCorrupt adds corrupt entries to a fixture cache: one whose image file
// is gone (newest built_at of all) and one whose record does not decode.
func gcCorrupt(t *testing.T, c *kcache.Cache, root string) []string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(img, []byte("image of c-gone"), 0o644); err != nil {
		t.Fatal(err)
	}
	meta := tarball
	meta.BuiltAt = "2039-01-01T00:00:00Z"
	e, err := c.Store(context.Background(), "c-gone", kcache.Artifacts{Image: img}, meta)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(e.ImagePath); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(filepath.Join(root, "index.db"), 0o644, &bolt.Options{Timeout: 5 * time.Second, FreelistType: bolt.FreelistMapType})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("entries")).Put([]byte("c-garbage"), []byte("\xc1 not msgpack"))
	}); err != nil {
		t.Fatal(err)
	}
	return []string{"c-garbage", "c-gone"}
}

// ktstr-cache.md §5.4: keep counts usable entries only; corrupt entries are
// always candidates; --corrupt-only never touches usable ones; output keeps
// List order. Plus kcache's rules: pins survive, entries in use are skipped.
func TestCleanParity(t *testing.T) {
	t.Run("keep counts usable entries only", func(t *testing.T) {
		c, root, ents := gcFixture(t, 6)
		corrupt := gcCorrupt(t, c, root)
		rep, err := c.Clean(context.Background(), kcache.CleanOptions{Keep: 2})
		if err != nil {
			t.Fatal(err)
		}
		want := append([]string{ents[0].key, ents[1].key, ents[2].key, ents[3].key}, corrupt...)
		sort.Strings(want)
		gcSame(t, "removed", gcRemovedKeys(rep.Removed), want)
		gcSame(t, "left", gcKeys(t, c), []string{ents[4].key, ents[5].key})
		// Candidates in List order: usable newest first, then corrupt by key.
		var order []string
		for _, le := range rep.Candidates {
			order = append(order, le.Key)
		}
		gcSame(t, "candidate order", order, []string{"k03", "k02", "k01", "k00", "c-garbage", "c-gone"})
	})
	t.Run("keep larger than the cache still removes corrupt", func(t *testing.T) {
		c, root, _ := gcFixture(t, 3)
		corrupt := gcCorrupt(t, c, root)
		rep, err := c.Clean(context.Background(), kcache.CleanOptions{Keep: 100})
		if err != nil {
			t.Fatal(err)
		}
		gcSame(t, "removed", gcRemovedKeys(rep.Removed), corrupt)
	})
	t.Run("corrupt-only", func(t *testing.T) {
		c, root, ents := gcFixture(t, 4)
		corrupt := gcCorrupt(t, c, root)
		rep, err := c.Clean(context.Background(), kcache.CleanOptions{CorruptOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		gcSame(t, "removed", gcRemovedKeys(rep.Removed), corrupt)
		gcSame(t, "left", gcKeys(t, c), gcMinus(ents, nil))
	})
	t.Run("all, with a pin and a holder", func(t *testing.T) {
		c, root, ents := gcFixture(t, 4)
		if err := c.Pin(context.Background(), "k01", ""); err != nil {
			t.Fatal(err)
		}
		h := procStartHelper(t, "holdshared", root, "k02")
		h.expectLine("ready")
		dry, err := c.Clean(context.Background(), kcache.CleanOptions{DryRun: true})
		if err != nil {
			t.Fatal(err)
		}
		rep, err := c.Clean(context.Background(), kcache.CleanOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(dry.Removed, rep.Removed) {
			t.Errorf("dry run %+v, real run %+v", dry.Removed, rep.Removed)
		}
		gcSame(t, "removed", gcRemovedKeys(rep.Removed), []string{"k00", "k03"})
		gcSame(t, "pinned", rep.KeptPinned, []string{"k01"})
		if len(rep.KeptInUse) != 1 || rep.KeptInUse[0].Key != "k02" || len(dry.KeptInUse) != 1 {
			t.Errorf("in use: real %+v, dry %+v; want k02", rep.KeptInUse, dry.KeptInUse)
		}
		gcSame(t, "left", gcKeys(t, c), gcMinus(ents, []string{"k00", "k03"}))
		if rep.FreedBytes != ents[0].bytes+ents[3].bytes {
			t.Errorf("freed %d, want %d", rep.FreedBytes, ents[0].bytes+ents[3].bytes)
		}
	})
	t.Run("only confirmed keys", func(t *testing.T) {
		c, _, _ := gcFixture(t, 4)
		rep, err := c.Clean(context.Background(), kcache.CleanOptions{Only: []string{"k00", "k03", "nonexistent"}})
		if err != nil {
			t.Fatal(err)
		}
		gcSame(t, "removed", gcRemovedKeys(rep.Removed), []string{"k00", "k03"})
	})
}
