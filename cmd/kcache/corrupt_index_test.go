package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// corruptHangGuard kills a command that has not finished in this time: a
// guard against a hang (reported as a failure), not a timing assertion.
const corruptHangGuard = 30 * time.Second

// corruptRun runs kcache ARGS as a separate process, so that a SIGBUS or an
// unrecovered panic shows as a crash, and kills it after corruptHangGuard.
// signaled reports death by a signal; code is -1 then.
func corruptRun(t *testing.T, root string, args ...string) (stdout, stderr string, code int, signaled bool) {
	t.Helper()
	cmd := kcacheCmd(t, root, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Start(); err != nil {
		t.Fatalf("kcache %s: %v", strings.Join(args, " "), err)
	}
	timer := time.AfterFunc(corruptHangGuard, func() { _ = cmd.Process.Kill() })
	err := cmd.Wait()
	if !timer.Stop() {
		t.Errorf("kcache %s: still running after %s; killed", strings.Join(args, " "), corruptHangGuard)
	}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("kcache %s: %v", strings.Join(args, " "), err)
	}
	return o.String(), e.String(), code, cmd.ProcessState.ExitCode() == -1
}

// corruptListing is `kcache list --json` without what a rebuild may change
// legitimately (times of use and storage, paths).
func corruptListing(t *testing.T, root string) []map[string]any {
	t.Helper()
	out, stderr, code, _ := corruptRun(t, root, "list", "--json")
	if code != 0 {
		t.Fatalf("list --json: exit %d\n%s", code, stderr)
	}
	var l struct {
		Entries []map[string]any `json:"entries"`
	}
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatalf("list --json: %v\n%s", err, out)
	}
	for _, e := range l.Entries {
		for k, v := range e {
			if s, ok := v.(string); k == "stored_at" || k == "last_used" || ok && strings.HasPrefix(s, root) {
				delete(e, k)
			}
		}
	}
	return l.Entries
}

// boltPageSize reads the page size from meta page 0 (16-byte page header,
// then magic, version, page size).
func boltPageSize(t *testing.T, data []byte) int {
	t.Helper()
	ps := int(binary.LittleEndian.Uint32(data[24:28]))
	if ps < 1024 || ps > 65536 || len(data) < 2*ps {
		t.Fatalf("unexpected bbolt page size %d (file %d bytes)", ps, len(data))
	}
	return ps
}

// boltMetaTxid returns the txid of meta page i (meta fields at 16: magic,
// version, pageSize, flags, root bucket (16), freelist, pgid, txid).
func boltMetaTxid(data []byte, ps, i int) uint64 {
	return binary.LittleEndian.Uint64(data[i*ps+16+48:])
}

// entriesLeafPage returns the page id of the first leaf page of the entries
// bucket in the index file at path (the one with the smallest keys).
func entriesLeafPage(t *testing.T, path string) int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ps := boltPageSize(t, data)
	db, err := bolt.Open(path, 0o444, &bolt.Options{ReadOnly: true, PreLoadFreelist: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var id int
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("entries"))
		if b == nil {
			return errors.New("no entries bucket")
		}
		for id = int(b.Root()); ; {
			info, err := tx.Page(id)
			if err != nil || info == nil {
				return fmt.Errorf("page %d: %v", id, err)
			}
			switch info.Type {
			case "leaf":
				return nil
			case "branch":
				// Branch elements (pos, ksize uint32; pgid uint64) follow
				// the 16-byte page header; the first names the first child.
				id = int(binary.LittleEndian.Uint64(data[id*ps+16+8:]))
			default:
				return fmt.Errorf("entries page %d is a %s page", id, info.Type)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestCorruptIndexVariants damages index.db in every way of
// reference/bbolt-and-remote.md §2.5 and more, and checks that every command
// that reads or writes the index, run as its own process, fails cleanly:
// exit 1 (not 2 from a Go panic, not a signal such as SIGBUS), one line on
// stderr naming index.db and `kcache doctor --rebuild-index`, no panic or
// fault text; and that `kcache doctor --rebuild-index` then restores every
// entry as it was.
func TestCorruptIndexVariants(t *testing.T) {
	root := cliNewRoot(t)
	const n = 10
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%02d", i)
		cliStore(t, root, keys[i])
	}
	before := corruptListing(t, root)
	if len(before) != n {
		t.Fatalf("listing has %d entries, want %d", len(before), n)
	}
	path := filepath.Join(root, "index.db")
	pristine, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ps := boltPageSize(t, pristine)
	leaf := entriesLeafPage(t, path)
	victim := ""
	for _, k := range keys {
		if victim == "" && bytes.Contains(pristine[leaf*ps:(leaf+1)*ps], []byte(k)) {
			victim = k
		}
	}
	if victim == "" {
		t.Fatalf("no key found in leaf page %d", leaf)
	}
	// A new key right after victim lands in the same leaf page, so the
	// store must read the page that the zeroed-page variant destroys (a
	// store into an undamaged page of a damaged file would succeed).
	img := cliWrite(t, t.TempDir(), "bzImage", "image of the new entry")

	variants := []struct {
		name   string
		damage func([]byte) []byte
	}{
		{"truncated-half", func(b []byte) []byte { return b[:len(b)/2] }},
		{"truncated-1-page", func(b []byte) []byte { return b[:ps] }},
		{"zero-filled", func(b []byte) []byte { return make([]byte, len(b)) }},
		{"random-garbage", func(b []byte) []byte {
			r := rand.New(rand.NewPCG(1, 2))
			for i := range b {
				b[i] = byte(r.Uint32())
			}
			return b
		}},
		{"wrong-magic", func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[16:], 0xdeadbeef)
			binary.LittleEndian.PutUint32(b[ps+16:], 0xdeadbeef)
			return b
		}},
		{fmt.Sprintf("zeroed-entries-leaf-page-%d", leaf), func(b []byte) []byte {
			clear(b[leaf*ps : (leaf+1)*ps])
			return b
		}},
	}
	commands := [][]string{
		{"list"}, {"list", "--json"}, {"lookup", victim}, {"show", victim},
		{"store", victim + "-new", "--image", img, "--arch", "x86_64"}, {"rm", victim},
		{"gc"}, {"stats"}, {"verify"},
	}
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			clean := 0
			for _, args := range commands {
				damaged := v.damage(bytes.Clone(pristine))
				if err := os.WriteFile(path, damaged, 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Truncate(path, int64(len(damaged))); err != nil {
					t.Fatal(err)
				}
				if corruptCommandFailsCleanly(t, root, args) {
					clean++
				}
			}
			// Rebuild from the last command's leftovers (the damaged file).
			stdout, stderr, code, _ := corruptRun(t, root, "doctor", "--rebuild-index")
			if code != 0 {
				t.Fatalf("doctor --rebuild-index: exit %d\n%s%s", code, stdout, stderr)
			}
			// A store that failed at the index leaves its blobs and manifest
			// (for the sweep, after the grace period); a rebuild within the
			// hour adopts them: the failed store's entry is the one extra
			// entry allowed.
			var after []map[string]any
			for _, e := range corruptListing(t, root) {
				if e["key"] != victim+"-new" {
					after = append(after, e)
				}
			}
			restored := 0
			for _, b := range before {
				for _, a := range after {
					if reflect.DeepEqual(a, b) {
						restored++
						break
					}
				}
			}
			if restored != n || len(after) != n {
				t.Errorf("rebuild restored %d of %d entries (%d listed)\nbefore: %v\nafter:  %v", restored, n, len(after), before, after)
			}
			t.Logf("RELIABILITY corrupt-index variant=%s commands_failed_cleanly=%d/%d rebuild_restored=%d/%d",
				v.name, clean, len(commands), restored, n)
		})
	}
}

// corruptCommandFailsCleanly runs one command on a damaged index and reports
// (and records as an error) whether it failed the way it must.
func corruptCommandFailsCleanly(t *testing.T, root string, args []string) bool {
	t.Helper()
	name := strings.Join(args, " ")
	stdout, stderr, code, signaled := corruptRun(t, root, args...)
	var problems []string
	if signaled {
		problems = append(problems, "killed by a signal")
	} else if code != 1 {
		problems = append(problems, fmt.Sprintf("exit %d, want 1", code))
	}
	if lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n"); len(lines) != 1 || !strings.HasSuffix(stderr, "\n") {
		problems = append(problems, fmt.Sprintf("%d lines on stderr, want one", len(lines)))
	}
	for _, want := range []string{"index.db", "kcache doctor --rebuild-index"} {
		if !strings.Contains(stderr, want) {
			problems = append(problems, fmt.Sprintf("stderr does not name %q", want))
		}
	}
	low := strings.ToLower(stderr)
	for _, bad := range []string{"panic:", "goroutine", "sigbus", "fault"} {
		if strings.Contains(low, bad) {
			problems = append(problems, fmt.Sprintf("stderr contains %q", bad))
		}
	}
	if len(problems) > 0 {
		t.Errorf("kcache %s: %s\nstdout:\n%s\nstderr:\n%s", name, strings.Join(problems, "; "), stdout, stderr)
		return false
	}
	return true
}

// zeroNewestMeta zeroes the meta page with the higher txid of the index at
// path: bbolt then opens the file silently at the previous transaction.
func zeroNewestMeta(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ps := boltPageSize(t, data)
	newest := 0
	if boltMetaTxid(data, ps, 1) > boltMetaTxid(data, ps, 0) {
		newest = 1
	}
	clear(data[newest*ps : (newest+1)*ps])
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

type corruptDoctorReport struct {
	DryRun   bool `json:"dry_run"`
	Restored []struct {
		Key      string `json:"key"`
		Manifest string `json:"manifest"`
		Replaced bool   `json:"replaced"`
	} `json:"restored"`
	Orphans []json.RawMessage `json:"orphans"`
}

// TestZeroedNewestMetaDoctorRestores: when the newest meta page is zeroed,
// bbolt opens the index at the previous transaction and the last store is
// silently gone (or, for a store that replaced a key, the older record is
// back). `kcache doctor` (no --rebuild-index) finds the manifest no record
// references and puts the entry back; --dry-run only reports it.
//
// A store that replaces a key commits twice (the record, then forgetting the
// released blobs after unlinking them), so zeroing the newest meta page only
// loses the second commit; that case rolls the index file back to a copy
// taken before the store instead (what losing both commits looks like: the
// old record, whose blobs are gone).
func TestZeroedNewestMetaDoctorRestores(t *testing.T) {
	for _, tc := range []struct {
		name     string
		last     string // key of the last store, whose commit is lost
		replaced bool
	}{{"lost-new-key", "lost", false}, {"lost-replacement-rollback", "k02", true}} {
		t.Run(tc.name, func(t *testing.T) {
			root := cliNewRoot(t)
			for i := range 5 {
				cliStore(t, root, fmt.Sprintf("k%02d", i))
			}
			path := filepath.Join(root, "index.db")
			old, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			img := cliWrite(t, t.TempDir(), "bzImage", "newer image of "+tc.last)
			cliOK(t, root, "store", tc.last, "--image", img, "--arch", "x86_64")
			want := corruptListing(t, root)

			if tc.replaced {
				if err := os.WriteFile(path, old, 0o644); err != nil {
					t.Fatal(err)
				}
			} else {
				zeroNewestMeta(t, path)
			}
			if got := corruptListing(t, root); reflect.DeepEqual(got, want) {
				t.Fatal("zeroing the newest meta page changed nothing: the test damages the wrong page")
			}
			damaged := corruptListing(t, root)

			out, stderr, code, _ := corruptRun(t, root, "doctor", "--dry-run", "--json")
			var rep corruptDoctorReport
			if code != 0 || json.Unmarshal([]byte(out), &rep) != nil {
				t.Fatalf("doctor --dry-run: exit %d\n%s%s", code, out, stderr)
			}
			if !rep.DryRun || len(rep.Restored) != 1 || rep.Restored[0].Key != tc.last || rep.Restored[0].Replaced != tc.replaced {
				t.Errorf("doctor --dry-run restored = %+v, want %s (replaced %v)", rep.Restored, tc.last, tc.replaced)
			}
			if len(rep.Orphans) != 0 {
				t.Errorf("doctor --dry-run reports orphans %s; the lost entry's blobs are not orphans", rep.Orphans)
			}
			if got := corruptListing(t, root); !reflect.DeepEqual(got, damaged) {
				t.Errorf("doctor --dry-run changed the index")
			}

			out, stderr, code, _ = corruptRun(t, root, "doctor", "--json")
			rep = corruptDoctorReport{}
			if code != 0 || json.Unmarshal([]byte(out), &rep) != nil {
				t.Fatalf("doctor: exit %d\n%s%s", code, out, stderr)
			}
			if rep.DryRun || len(rep.Restored) != 1 || rep.Restored[0].Key != tc.last || rep.Restored[0].Replaced != tc.replaced {
				t.Errorf("doctor restored = %+v, want %s (replaced %v)", rep.Restored, tc.last, tc.replaced)
			}
			if len(rep.Orphans) != 0 {
				t.Errorf("doctor reports orphans %s; the restored entry's blobs are not orphans", rep.Orphans)
			}
			if got := corruptListing(t, root); !reflect.DeepEqual(got, want) {
				t.Errorf("after doctor the listing differs from before the damage\n got %v\nwant %v", got, want)
			}
			// Healthy now: a second doctor finds nothing to do.
			out, stderr, code, _ = corruptRun(t, root, "doctor")
			if code != 0 || out != "no problems found\n" {
				t.Errorf("second doctor: exit %d\n%s%s", code, out, stderr)
			}
			t.Logf("RELIABILITY zeroed-newest-meta case=%s lost_entry_restored=%v", tc.name, len(rep.Restored) == 1)
		})
	}
}
