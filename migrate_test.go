package kcache_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kcache/kcache"
	"github.com/kcache/kcache/index"
	"github.com/kcache/kcache/internal/ktstrfixture"
	"github.com/kcache/kcache/internal/legacy"
	"github.com/kcache/kcache/migrate"
)

func migFixture(t *testing.T) *ktstrfixture.Fixture {
	t.Helper()
	f, err := ktstrfixture.Build(t.TempDir(), t.TempDir(), "testdata")
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Valid) < 20 {
		t.Fatalf("fixture has %d valid entries", len(f.Valid))
	}
	return f
}

func migKeys[T any](m map[string]T) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func migImportedKeys(r *kcache.MigrateReport) []string {
	var ks []string
	for _, e := range r.Imported {
		ks = append(ks, e.Key)
	}
	sort.Strings(ks)
	return ks
}

// migCheckEntry compares kcache's entry with the legacy entry field by field.
func migCheckEntry(t *testing.T, c *kcache.Cache, want ktstrfixture.Entry) {
	t.Helper()
	e, err := c.Describe(context.Background(), want.Key)
	if err != nil {
		t.Fatalf("%s: %v", want.Key, err)
	}
	m := want.Meta
	got := legacy.Metadata{Version: e.Version, Source: legacy.Source(e.Source), Arch: e.Arch, ImageName: e.ImageName,
		ConfigHash: e.ConfigHash, BuiltAt: e.BuiltAt, KtstrKconfigHash: e.KconfigHash, HasVmlinux: e.HasVmlinux,
		VmlinuxStripped: e.VmlinuxStripped, SourceVmlinuxSize: e.SourceVmlinuxSize, SourceVmlinuxMtimeSecs: e.SourceVmlinuxMtimeSecs}
	// kcache strips every vmlinux it stores (the fixtures all strip), so
	// vmlinux_stripped is true whenever there is one.
	m.VmlinuxStripped = m.HasVmlinux
	if !reflect.DeepEqual(got, m) {
		t.Errorf("%s: metadata\n got %s\nwant %s", want.Key, migJSON(got), migJSON(m))
	}
	if e.Image.Digest != want.ImageSHA256 || e.Image.Size != want.ImageSize {
		t.Errorf("%s: image %s (%d); want %s (%d)", want.Key, e.Image.Digest, e.Image.Size, want.ImageSHA256, want.ImageSize)
	}
	if e.Migrated == nil {
		t.Fatalf("%s: no migrated record", want.Key)
	}
	if e.Migrated.ImageSHA256 != want.ImageSHA256 || e.Migrated.VmlinuxSHA256 != want.VmlinuxSHA256 ||
		e.Migrated.VmlinuxSize != want.VmlinuxSize || e.Migrated.LegacyStripped != want.Meta.VmlinuxStripped {
		t.Errorf("%s: migrated %+v; want image %s vmlinux %s (%d) stripped %v", want.Key, e.Migrated, want.ImageSHA256, want.VmlinuxSHA256, want.VmlinuxSize, want.Meta.VmlinuxStripped)
	}
	if (e.Vmlinux != nil) != want.Meta.HasVmlinux {
		t.Errorf("%s: vmlinux blob %v; want has_vmlinux %v", want.Key, e.Vmlinux, want.Meta.HasVmlinux)
	}
}

func migJSON(m legacy.Metadata) string {
	b, _ := json.Marshal(m)
	return string(b)
}

// Migrate imports exactly the valid entries with identical metadata,
// reports each corrupt one with its class, ignores dot directories and
// stray files, leaves the source untouched and, run again, writes nothing.
func TestMigrateImportsValidEntriesAndIsIdempotent(t *testing.T) {
	f := migFixture(t)
	root := t.TempDir()
	c := mustOpen(root, &kcache.Options{})
	before := snapshotTree(t, f.Root)
	var progress []int
	r, err := c.Migrate(context.Background(), kcache.MigrateOptions{From: f.Root, LockTimeout: time.Second, Progress: func(done, total int) {
		progress = append(progress, done)
		if total != len(f.Valid)+len(f.Corrupt) {
			t.Errorf("progress total %d; want %d", total, len(f.Valid)+len(f.Corrupt))
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := migImportedKeys(r), migKeys(f.Valid); !reflect.DeepEqual(got, want) {
		t.Fatalf("imported %v\nwant %v", got, want)
	}
	kinds := map[string]string{}
	for _, c := range r.Corrupt {
		kinds[c.Key] = c.ErrorKind
		if migrate.ClassifyReason(c.Reason) != c.ErrorKind {
			t.Errorf("%s: reason %q does not classify as %s", c.Key, c.Reason, c.ErrorKind)
		}
	}
	if !reflect.DeepEqual(kinds, f.Corrupt) {
		t.Fatalf("corrupt %v\nwant %v", kinds, f.Corrupt)
	}
	if len(r.SkippedExisting)+len(r.Busy)+len(r.Conflicts)+len(r.Failed)+len(r.RemovedFromSource) != 0 {
		t.Fatalf("unexpected report: %+v", r)
	}
	if len(progress) != len(f.Valid)+len(f.Corrupt) {
		t.Errorf("progress called %d times", len(progress))
	}
	var in, stored int64
	for _, e := range r.Imported {
		in += e.BytesIn
		stored += e.BytesStored
		if w := f.Valid[e.Key]; e.BytesIn != w.ImageSize+w.VmlinuxSize || e.Updated {
			t.Errorf("%s: %+v", e.Key, e)
		}
	}
	if in != r.BytesIn || stored != r.BytesStored || r.BytesStored >= r.BytesIn {
		t.Errorf("totals in %d stored %d; entries sum to %d, %d", r.BytesIn, r.BytesStored, in, stored)
	}
	for _, w := range f.Valid {
		migCheckEntry(t, c, w)
	}
	l, err := c.List(context.Background(), kcache.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Entries) != len(f.Valid) {
		t.Fatalf("kcache lists %d entries; want %d", len(l.Entries), len(f.Valid))
	}
	if before.diff(t, snapshotTree(t, f.Root), "migrate"); t.Failed() {
		t.FailNow()
	}

	// Second run: everything skipped, index.db byte for byte the same.
	db, err := os.ReadFile(c.IndexPath())
	if err != nil {
		t.Fatal(err)
	}
	r2, err := c.Migrate(context.Background(), kcache.MigrateOptions{From: f.Root, LockTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(r2.SkippedExisting)
	if len(r2.Imported) != 0 || !reflect.DeepEqual(r2.SkippedExisting, migKeys(f.Valid)) || len(r2.Corrupt) != len(f.Corrupt) || r2.BytesIn != 0 {
		t.Fatalf("second run: %+v", r2)
	}
	if db2, err := os.ReadFile(c.IndexPath()); err != nil || !bytes.Equal(db, db2) {
		t.Fatalf("the second run changed index.db (%v)", err)
	}

	// A changed source entry is stored again; the rest stays skipped.
	key := migKeys(f.Valid)[3]
	old := f.Valid[key]
	meta := old.Meta
	meta.BuiltAt = "2027-01-01T00:00:00Z"
	if _, err := f.Put(key, []byte("a new kernel image"), "sample", meta); err != nil {
		t.Fatal(err)
	}
	r3, err := c.Migrate(context.Background(), kcache.MigrateOptions{From: f.Root, LockTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if len(r3.Imported) != 1 || r3.Imported[0].Key != key || !r3.Imported[0].Updated || len(r3.SkippedExisting) != len(f.Valid)-1 {
		t.Fatalf("after changing %s: %+v", key, r3)
	}
	migCheckEntry(t, c, f.Valid[key])
	// Only the vmlinux changed (same image, same metadata): also noticed.
	cur := f.Valid[key]
	if _, err := f.Put(key, []byte("a new kernel image"), "elf", cur.Meta); err != nil {
		t.Fatal(err)
	}
	r4, err := c.Migrate(context.Background(), kcache.MigrateOptions{From: f.Root, LockTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if len(r4.Imported) != 1 || r4.Imported[0].Key != key {
		t.Fatalf("after changing only the vmlinux of %s: %+v", key, r4)
	}
	migCheckEntry(t, c, f.Valid[key])
}

// --dry-run reads everything and writes nothing: not even the root.
func TestMigrateDryRunWritesNothing(t *testing.T) {
	f := migFixture(t)
	root := filepath.Join(t.TempDir(), "kcache")
	c := mustOpen(root, &kcache.Options{})
	before := snapshotTree(t, f.Root)
	r, err := c.Migrate(context.Background(), kcache.MigrateOptions{From: f.Root, DryRun: true, RemoveSource: true, LockTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(migImportedKeys(r), migKeys(f.Valid)) || len(r.Corrupt) != len(f.Corrupt) || len(r.RemovedFromSource) != 0 || !r.DryRun {
		t.Fatalf("dry run report: %+v", r)
	}
	if _, err := os.Stat(root); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("dry run created the kcache root (%v)", err)
	}
	if before.diff(t, snapshotTree(t, f.Root), "a dry-run migrate"); t.Failed() {
		t.FailNow()
	}
	// A missing source is an empty one.
	if r, err := c.Migrate(context.Background(), kcache.MigrateOptions{From: filepath.Join(t.TempDir(), "none")}); err != nil || len(r.Imported)+len(r.Corrupt) != 0 {
		t.Fatalf("missing source: %+v, %v", r, err)
	}
}

// An entry whose ktstr lock another process holds exclusively (ktstr
// replacing it) is waited for, then reported busy with the holder and not
// read; released while migrate waits, it is imported.
func TestMigrateWaitsForKtstrWriterLock(t *testing.T) {
	work := t.TempDir()
	f, err := ktstrfixture.Build(t.TempDir(), work, "testdata")
	if err != nil {
		t.Fatal(err)
	}
	keys := migKeys(f.Valid)
	held := keys[len(keys)-1] // the last key, so Progress says when migrate reaches it
	lockPath := migrate.LockPath(f.Root, held)
	c := mustOpen(t.TempDir(), &kcache.Options{})

	h := procStartHelper(t, "holdflock", lockPath, "exclusive")
	h.expectLine("ready")
	r, err := c.Migrate(context.Background(), kcache.MigrateOptions{From: f.Root, LockTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Busy) != 1 || r.Busy[0].Key != held || r.Busy[0].Lockfile != lockPath {
		t.Fatalf("busy %+v; want %s", r.Busy, held)
	}
	if hs := r.Busy[0].Holders; len(hs) != 1 || hs[0].PID != h.pid() {
		t.Fatalf("holders %+v; want pid %d", hs, h.pid())
	}
	if _, err := c.Describe(context.Background(), held); !errors.Is(err, kcache.ErrNotFound) {
		t.Fatalf("the busy entry was imported (%v)", err)
	}
	if len(r.Imported) != len(f.Valid)-1 {
		t.Fatalf("imported %d; want %d", len(r.Imported), len(f.Valid)-1)
	}

	// Released while migrate waits for it (migrate reached it once every
	// other entry is done): imported.
	h.kill()
	_ = h.wait()
	h = procStartHelper(t, "holdflock", lockPath, "exclusive")
	h.expectLine("ready")
	var once sync.Once
	r, err = c.Migrate(context.Background(), kcache.MigrateOptions{From: f.Root, LockTimeout: procHangGuard, Progress: func(done, total int) {
		if done == total-1 {
			once.Do(func() { _ = h.stdin.Close() })
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	_ = h.wait()
	if len(r.Busy) != 0 || len(r.Imported) != 1 || r.Imported[0].Key != held {
		t.Fatalf("after the holder released: %+v", r)
	}
	migCheckEntry(t, c, f.Valid[held])
}

// --remove-source removes only entries that are in kcache and verify: not
// corrupt ones, not one in use, not one whose kcache copy is damaged.
func TestMigrateRemoveSource(t *testing.T) {
	f := migFixture(t)
	root := t.TempDir()
	c := mustOpen(root, &kcache.Options{})
	keys := migKeys(f.Valid)
	damaged, inUse := keys[1], keys[2]
	if _, err := c.Migrate(context.Background(), kcache.MigrateOptions{From: f.Root, LockTimeout: time.Second}); err != nil {
		t.Fatal(err)
	}
	e, err := c.Describe(context.Background(), damaged)
	if err != nil {
		t.Fatal(err)
	}
	blob := c.BlobPath(e.Image.Digest)
	data, err := os.ReadFile(blob)
	if err != nil {
		t.Fatal(err)
	}
	data[0] ^= 0xff
	if err := os.Chmod(blob, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(blob, data, 0o644); err != nil {
		t.Fatal(err)
	}
	// As bit rot would, which leaves the file's ctime alone: the index's
	// recorded ctime is the damaged file's, so only hashing finds it.
	recordCtimeOf(t, c, e.Image.Digest)
	h := procStartHelper(t, "holdflock", migrate.LockPath(f.Root, inUse), "shared")
	h.expectLine("ready")

	r, err := c.Migrate(context.Background(), kcache.MigrateOptions{From: f.Root, RemoveSource: true, LockTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, k := range keys {
		if k != damaged && k != inUse {
			want = append(want, k)
		}
	}
	sort.Strings(r.RemovedFromSource)
	if !reflect.DeepEqual(r.RemovedFromSource, want) {
		t.Fatalf("removed %v\nwant %v\nnot removed %+v", r.RemovedFromSource, want, r.NotRemoved)
	}
	notRemoved := map[string]string{}
	for _, p := range r.NotRemoved {
		notRemoved[p.Key] = p.Reason
	}
	if !strings.Contains(notRemoved[damaged], "does not verify") || !strings.Contains(notRemoved[inUse], "locked") || len(notRemoved) != 2 {
		t.Fatalf("not removed: %v", notRemoved)
	}
	left, err := migrate.ListKeys(f.Root)
	if err != nil {
		t.Fatal(err)
	}
	wantLeft := append([]string{damaged, inUse}, migKeys(f.Corrupt)...)
	sort.Strings(wantLeft)
	if !reflect.DeepEqual(left, wantLeft) {
		t.Fatalf("left in the source: %v\nwant %v", left, wantLeft)
	}
	for _, name := range []string{".locks", ".tmp-x-99999", ".hidden"} {
		if _, err := os.Stat(filepath.Join(f.Root, name)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	ents, _ := os.ReadDir(f.Root)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".tmp-") && e.Name() != ".tmp-x-99999" {
			t.Errorf("left behind: %s", e.Name())
		}
	}
	for _, k := range want {
		migCheckEntry(t, c, f.Valid[k])
	}
}

// recordCtimeOf sets the index's recorded ctime of blob d to its file's
// current one, as if the file had changed without its ctime moving (bit
// rot): kcache then trusts it until it hashes it.
func recordCtimeOf(t *testing.T, c *kcache.Cache, d string) {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(c.BlobPath(d), &st); err != nil {
		t.Fatal(err)
	}
	db, err := index.Open(c.IndexPath(), index.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *index.Tx) error { return tx.SetBlobCtime(d, st.Ctim.Nano()) }); err != nil {
		t.Fatal(err)
	}
}
