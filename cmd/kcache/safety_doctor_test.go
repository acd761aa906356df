package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kcache/kcache"
	"github.com/kcache/kcache/index"
	"github.com/kcache/kcache/internal/failpoint"
)

// Issue 12 items 5, 6 and 8: doctor never resurrects a removed entry, never
// makes concurrent writers fail, and never rearranges a directory that is
// not a kcache root.

// safetyKill runs kcache ARGS as a separate process with failpoint point
// armed and fails unless the process died there.
func safetyKill(t *testing.T, root, point string, args ...string) {
	t.Helper()
	cmd := kcacheCmd(t, root, args...)
	cmd.Env = append(cmd.Env, failpoint.Env+"="+point)
	if killed, stderr := killedBy(t, cmd); !killed {
		t.Fatalf("kcache %s never reached failpoint %s: %s", strings.Join(args, " "), point, stderr)
	}
}

// safetyDoctor runs doctor ARGS --json in this process and decodes it.
func safetyDoctor(t *testing.T, root string, args ...string) (rep struct {
	Restored []struct {
		Key string `json:"key"`
	} `json:"restored"`
	Rebuild *struct {
		Entries int `json:"entries"`
		Removed int `json:"removed"`
	} `json:"rebuild"`
	Foreign []struct {
		Path          string `json:"path"`
		QuarantinedTo string `json:"quarantined_to"`
		Kept          string `json:"kept"`
	} `json:"foreign"`
}) {
	t.Helper()
	out, _ := cliOK(t, root, append(append([]string{"doctor"}, args...), "--json")...)
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("doctor --json: %v\n%s", err, out)
	}
	return rep
}

// manifestBlobs lists the blob files that are manifests.
func manifestBlobs(t *testing.T, root string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for d := range blobsOnDisk(t, root) {
		b, err := os.ReadFile(blobPath(root, d))
		if err == nil && index.IsManifest(b) {
			out[d] = true
		}
	}
	return out
}

// TestSafetyDoctorKilledStoreThenRmNotRestored: a store of a killed after
// its manifest was written leaves a complete manifest no record references;
// after `rm a`, doctor must not bring a back with the killed store's content.
func TestSafetyDoctorKilledStoreThenRmNotRestored(t *testing.T) {
	in := crashInputs{dir: t.TempDir()}
	root := t.TempDir()
	crashBase(t, in, root)
	safetyKill(t, root, failpoint.StoreAfterManifest, "store", "a", "--image", in.image(t, "a2", 6500))
	cliOK(t, root, "rm", "a")
	if rep := safetyDoctor(t, root, "--dry-run"); len(rep.Restored) != 0 {
		t.Errorf("doctor --dry-run would restore %+v after rm a", rep.Restored)
	}
	rep := safetyDoctor(t, root)
	if len(rep.Restored) != 0 {
		t.Errorf("doctor restored %+v after rm a", rep.Restored)
	}
	if _, ok := crashState(t, root)["a"]; ok {
		t.Errorf("a is listed again after rm a and doctor")
	}
	// The same after a rebuild from the (readable) index: its tombstone is
	// carried over, and the leftover manifest is skipped.
	rep = safetyDoctor(t, root, "--rebuild-index")
	if _, ok := crashState(t, root)["a"]; ok || rep.Rebuild == nil || rep.Rebuild.Removed != 1 {
		t.Errorf("after doctor --rebuild-index: a listed %v, rebuild %+v", ok, rep.Rebuild)
	}
	if rep := safetyDoctor(t, root); len(rep.Restored) != 0 {
		t.Errorf("doctor after the rebuild restored %+v", rep.Restored)
	}
	// A store after the removal is a new entry, and a later kill of one
	// more store of it leaves a manifest newer than the removal: that one is
	// restorable again (a lost commit), the removal does not shadow it.
	cliOK(t, root, "store", "a", "--image", in.image(t, "a3", 6600))
	safetyKill(t, root, failpoint.StoreBeforeCommit, "store", "a", "--image", in.image(t, "a4", 6700))
	if rep := safetyDoctor(t, root); len(rep.Restored) != 1 || rep.Restored[0].Key != "a" {
		t.Errorf("doctor after a newer killed store restored %+v, want a", rep.Restored)
	}
}

// TestSafetyDoctorRebuildAfterKilledRm: rm killed between its commit and its
// unlinks leaves every blob of the entry, manifest included, on disk; a
// rebuild must not bring the entry back.
func TestSafetyDoctorRebuildAfterKilledRm(t *testing.T) {
	for _, point := range []string{failpoint.UpdateAfterCommit, failpoint.ReleaseAfterFirstUnlink} {
		t.Run(point, func(t *testing.T) {
			in := crashInputs{dir: t.TempDir()}
			root := t.TempDir()
			crashBase(t, in, root)
			// A store of a killed after its manifest, too: a second
			// leftover manifest of a, older than the removal.
			safetyKill(t, root, failpoint.StoreAfterManifest, "store", "a", "--image", in.image(t, "a2", 6500))
			safetyKill(t, root, point, "rm", "a")
			if _, ok := crashState(t, root)["a"]; ok {
				t.Fatalf("a is listed after its rm committed")
			}
			rep := safetyDoctor(t, root, "--rebuild-index")
			st := crashState(t, root)
			if _, ok := st["a"]; ok || len(rep.Restored) != 0 {
				t.Errorf("doctor --rebuild-index brought a back: listed %v, restored %+v", ok, rep.Restored)
			}
			if _, ok := st["b"]; !ok || len(st) != 2 {
				t.Errorf("after the rebuild: %v, want b and c", st)
			}
		})
	}
}

// TestSafetyDoctorDyingRetryOneManifest: a store whose deduplicated image is
// dying (its remover was killed between commit and unlink) waits for the
// dying mark to be abandoned, retrying; the retries must not leave one
// manifest each.
func TestSafetyDoctorDyingRetryOneManifest(t *testing.T) {
	in := crashInputs{dir: t.TempDir()}
	root := t.TempDir()
	crashBase(t, in, root)
	safetyKill(t, root, failpoint.UpdateAfterCommit, "rm", "b")
	before := manifestBlobs(t, root)
	saved := index.DyingAbandonAfter
	index.DyingAbandonAfter = 1500 * time.Millisecond // this process only
	defer func() { index.DyingAbandonAfter = saved }()
	start := time.Now()
	cliOK(t, root, "store", "z", "--image", in.image(t, "b", 5000))
	if waited := time.Since(start); waited < time.Second {
		t.Fatalf("the store took %s: it did not retry on the dying image", waited)
	}
	after := manifestBlobs(t, root)
	var added []string
	for d := range after {
		if !before[d] {
			added = append(added, d)
		}
	}
	if len(added) != 1 {
		t.Errorf("the retried store added %d manifest blobs, want 1: %v", len(added), added)
	}
	if _, ok := crashState(t, root)["z"]; !ok {
		t.Errorf("z was not stored")
	}
	if rep := safetyDoctor(t, root); len(rep.Restored) != 0 {
		t.Errorf("doctor restored %+v", rep.Restored)
	}
}

// TestSafetyDoctorLostIndexRebuildRestoresLiveEntries: with index.db gone, a
// rebuild restores every live entry with its content, and not an entry that
// was removed (its manifest was unlinked with its other blobs).
func TestSafetyDoctorLostIndexRebuildRestoresLiveEntries(t *testing.T) {
	in := crashInputs{dir: t.TempDir()}
	root := t.TempDir()
	crashBase(t, in, root)
	cliOK(t, root, "store", "d", "--image", in.image(t, "d", 4000))
	cliOK(t, root, "rm", "b")
	want := crashState(t, root)
	if err := os.Remove(filepath.Join(root, "index.db")); err != nil {
		t.Fatal(err)
	}
	rep := safetyDoctor(t, root, "--rebuild-index")
	got := crashState(t, root)
	if !equalState(got, want) || rep.Rebuild == nil || rep.Rebuild.Entries != 3 {
		t.Errorf("after the rebuild: %v (rebuild %+v), want %v", got, rep.Rebuild, want)
	}
}

// TestSafetyDoctorRebuildBesideWriters runs doctor --rebuild-index again and
// again in this process while another process stores and removes entries:
// no writer may fail with a false "index corrupt" (the size check looked at
// the renamed path, not the open file) or "file does not exist", and no
// doctor may fail either.
func TestSafetyDoctorRebuildBesideWriters(t *testing.T) {
	in := crashInputs{dir: t.TempDir()}
	root := t.TempDir()
	crashBase(t, in, root)
	// Fatten the index so that a rebuilt file is smaller than the old one.
	for i := range 30 {
		cliOK(t, root, "store", fmt.Sprintf("fat%d", i), "--image", in.image(t, fmt.Sprint("fat", i), 300))
	}
	for i := range 30 {
		cliOK(t, root, "rm", fmt.Sprintf("fat%d", i))
	}
	const rounds = 40
	script := `set -u
i=0
while [ $i -lt ` + fmt.Sprint(rounds) + ` ]; do
  k=w$((i % 3))
  "$EXE" store $k --image "$IMG$((i % 4))" || echo "FAILED store $k" >&2
  "$EXE" rm $k || echo "FAILED rm $k" >&2
  i=$((i+1))
done
echo DONE >&2`
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		in.image(t, fmt.Sprint("w", i), 2000+i)
	}
	cmd := kcacheCmd(t, root)
	cmd.Path, cmd.Args = "/bin/sh", []string{"sh", "-c", script}
	cmd.Env = append(cmd.Env, "EXE="+exe, "IMG="+filepath.Join(in.dir, "image-w"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	done := make(chan struct{})
	go func() { defer wg.Done(); _ = cmd.Wait(); close(done) }()
	rebuilds := 0
loop:
	for rebuilds < 200 {
		select {
		case <-done:
			break loop
		default:
		}
		if _, serr, code := runIn(t, root, "doctor", "--rebuild-index"); code != 0 {
			t.Errorf("doctor --rebuild-index (round %d): exit %d: %s", rebuilds, code, serr)
		}
		rebuilds++
		// Let the writers in: back-to-back rebuilds would starve them of
		// the index lock (flock is not fair), which is not the race here.
		time.Sleep(30 * time.Millisecond)
	}
	wg.Wait()
	log := stderr.String()
	if !strings.Contains(log, "DONE") {
		t.Fatalf("the writer loop did not finish: %s", log)
	}
	for _, bad := range []string{"FAILED", "index corrupt", "does not exist"} {
		if strings.Contains(log, bad) {
			t.Errorf("a writer failed beside the rebuilds (%q):\n%s", bad, log)
			break
		}
	}
	t.Logf("%d rebuilds beside %d store+rm rounds", rebuilds, rounds)
	if rebuilds < 3 {
		t.Errorf("only %d rebuilds ran beside the writers", rebuilds)
	}
	st := crashState(t, root)
	for _, k := range []string{"w0", "w1", "w2"} {
		if _, ok := st[k]; ok {
			t.Errorf("%s is listed after its last rm", k)
		}
	}
}

// TestSafetyDoctorRefusesForeignRoot: a directory that merely has blobs/
// (a mistyped --root) is not a cache: doctor refuses and moves nothing; in
// a real cache root a foreign directory is reported, not moved.
func TestSafetyDoctorRefusesForeignRoot(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"blobs/photo.jpg":           "a photo",
		"blobs/sha256/ab/notes.txt": "notes",
		// named like a blob, but not its content's digest
		"blobs/sha256/ab/" + strings.Repeat("ab", 32): "x",
		"README":         "mine",
		"project/main.c": "int main;",
	}
	for p, c := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	snapshot := func() map[string]string {
		m := map[string]string{}
		_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				b, _ := os.ReadFile(p)
				rel, _ := filepath.Rel(dir, p)
				m[rel] = string(b)
			}
			return nil
		})
		return m
	}
	for _, args := range [][]string{{"doctor"}, {"doctor", "--dry-run"}, {"doctor", "--rebuild-index"}} {
		_, stderr, code := runIn(t, dir, args...)
		if code == 0 || !strings.Contains(stderr, "not a kcache cache root") || !strings.Contains(stderr, dir) {
			t.Errorf("kcache %v in a directory with blobs/ and no index: exit %d, stderr %q; want a refusal naming it", args, code, stderr)
		}
		got := snapshot()
		if len(got) != len(files) {
			t.Errorf("after %v the directory holds %v, want exactly %v", args, got, files)
		}
		for p, c := range files {
			if got[filepath.FromSlash(p)] != c {
				t.Errorf("after %v: %s is %q, want %q", args, p, got[p], c)
			}
		}
	}

	// A real cache: a foreign file is moved, a foreign directory stays.
	root := cliNewRoot(t)
	cliStore(t, root, "a")
	junk := cliWrite(t, root, "junk.txt", "not ours")
	proj := filepath.Join(root, "project")
	if err := os.MkdirAll(proj, 0o755); err != nil {
		t.Fatal(err)
	}
	src := cliWrite(t, proj, "main.c", "int main;")
	rep := safetyDoctor(t, root)
	kept, moved := false, false
	for _, f := range rep.Foreign {
		switch f.Path {
		case proj:
			kept = f.Kept != "" && f.QuarantinedTo == ""
		case junk:
			moved = f.QuarantinedTo != "" && f.Kept == ""
		}
	}
	if !kept || !moved || !cliExists(src) || cliExists(junk) {
		t.Errorf("doctor in a cache root: foreign %+v; want %s kept (it is: %v) and %s moved", rep.Foreign, proj, cliExists(src), junk)
	}
	if b, _ := os.ReadFile(src); string(b) != "int main;" {
		t.Errorf("%s changed: %q", src, b)
	}
	// The cache's index gone: the marker still makes it a cache root, so
	// the rebuild and the quarantine work as before.
	if !cliExists(filepath.Join(root, ".kcache-root")) {
		t.Fatalf("the cache root has no .kcache-root marker")
	}
	if err := os.Remove(filepath.Join(root, "index.db")); err != nil {
		t.Fatal(err)
	}
	cliWrite(t, root, "junk2.txt", "not ours either")
	rep = safetyDoctor(t, root)
	if len(rep.Foreign) != 2 { // junk2.txt moved, project kept
		t.Errorf("doctor in a cache root without index.db: foreign %+v", rep.Foreign)
	}
}

// TestStoreRetryHonoursContext: a store that deduplicates against a blob
// left dying by a killed remover retries (the blob is about to vanish), but
// only until its context ends: it then fails with the context's error
// instead of waiting out the abandoned mark, and leaves no staging behind.
func TestStoreRetryHonoursContext(t *testing.T) {
	in := crashInputs{dir: t.TempDir()}
	root := t.TempDir()
	crashBase(t, in, root)
	safetyKill(t, root, failpoint.UpdateAfterCommit, "rm", "b")
	c := mustOpen(root, &kcache.Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	_, err := c.Store(ctx, "z", kcache.Artifacts{Image: in.image(t, "b", 5000)},
		kcache.Metadata{Arch: "x86_64", ImageName: "bzImage", Source: kcache.Source{Type: "tarball"}})
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, index.ErrBlobDying) {
		t.Fatalf("store against a dying blob with a 300 ms context = %v; want DeadlineExceeded wrapping the dying blob", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, ".tmp")); len(ents) != 0 {
		t.Errorf(".tmp holds %d entries after the cancelled store", len(ents))
	}
}
