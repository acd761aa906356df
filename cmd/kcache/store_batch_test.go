package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// `kcache store --batch` as a real process: stdin in, one report per line.

// batchRun runs `kcache store ARGS` as a process with stdin as its input.
func batchRun(t *testing.T, root, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := kcacheCmd(t, root, append([]string{"store"}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	return runCmd(t, cmd)
}

func TestCLIStoreBatchText(t *testing.T) {
	root := cliNewRoot(t)
	dir := t.TempDir()
	img1 := cliWrite(t, dir, "img1", "image one")
	img2 := cliWrite(t, dir, "img2", "image two")
	in := strings.Join([]string{
		"k1 " + img1 + " " + cliSampleVmlinux,
		"",
		"   k2\t" + img2 + "  ",
		"only-a-key",
		"k3 " + filepath.Join(dir, "missing"),
		".bad " + img1,
		"k1 " + img2, // replaces k1
	}, "\n") + "\n"
	stdout, stderr, code := batchRun(t, root, in, "--batch", "--arch", "x86_64", "--version", "6.1.0")
	if code != exitError {
		t.Errorf("exit %d, want 1 (some lines failed)\nstderr: %s", code, stderr)
	}
	if got := strings.Count(stdout, "stored "); got != 3 {
		t.Errorf("stdout has %d stored reports, want 3:\n%s", got, stdout)
	}
	if !strings.HasPrefix(stdout, "stored k1\n  image    ") || !strings.Contains(stdout, "\n  vmlinux  ") || !strings.HasSuffix(stdout, "stored k1\n  image    "+cliBlobPath(root, cliSHA256(t, img2))+" (9 B)\n") {
		t.Errorf("stdout:\n%s", stdout)
	}
	for _, want := range []string{
		"kcache: line 4: want \"KEY IMAGE [VMLINUX]\", got 1 fields",
		"kcache: line 5: store \"k3\": open image: ",
		"kcache: line 6: invalid cache key \".bad\"",
		"kcache: store --batch: 3 of 6 stores failed\n",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	l := cliList(t, root)
	if keys := cliListKeys(t, l); strings.Join(keys, ",") != "k1,k2" && strings.Join(keys, ",") != "k2,k1" {
		t.Fatalf("listed %v", keys)
	}
	for _, k := range []string{"k1", "k2"} {
		e, _ := cliEntryOf(t, l, k)
		if e.Version == nil || *e.Version != "6.1.0" || e.Arch != "x86_64" {
			t.Errorf("%s: flags were not applied as defaults: %+v", k, e)
		}
	}
	if e, _ := cliEntryOf(t, l, "k1"); e.ImageSHA256 != cliSHA256(t, img2) || e.HasVmlinux {
		t.Errorf("k1 was not replaced by the later line: %+v", e)
	}

	// Every line stored: exit 0, nothing on stderr.
	stdout, stderr, code = batchRun(t, root, "k4 "+img1+"\nk5 "+img2+" "+cliSampleVmlinux+"\n", "--batch")
	if code != 0 || stderr != "" || strings.Count(stdout, "stored ") != 2 {
		t.Errorf("all-good batch: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	// Empty input stores nothing and succeeds.
	if stdout, stderr, code := batchRun(t, root, "\n\n", "--batch"); code != 0 || stdout != "" || stderr != "" {
		t.Errorf("empty batch: exit %d %q %q", code, stdout, stderr)
	}
}

func TestCLIStoreBatchJSON(t *testing.T) {
	root := cliNewRoot(t)
	dir := t.TempDir()
	spaced := cliWrite(t, dir, "my image", "image with a blank in its path")
	other := cliWrite(t, dir, "other", "another image")
	lines := []string{
		`{"key": "with blank", "image": ` + jsonString(spaced) + `, "vmlinux": ` + jsonString(cliSampleVmlinux) + `, "version": "6.2.0", "kconfig_hash": "0123abcd"}`,
		`{"key": "plain", "image": ` + jsonString(other) + `, "image_name": "Image", "source": "git", "ref": "main"}`,
		`{"key": "typo", "imgae": "x"}`,
		`{"key": "noimage"}`,
		`not json`,
		`{"key": "..", "image": ` + jsonString(other) + `}`,
	}
	stdout, stderr, code := batchRun(t, root, strings.Join(lines, "\n"), "--batch-json", "--json", "--arch", "aarch64", "--version", "6.1.0", "--kconfig-hash", "ffffffff")
	if code != exitError {
		t.Errorf("exit %d, want 1\nstderr: %s", code, stderr)
	}
	if stderr != "kcache: store --batch: 4 of 6 stores failed\n" {
		t.Errorf("stderr: %q", stderr)
	}
	type result struct {
		Line     int             `json:"line"`
		Key      string          `json:"key"`
		OK       bool            `json:"ok"`
		Entry    json.RawMessage `json:"entry"`
		ExitCode int             `json:"exit_code"`
		Error    string          `json:"error"`
	}
	var got []result
	sc := bufio.NewScanner(strings.NewReader(stdout))
	for sc.Scan() {
		var r result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("stdout line %q: %v", sc.Text(), err)
		}
		got = append(got, r)
	}
	if len(got) != len(lines) {
		t.Fatalf("%d results for %d lines:\n%s", len(got), len(lines), stdout)
	}
	for i, r := range got {
		if r.Line != i+1 {
			t.Errorf("result %d says line %d", i, r.Line)
		}
	}
	if !got[0].OK || got[0].Key != "with blank" || !got[1].OK || got[1].Key != "plain" {
		t.Errorf("first two lines should be stored: %+v %+v", got[0], got[1])
	}
	if keys := cliKeys(t, got[0].Entry); strings.Join(keys, ",") != strings.Join(cliEntryKeys, ",") {
		t.Errorf("entry keys %v, want %v", keys, cliEntryKeys)
	}
	e0, e1 := cliDecode(t, got[0].Entry), cliDecode(t, got[1].Entry)
	if *e0.Version != "6.2.0" || e0.Arch != "aarch64" || *e0.KconfigHash != "0123abcd" || !e0.HasVmlinux || e0.ImageName != "my image" {
		t.Errorf("line 1 entry (JSON fields over flags): %s", got[0].Entry)
	}
	if *e1.Version != "6.1.0" || *e1.KconfigHash != "ffffffff" || e1.ImageName != "Image" || e1.Source["type"] != "git" {
		t.Errorf("line 2 entry (flags as defaults): %s", got[1].Entry)
	}
	for i, want := range []struct {
		key  string
		code int
		msg  string
	}{
		{"typo", exitUsage, `unknown field "imgae"`},
		{"noimage", exitUsage, `"key" and "image" are required`},
		{"", exitUsage, "not a JSON store object"},
		{"..", exitUsage, "invalid cache key"},
	} {
		r := got[i+2]
		if r.OK || r.Key != want.key || r.ExitCode != want.code || !strings.Contains(r.Error, want.msg) || r.Entry != nil {
			t.Errorf("line %d: %+v, want key %q exit %d error containing %q", r.Line, r, want.key, want.code, want.msg)
		}
	}
	// What --json reported is what is stored.
	l := cliList(t, root)
	if keys := cliListKeys(t, l); len(keys) != 2 {
		t.Errorf("listed %v", keys)
	}
}

// A line's report is written only once its store has committed: a second
// process sees the entry as soon as the report arrives, while the batch
// is still waiting for its next line.
func TestCLIStoreBatchReportsEachLineWhenStored(t *testing.T) {
	root := cliNewRoot(t)
	img := cliWrite(t, t.TempDir(), "bzImage", "streamed image")
	cmd := kcacheCmd(t, root, "store", "--batch", "--json")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	out := bufio.NewReader(stdout)
	for i, key := range []string{"first", "second"} {
		if _, err := stdin.Write([]byte(key + " " + img + "\n")); err != nil {
			t.Fatal(err)
		}
		line, err := out.ReadString('\n')
		if err != nil {
			t.Fatalf("reading report %d: %v (stderr %s)", i+1, err, stderr.String())
		}
		var r struct {
			Line int    `json:"line"`
			Key  string `json:"key"`
			OK   bool   `json:"ok"`
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil || !r.OK || r.Key != key || r.Line != i+1 {
			t.Fatalf("report %q (%v)", line, err)
		}
		if o, e, code := runProc(t, root, "lookup", key); code != 0 || !strings.Contains(o, "/blobs/sha256/") {
			t.Fatalf("lookup %s while the batch runs: exit %d %s %s", key, code, o, e)
		}
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("batch: %v\n%s", err, stderr.String())
	}
}

func TestCLIStoreBatchUsage(t *testing.T) {
	root := cliNewRoot(t)
	img := cliWrite(t, t.TempDir(), "bzImage", "x")
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"--batch", "k"}, "store --batch takes no KEY"},
		{[]string{"--batch-json", "--image", img}, "store --batch takes no --image"},
		{[]string{"--batch", "--vmlinux", img}, "store --batch takes no --vmlinux"},
		{[]string{"--batch", "--batch-json"}, "if any flags in the group [batch batch-json] are set none of the others can be"},
	} {
		stdout, stderr, code := batchRun(t, root, "k "+img+"\n", c.args...)
		if code != exitUsage || stdout != "" || !strings.Contains(stderr, c.msg) {
			t.Errorf("store %v: exit %d\nstdout %q\nstderr %q", c.args, code, stdout, stderr)
		}
	}
	if cliExists(filepath.Join(root, "index.db")) {
		t.Error("a usage error stored something")
	}
	// A line longer than the limit stops the batch with exit 1.
	long := "k " + strings.Repeat("x", maxBatchLine+10) + "\n"
	if _, stderr, code := batchRun(t, root, "ok "+img+"\n"+long, "--batch"); code != exitError || !strings.Contains(stderr, "after 1 lines (0 failed): a line is longer than") {
		t.Errorf("long line: exit %d %s", code, stderr)
	}
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
