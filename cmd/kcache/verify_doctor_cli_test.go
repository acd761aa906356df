package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type cliVerifyReport struct {
	Checked  int  `json:"checked"`
	Deep     bool `json:"deep"`
	Problems []struct {
		Key           string `json:"key"`
		Role          string `json:"role"`
		Digest        string `json:"digest"`
		ErrorKind     string `json:"error_kind"`
		Detail        string `json:"detail"`
		QuarantinedTo string `json:"quarantined_to"`
	} `json:"problems"`
}

func cliDamage(t *testing.T, path string, f func([]byte) []byte) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, f(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func cliKinds(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, raw := range cliList(t, root).Entries {
		var e struct {
			Key       string `json:"key"`
			ErrorKind string `json:"error_kind"`
		}
		if err := json.Unmarshal(raw, &e); err != nil {
			t.Fatal(err)
		}
		out[e.Key] = e.ErrorKind
	}
	return out
}

func TestCLIVerifyDeepQuarantinesAndListShowsCorrupt(t *testing.T) {
	root := cliNewRoot(t)
	flip := cliStore(t, root, "flip")
	trunc := cliStore(t, root, "trunc")
	cliStore(t, root, "good")
	cliDamage(t, flip, func(b []byte) []byte { b[0] ^= 0xff; return b })
	cliDamage(t, trunc, func(b []byte) []byte { return b[:3] })

	out, _ := cliCode(t, root, 1, "verify", "--json", "flip", "trunc")
	var rep cliVerifyReport
	cliOneJSON(t, out, &rep)
	// The flipped byte keeps the size, but the write moved the blob's ctime,
	// so verify without --deep re-hashes it and finds it too.
	if rep.Deep || rep.Checked != 4 || len(rep.Problems) != 2 || rep.Problems[1].Key != "trunc" ||
		rep.Problems[1].ErrorKind != "blob_mismatch" || rep.Problems[1].Role != "image" {
		t.Errorf("verify (no --deep) = %+v; want the flipped and the truncated image", rep)
	}
	p := rep.Problems[0]
	if p.Key != "flip" || p.ErrorKind != "blob_mismatch" || filepath.Dir(p.QuarantinedTo) != filepath.Join(root, "quarantine") {
		t.Errorf("flipped blob problem = %+v", p)
	}
	if cliExists(flip) || !cliExists(p.QuarantinedTo) {
		t.Errorf("flipped blob not moved to the quarantine")
	}
	out, _ = cliCode(t, root, 1, "verify", "--deep", "--json")
	rep = cliVerifyReport{}
	cliOneJSON(t, out, &rep)
	if !rep.Deep || len(rep.Problems) != 2 {
		t.Fatalf("verify --deep = %+v", rep)
	}
	if k := cliKinds(t, root); k["flip"] != "blob_mismatch" || k["trunc"] != "blob_mismatch" || k["good"] != "" {
		t.Errorf("list --json kinds = %v", k)
	}
	_, errOut := cliCode(t, root, 1, "lookup", "flip")
	if !strings.Contains(errOut, "blob_mismatch") {
		t.Errorf("lookup of a marked entry: %s", errOut)
	}
	_, errOut = cliCode(t, root, 1, "verify")
	if !strings.Contains(errOut, "2 problems") {
		t.Errorf("verify text summary: %s", errOut)
	}
	cliCode(t, root, 3, "verify", "missing-key")
	cliOK(t, root, "verify", "--deep", "good")
}

func TestCLIDoctorRebuildsGarbageIndex(t *testing.T) {
	root := cliNewRoot(t)
	for _, k := range []string{"a", "b", "c"} {
		cliStore(t, root, k, "--version", "6.1."+k)
	}
	before, _ := cliOK(t, root, "list", "--json")
	index := filepath.Join(root, "index.db")
	if err := os.WriteFile(index, []byte(strings.Repeat("garbage!", 8192)), 0o644); err != nil {
		t.Fatal(err)
	}
	img := cliWrite(t, t.TempDir(), "bzImage", "x")
	for _, args := range [][]string{{"list"}, {"lookup", "a"}, {"store", "d", "--image", img}} {
		_, errOut := cliCode(t, root, 1, args...)
		if !strings.Contains(errOut, index) || !strings.Contains(errOut, "kcache doctor --rebuild-index") {
			t.Errorf("kcache %v on a garbage index: %s", args, errOut)
		}
	}
	// --dry-run changes nothing, even here.
	cliOK(t, root, "doctor", "--rebuild-index", "--dry-run")
	if data, _ := os.ReadFile(index); !strings.HasPrefix(string(data), "garbage!") {
		t.Error("doctor --dry-run replaced the index")
	}
	out, _ := cliOK(t, root, "doctor", "--rebuild-index", "--json")
	var rep struct {
		Rebuild struct {
			OldIndex string `json:"old_index"`
			Entries  int    `json:"entries"`
			Backup   string `json:"backup"`
		} `json:"rebuild"`
	}
	cliOneJSON(t, out, &rep)
	if rep.Rebuild.OldIndex != "corrupt" || rep.Rebuild.Entries != 3 || rep.Rebuild.Backup != index+".bak" {
		t.Errorf("doctor --rebuild-index = %s", out)
	}
	after, _ := cliOK(t, root, "list", "--json")
	if after != before {
		t.Errorf("list after rebuild:\n%s\nwant\n%s", after, before)
	}
	out, _ = cliOK(t, root, "doctor")
	if strings.TrimSpace(out) != "no problems found" {
		t.Errorf("doctor after rebuild: %s", out)
	}
}

func TestCLIDoctorQuarantinesForeignFiles(t *testing.T) {
	root := cliNewRoot(t)
	cliStore(t, root, "a")
	junk := cliWrite(t, root, "junk.txt", "not ours")
	out, _ := cliOK(t, root, "doctor", "--dry-run")
	if !strings.Contains(out, "foreign "+junk+": would move") || !cliExists(junk) {
		t.Errorf("doctor --dry-run: %s", out)
	}
	out, _ = cliOK(t, root, "doctor")
	if !strings.Contains(out, "foreign "+junk+": moved to "+filepath.Join(root, "quarantine")) || cliExists(junk) {
		t.Errorf("doctor: %s", out)
	}
}
