package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kcache/kcache"
	"github.com/kcache/kcache/index"
	"github.com/kcache/kcache/internal/failpoint"
	"github.com/kcache/kcache/internal/ktstrfixture"
	"github.com/kcache/kcache/internal/s3test"
)

// The crash tests kill a real kcache process (this test binary run as the
// CLI) in the middle of a write and check what the next process finds:
//
//   - every entry that existed before is listed, usable, with its old
//     content or, if the interrupted transaction had committed, the new one
//     (image, vmlinux and manifest read back and hashed);
//   - doctor --dry-run finds nothing corrupt and nothing foreign, only
//     garbage that the sweep reclaims (orphan blobs, dead staging);
//   - after gc --grace 1ns (and with dying marks treated as abandoned at
//     once, see collectGarbage) the blob directory holds exactly the blobs
//     the index references, and .tmp is empty.

// crashEntry is what a listed entry must keep across a crash.
type crashEntry struct {
	Image, Vmlinux         string // sha256; Vmlinux "" without one
	ImageSize, VmlinuxSize int64
}

func (e crashEntry) String() string {
	return fmt.Sprintf("{image %.12s/%d vmlinux %.12s/%d}", e.Image, e.ImageSize, e.Vmlinux, e.VmlinuxSize)
}

// crashState lists the cache with `list --json`, fails on corrupt entries,
// and reads back and hashes every listed blob.
func crashState(t *testing.T, root string) map[string]crashEntry {
	t.Helper()
	out, stderr, code := runIn(t, root, "list", "--json")
	if code != 0 {
		t.Fatalf("list --json: exit %d: %s", code, stderr)
	}
	var l struct {
		Entries []struct {
			Key           string  `json:"key"`
			Error         *string `json:"error"`
			ErrorKind     *string `json:"error_kind"`
			ImagePath     string  `json:"image_path"`
			ImageSHA256   string  `json:"image_sha256"`
			ImageSize     int64   `json:"image_size"`
			VmlinuxPath   *string `json:"vmlinux_path"`
			VmlinuxSHA256 *string `json:"vmlinux_sha256"`
			VmlinuxSize   *int64  `json:"vmlinux_size"`
		} `json:"entries"`
	}
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatalf("list --json: %v\n%s", err, out)
	}
	st := map[string]crashEntry{}
	for _, e := range l.Entries {
		if e.Error != nil || e.ErrorKind != nil {
			t.Errorf("entry %q is corrupt after the crash: %v %v", e.Key, deref(e.ErrorKind), deref(e.Error))
			continue
		}
		ce := crashEntry{Image: e.ImageSHA256, ImageSize: e.ImageSize}
		checkBlobFile(t, e.Key, e.ImagePath, ce.Image, ce.ImageSize)
		if e.VmlinuxSHA256 != nil {
			ce.Vmlinux, ce.VmlinuxSize = *e.VmlinuxSHA256, *e.VmlinuxSize
			checkBlobFile(t, e.Key, deref(e.VmlinuxPath), ce.Vmlinux, ce.VmlinuxSize)
		}
		st[e.Key] = ce
	}
	return st
}

func deref[T any](p *T) T {
	var z T
	if p == nil {
		return z
	}
	return *p
}

func checkBlobFile(t *testing.T, key, path, digest string, size int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("entry %q: %v", key, err)
		return
	}
	s := sha256.Sum256(b)
	if got := hex.EncodeToString(s[:]); got != digest || int64(len(b)) != size {
		t.Errorf("entry %q: %s has sha256 %s size %d, want %s size %d", key, path, got, len(b), digest, size)
	}
}

// indexBlobs reads the index directly: the digests its records reference
// (image, vmlinux, manifest) and its dying blob records. It fails on records
// that do not decode or are marked corrupt, and on a referenced blob whose
// file is missing or has other bytes.
func indexBlobs(t *testing.T, root string) (referenced map[string]bool, dying int, records int) {
	t.Helper()
	db, err := index.Open(filepath.Join(root, "index.db"), index.Options{ReadOnly: true, ReadOld: true, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("open index: %v", err)
	}
	defer db.Close()
	referenced = map[string]bool{}
	err = db.View(func(tx *index.Tx) error {
		if err := tx.ForEach(func(key string, rec *index.Record, err error) error {
			records++
			if err != nil {
				t.Errorf("record %q does not decode: %v", key, err)
				return nil
			}
			if rec.Corrupt != nil {
				t.Errorf("record %q is marked corrupt: %+v", key, rec.Corrupt)
			}
			if rec.Manifest.Digest == "" {
				t.Errorf("record %q has no manifest", key)
			}
			for _, d := range rec.Digests() {
				referenced[d] = true
			}
			return nil
		}); err != nil {
			return err
		}
		return tx.ForEachBlob(func(d string, ref index.BlobRef) error {
			if ref.Refs == 0 || ref.Dying != "" {
				dying++
			}
			return nil
		})
	})
	if err != nil {
		t.Fatalf("read index: %v", err)
	}
	for d := range referenced {
		b, err := os.ReadFile(blobPath(root, d))
		if err != nil {
			t.Errorf("referenced blob: %v", err)
			continue
		}
		if s := sha256.Sum256(b); hex.EncodeToString(s[:]) != d {
			t.Errorf("blob %s does not hash to its name", d)
		}
	}
	return referenced, dying, records
}

func blobPath(root, d string) string { return filepath.Join(root, "blobs", "sha256", d[:2], d) }

// blobsOnDisk lists the blob files under blobs/sha256 by digest.
func blobsOnDisk(t *testing.T, root string) map[string]bool {
	t.Helper()
	on := map[string]bool{}
	err := filepath.WalkDir(filepath.Join(root, "blobs"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			on[d.Name()] = true
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return on
}

// tmpLeft lists what is under <root>/.tmp.
func tmpLeft(t *testing.T, root string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(root, ".tmp"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// collectGarbage runs `gc --grace 1ns` in this process with
// index.DyingAbandonAfter = 0, so that blobs a killed remover left dying are
// finished now instead of 30 s later (the time a dying mark must age before
// the sweep may assume its remover died; the crash tests know it did). No
// other test in this package runs in parallel.
func collectGarbage(t *testing.T, root string) string {
	t.Helper()
	saved := index.DyingAbandonAfter
	index.DyingAbandonAfter = 0
	defer func() { index.DyingAbandonAfter = saved }()
	out, stderr, code := runIn(t, root, "gc", "--grace", "1ns", "--json")
	if code != 0 {
		t.Fatalf("gc --grace 1ns: exit %d: %s", code, stderr)
	}
	return out
}

// checkExactBlobs checks, after collectGarbage, that the blob files are
// exactly the referenced blobs, that the index has no dying blob records
// left, and that no staging directory or staging lock remains.
func checkExactBlobs(t *testing.T, root string) {
	t.Helper()
	ref, dying, _ := indexBlobs(t, root)
	on := blobsOnDisk(t, root)
	for d := range on {
		if !ref[d] {
			t.Errorf("after gc: blob %s is on disk but no entry references it", d)
		}
	}
	for d := range ref {
		if !on[d] {
			t.Errorf("after gc: referenced blob %s is missing", d)
		}
	}
	if dying != 0 {
		t.Errorf("after gc: %d dying blob records left in the index", dying)
	}
	if left := tmpLeft(t, root); len(left) != 0 {
		t.Errorf("after gc: .tmp still holds %v", left)
	}
}

// checkDoctorDry runs doctor --dry-run --json and fails on anything but
// reclaimable garbage. It returns the orphan count, the staging directories
// the sweep would remove, and how many entries doctor would restore from
// complete manifests that no record references (a store killed after its
// manifest and before its commit leaves one; reported, not a failure).
func checkDoctorDry(t *testing.T, root string) (orphans, staging, restorable int) {
	t.Helper()
	out, stderr, code := runIn(t, root, "doctor", "--dry-run", "--json")
	if code != 0 {
		t.Fatalf("doctor --dry-run: exit %d: %s", code, stderr)
	}
	var r struct {
		Corrupt  []json.RawMessage `json:"corrupt"`
		Orphans  []json.RawMessage `json:"orphans"`
		Restored []json.RawMessage `json:"restored"`
		Foreign  []json.RawMessage `json:"foreign"`
		Rebuild  json.RawMessage   `json:"rebuild"`
		Sweep    *struct {
			StagingRemoved []string `json:"staging_removed"`
		} `json:"sweep"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("doctor --dry-run --json: %v\n%s", err, out)
	}
	if len(r.Corrupt) != 0 || len(r.Foreign) != 0 || (len(r.Rebuild) != 0 && string(r.Rebuild) != "null") {
		t.Errorf("doctor --dry-run after the crash found more than garbage:\n%s", out)
	}
	if r.Sweep != nil {
		staging = len(r.Sweep.StagingRemoved)
	}
	return len(r.Orphans), staging, len(r.Restored)
}

// killedBy runs cmd and reports whether it died of SIGKILL.
func killedBy(t *testing.T, cmd *exec.Cmd) (killed bool, stderr string) {
	t.Helper()
	var e bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &e
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("%s: %v", strings.Join(cmd.Args, " "), err)
	}
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL, e.String()
}

// crashInputs are the files the crash tests store: small distinct images
// and the ELF fixtures as vmlinux files (stripping them takes microseconds).
type crashInputs struct {
	dir string
}

func (in crashInputs) image(t testing.TB, name string, size int) string {
	t.Helper()
	p := filepath.Join(in.dir, "image-"+name)
	if _, err := os.Stat(p); err == nil {
		return p
	}
	b := make([]byte, size)
	s := sha256.Sum256([]byte(name))
	for i := 0; i < len(b); i += len(s) {
		copy(b[i:], s[:])
		s = sha256.Sum256(s[:])
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

var crashVmlinuxes = []string{
	cliSampleVmlinux,
	"../../testdata/elf/vmlinux-x86_64",
	"../../testdata/elf/vmlinux-x86_64-nobtf",
	"../../testdata/elf/vmlinux-x86_64-noikconfig",
}

// crashBase is the cache every matrix case starts from: a (with a vmlinux),
// b (without), c (with another vmlinux), built in that order.
func crashBase(t *testing.T, in crashInputs, root string) {
	t.Helper()
	for _, argv := range [][]string{
		{"store", "a", "--image", in.image(t, "a", 6000), "--vmlinux", crashVmlinuxes[0], "--built-at", "2025-01-01T00:00:00Z"},
		{"store", "b", "--image", in.image(t, "b", 5000), "--built-at", "2025-01-02T00:00:00Z"},
		{"store", "c", "--image", in.image(t, "c", 7000), "--vmlinux", crashVmlinuxes[2], "--built-at", "2025-01-03T00:00:00Z"},
	} {
		if _, stderr, code := runIn(t, root, argv...); code != 0 {
			t.Fatalf("%v: exit %d: %s", argv, code, stderr)
		}
	}
}

// crashCase is one process killed at one failpoint.
type crashCase struct {
	name  string   // subtest name
	point string   // failpoint
	argv  []string // the command that reaches it
	// prepare, when set, changes the base cache first (and may return
	// argv to use instead).
	prepare func(t *testing.T, root string) []string
	// committed is the state if the command's transaction committed,
	// from the base state; nil means the command changes no entry.
	committed func(base map[string]crashEntry) map[string]crashEntry
	// want is the outcome the point must give: "old" or "new".
	want string
	// extraKeys allows entries that were not there before (migrate).
	extraKeys bool
}

func TestCrashMatrix(t *testing.T) {
	in := crashInputs{dir: t.TempDir()}
	replaceArgv := []string{"store", "a", "--image", in.image(t, "a2", 6500), "--vmlinux", crashVmlinuxes[1], "--built-at", "2025-01-04T00:00:00Z"}
	// What "a" looks like once the replacement committed: store the same
	// inputs into a scratch cache.
	scratch := t.TempDir()
	if _, stderr, code := runIn(t, scratch, replaceArgv...); code != 0 {
		t.Fatalf("scratch store: %s", stderr)
	}
	replaced := crashState(t, scratch)["a"]
	withA := func(base map[string]crashEntry) map[string]crashEntry {
		m := clone(base)
		m["a"] = replaced
		return m
	}
	without := func(keys ...string) func(map[string]crashEntry) map[string]crashEntry {
		return func(base map[string]crashEntry) map[string]crashEntry {
			m := clone(base)
			for _, k := range keys {
				delete(m, k)
			}
			return m
		}
	}
	orphan := func(t *testing.T, root string) []string {
		b := []byte("an orphan blob no entry references")
		s := sha256.Sum256(b)
		p := blobPath(root, hex.EncodeToString(s[:]))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o444); err != nil {
			t.Fatal(err)
		}
		old := time.Now().Add(-2 * time.Hour)
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
		return nil
	}

	var cases []crashCase
	for _, p := range []struct {
		point, want string
	}{
		{failpoint.StoreAfterStaging, "old"}, {failpoint.StoreAfterImage, "old"},
		{failpoint.StoreAfterVmlinux, "old"}, {failpoint.StoreAfterManifest, "old"},
		{failpoint.StoreBeforeCommit, "old"}, {failpoint.StoreBeforeUnstage, "new"},
	} {
		cases = append(cases, crashCase{name: "store", point: p.point, argv: replaceArgv, committed: withA, want: p.want})
	}
	for _, point := range []string{failpoint.UpdateAfterCommit, failpoint.ReleaseAfterFirstUnlink} {
		cases = append(cases,
			crashCase{name: "store", point: point, argv: replaceArgv, committed: withA, want: "new"},
			crashCase{name: "rm", point: point, argv: []string{"rm", "a"}, committed: without("a"), want: "new"},
			crashCase{name: "clean", point: point, argv: []string{"clean", "--keep", "1", "--force"}, committed: without("a", "b"), want: "new"},
			crashCase{name: "gc", point: point, argv: []string{"gc", "--keep", "1"}, committed: without("a", "b"), want: "new"},
		)
	}
	cases = append(cases,
		crashCase{name: "gc", point: failpoint.SweepAfterOrphanUnlink, argv: []string{"gc", "--grace", "1ns"}, prepare: orphan, want: "old"},
		crashCase{name: "migrate", point: failpoint.MigrateBetweenEntries, want: "old", extraKeys: true,
			prepare: func(t *testing.T, root string) []string {
				f, err := ktstrfixture.Build(t.TempDir(), t.TempDir(), filepath.Join("..", "..", "testdata"))
				if err != nil {
					t.Fatal(err)
				}
				return []string{"migrate", "--from", f.Root}
			}},
		crashCase{name: "doctor", point: failpoint.RebuildBeforeSwap, argv: []string{"doctor", "--rebuild-index"}, want: "old"},
		crashCase{name: "upgrade", point: failpoint.UpgradeAfterBackup, argv: []string{"list"}, want: "old",
			prepare: func(t *testing.T, root string) []string { setSchema(t, root, 1); return nil }},
	)
	// A pull of a key the cache does not have, killed while downloading,
	// with every blob in place, and inside its install transaction: the
	// entry must not appear. Each case starts its own S3 server.
	pullable := func(t *testing.T, _ string) []string {
		srv := s3test.Start(t)
		for _, kv := range srv.Env("") {
			k, v, _ := strings.Cut(kv, "=")
			t.Setenv(k, v)
		}
		src := t.TempDir()
		cliOK(t, src, "store", "p", "--image", in.image(t, "p", 300000), "--vmlinux", crashVmlinuxes[3])
		cliOK(t, src, "push", "p")
		return []string{"pull", "p"}
	}
	// A push killed between blobs changes nothing local (its remote side is
	// TestCLIPushKilledBetweenBlobs).
	pushing := func(t *testing.T, root string) []string {
		srv := s3test.Start(t)
		for _, kv := range srv.Env("") {
			k, v, _ := strings.Cut(kv, "=")
			t.Setenv(k, v)
		}
		return []string{"push", "a"}
	}
	if s3test.Available() {
		cases = append(cases, crashCase{name: "push", point: failpoint.PushAfterFirstBlob, prepare: pushing, want: "old"})
	} else {
		cases = append(cases, crashCase{name: "skip", point: failpoint.PushAfterFirstBlob})
	}
	for _, point := range []string{failpoint.PullMidBlob, failpoint.PullAfterBlobs, failpoint.PullBeforeCommit} {
		if !s3test.Available() {
			t.Logf("%s: no S3 server to pull from (versitygw not installed); not tested", point)
			cases = append(cases, crashCase{name: "skip", point: point})
			continue
		}
		cases = append(cases, crashCase{name: "pull", point: point, prepare: pullable, want: "old"})
	}

	covered := map[string]bool{}
	for _, c := range cases {
		covered[c.point] = true
	}
	for _, name := range failpoint.All {
		if !covered[name] {
			t.Errorf("failpoint %q has no case in the crash matrix", name)
		}
	}
	for name := range covered {
		if !slices.Contains(failpoint.All, name) {
			t.Errorf("the crash matrix tests %q, which is not in failpoint.All", name)
		}
	}

	for _, c := range cases {
		if c.name == "skip" {
			continue
		}
		t.Run(c.point+"/"+c.name, func(t *testing.T) {
			root := t.TempDir()
			crashBase(t, in, root)
			before := crashState(t, root)
			argv := c.argv
			if c.prepare != nil {
				if a := c.prepare(t, root); a != nil {
					argv = a
				}
			}
			cmd := kcacheCmd(t, root, argv...)
			cmd.Env = append(cmd.Env, failpoint.Env+"="+c.point)
			killed, stderr := killedBy(t, cmd)
			if !killed {
				t.Fatalf("kcache %s never reached failpoint %s (not killed; exit %d)\n%s",
					strings.Join(argv, " "), c.point, cmd.ProcessState.ExitCode(), stderr)
			}

			after := crashState(t, root)
			outcome := classify(t, before, after, c)
			if outcome != c.want {
				t.Errorf("outcome %s, want %s", outcome, c.want)
			}
			orphans, staging, restorable := checkDoctorDry(t, root)
			_, dying, _ := indexBlobs(t, root)
			collectGarbage(t, root)
			if again := crashState(t, root); !equalState(again, after) {
				t.Errorf("gc changed the entries:\nbefore gc %v\nafter gc  %v", after, again)
			}
			checkExactBlobs(t, root)
			var leftovers []string
			ents, _ := os.ReadDir(root)
			for _, e := range ents {
				if strings.HasPrefix(e.Name(), "index.db.") {
					leftovers = append(leftovers, e.Name())
				}
			}
			t.Logf("RELIABILITY failpoint name=%s cmd=%s outcome=%s entries=%d orphans=%d staging=%d dying=%d restorable=%d lost=0 corrupt=0 index_files=%s",
				c.point, c.name, outcome, len(after), orphans, staging, dying, restorable, strings.Join(leftovers, ","))
		})
	}
}

func clone(m map[string]crashEntry) map[string]crashEntry {
	c := make(map[string]crashEntry, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

func equalState(a, b map[string]crashEntry) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// classify says whether after is the state before the command ("old") or
// the state once it committed ("new"), and fails when it is neither: an
// entry lost, changed to something else, or half replaced.
func classify(t *testing.T, before, after map[string]crashEntry, c crashCase) string {
	t.Helper()
	restrict := func(m map[string]crashEntry) map[string]crashEntry {
		if !c.extraKeys {
			return m
		}
		r := map[string]crashEntry{}
		for k := range before {
			if v, ok := m[k]; ok {
				r[k] = v
			}
		}
		return r
	}
	got := restrict(after)
	if equalState(got, before) {
		return "old"
	}
	if c.committed != nil && equalState(got, c.committed(before)) {
		return "new"
	}
	want := "unchanged"
	if c.committed != nil {
		want = fmt.Sprint(c.committed(before))
	}
	t.Errorf("entries after the crash are neither the old state nor the committed one:\nbefore    %v\ncommitted %s\nafter     %v", before, want, after)
	return "broken"
}

// crashTrials is how many random kills TestCrashRandomKill makes
// (KCACHE_CRASH_TRIALS overrides; 200 take about half a minute on 2 cores).
const crashTrials = 200

// TestCrashRandomKill kills a real kcache store, rm or gc with SIGKILL after
// a random delay, 200 times on one cache, and checks after every kill that
// no entry was lost or damaged: every entry is usable, with its content
// before the command or after it; every referenced blob is on disk with its
// bytes. Every 25 trials, and at the end, gc collects the garbage and the
// blob directory must then hold exactly the referenced blobs.
func TestCrashRandomKill(t *testing.T) {
	trials := crashTrials
	if v := os.Getenv("KCACHE_CRASH_TRIALS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("KCACHE_CRASH_TRIALS=%q: %v", v, err)
		}
		trials = n
	} else if testing.Short() {
		trials = 40
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("KCACHE_CRASH_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	t.Logf("seed %d (KCACHE_CRASH_SEED reproduces the schedule, not the timing)", seed)

	in := crashInputs{dir: t.TempDir()}
	root := t.TempDir()
	keys := []string{"k0", "k1", "k2", "k3", "k4"}
	lib := mustOpen(root, &kcache.Options{})
	built := 0
	storeArgv := func(key string) []string {
		built++
		argv := []string{"store", key, "--image", in.image(t, fmt.Sprintf("r%d", built), 2048+rng.IntN(16<<10)),
			"--built-at", time.Date(2025, 1, 1, 0, 0, built, 0, time.UTC).Format(time.RFC3339)}
		if vm := rng.IntN(len(crashVmlinuxes) + 1); vm < len(crashVmlinuxes) {
			argv = append(argv, "--vmlinux", crashVmlinuxes[vm])
		}
		return argv
	}
	for _, k := range keys[:3] {
		if _, stderr, code := runIn(t, root, storeArgv(k)...); code != 0 {
			t.Fatalf("store %s: %s", k, stderr)
		}
	}

	// How long each command takes uninterrupted (the fastest of three, as
	// other processes may share the machine), and how long the process
	// takes to start (`version`), so that delays spread over the command's
	// work: from 80% of the start-up time to 150% of the whole run.
	timed := func(argv ...string) time.Duration {
		best := time.Duration(1<<63 - 1)
		for range 3 {
			start := time.Now()
			if _, stderr, code := runProc(t, root, argv...); code != 0 {
				t.Fatalf("%v: %s", argv, stderr)
			}
			best = min(best, time.Since(start))
			if argv[0] == "rm" { // put it back for the next round
				if _, stderr, code := runIn(t, root, storeArgv(argv[1])...); code != 0 {
					t.Fatalf("store: %s", stderr)
				}
			}
		}
		return best
	}
	startup := timed("version")
	durStore := timed(storeArgv("k3")...)
	durRm := timed("rm", "k3")
	durGC := timed("gc", "--keep", "5")
	model := libState(t, lib)
	t.Logf("uninterrupted (fastest of 3): start-up %v, store %v, rm %v, gc %v", startup, durStore, durRm, durGC)
	delayFor := func(dur time.Duration) time.Duration {
		lo := startup * 4 / 5
		hi := max(dur*3/2, lo+time.Millisecond)
		return lo + time.Duration(rng.Int64N(int64(hi-lo)))
	}

	var killed, completed, newState, oldState, lost, corrupt, gcs int
	// Kills by where they landed: after the commit (the new state is
	// there), mid-write (no new state, but new staging directories, blob
	// files or dying records: the command had started writing), or before
	// anything was written (process start, reading, planning).
	var afterCommit, midWrite, beforeWrite int
	seen := map[string]bool{} // garbage already there before this trial
	ops := map[string]int{}
	start := time.Now()
	for trial := 1; trial <= trials; trial++ {
		var argv []string
		var dur time.Duration
		var target string
		op := []string{"store", "store", "rm", "gc"}[rng.IntN(4)]
		if len(model) < 2 {
			op = "store"
		}
		switch op {
		case "store":
			target = keys[rng.IntN(len(keys))]
			argv, dur = storeArgv(target), durStore
		case "rm":
			present := sortedKeys(model)
			target = present[rng.IntN(len(present))]
			argv, dur = []string{"rm", target}, durRm
		case "gc":
			argv, dur = []string{"gc", "--keep", strconv.Itoa(1 + rng.IntN(3))}, durGC
			if rng.IntN(3) == 0 {
				argv = append(argv, "--grace", "1ns")
			}
		}
		ops[op]++
		delay := delayFor(dur)
		cmd := kcacheCmd(t, root, argv...)
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = io.Discard, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(delay)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		wasKilled := false
		ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
		switch {
		case ws.Signaled() && ws.Signal() == syscall.SIGKILL:
			killed++
			wasKilled = true
		case err == nil:
			completed++
		default:
			t.Fatalf("trial %d: kcache %s: %v\n%s", trial, strings.Join(argv, " "), err, stderr.String())
		}

		// Invariants after every trial, through the library and the index.
		after := libState(t, lib)
		if n := countCorrupt(t, lib); n > 0 {
			corrupt += n
		}
		changed := false
		for k, old := range model {
			got, ok := after[k]
			switch {
			case ok && got == old:
			case op == "store" && k == target && ok:
				changed = true
			case (op == "rm" && k == target || op == "gc") && !ok:
				changed = true
			default:
				lost++
				t.Errorf("trial %d (%s): entry %q was %v, now %v (present %v)", trial, strings.Join(argv, " "), k, old, got, ok)
			}
		}
		for k := range after {
			if _, ok := model[k]; !ok {
				if op == "store" && k == target {
					changed = true
				} else {
					t.Errorf("trial %d: entry %q appeared from nowhere", trial, k)
				}
			}
		}
		if changed {
			newState++
		} else {
			oldState++
		}
		ref, dying, _ := indexBlobs(t, root)
		newGarbage := false
		for d := range blobsOnDisk(t, root) {
			if !ref[d] && !seen[d] {
				seen[d], newGarbage = true, true
			}
		}
		for _, name := range tmpLeft(t, root) {
			if !seen[name] {
				seen[name], newGarbage = true, true
			}
		}
		if k := fmt.Sprintf("dying %d", dying); dying > 0 && !seen[k] {
			seen[k], newGarbage = true, true
		}
		if wasKilled {
			switch {
			case changed:
				afterCommit++
			case newGarbage:
				midWrite++
			default:
				beforeWrite++
			}
		}
		model = after
		if trial%25 == 0 || trial == trials {
			collectGarbage(t, root)
			checkExactBlobs(t, root)
			gcs++
			seen = map[string]bool{}
		}
		if t.Failed() {
			t.Fatalf("stopping after trial %d", trial)
		}
	}
	t.Logf("RELIABILITY random-kill trials=%d store=%d rm=%d gc=%d killed=%d killed_after_commit=%d killed_mid_write=%d killed_before_write=%d completed=%d committed=%d unchanged=%d gc_checks=%d lost=%d corrupt=%d seconds=%.1f",
		trials, ops["store"], ops["rm"], ops["gc"], killed, afterCommit, midWrite, beforeWrite, completed, newState, oldState, gcs, lost, corrupt, time.Since(start).Seconds())
}

// libState is the cache's entries as the library lists them, with their
// blob files read back and hashed; corrupt entries fail the test.
func libState(t *testing.T, c *kcache.Cache) map[string]crashEntry {
	t.Helper()
	l, err := c.List(context.Background(), kcache.ListOptions{})
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	st := map[string]crashEntry{}
	for _, e := range l.Entries {
		if e.Corrupt != nil {
			continue // countCorrupt reports it
		}
		ce := crashEntry{Image: e.Entry.Image.Digest, ImageSize: e.Entry.Image.Size}
		checkBlobFile(t, e.Key, e.Entry.ImagePath, ce.Image, ce.ImageSize)
		if v := e.Entry.Vmlinux; v != nil {
			ce.Vmlinux, ce.VmlinuxSize = v.Digest, v.Size
			checkBlobFile(t, e.Key, e.Entry.VmlinuxPath, ce.Vmlinux, ce.VmlinuxSize)
		}
		st[e.Key] = ce
	}
	return st
}

func countCorrupt(t *testing.T, c *kcache.Cache) int {
	t.Helper()
	l, err := c.List(context.Background(), kcache.ListOptions{})
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	n := 0
	for _, e := range l.Entries {
		if e.Corrupt != nil {
			n++
			t.Errorf("entry %q is corrupt: %v", e.Key, e.Corrupt)
		}
	}
	return n
}

func sortedKeys(m map[string]crashEntry) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
