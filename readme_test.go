package kcache_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestReadmeQuickStart runs the README's quick-start command as written,
// with HOME pointing at an empty directory, and checks that it stored the
// sample kernel into the default cache and listed it.
func TestReadmeQuickStart(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles the CLI with go run")
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	section := string(readme)[strings.Index(string(readme), "## Quick start"):]
	blocks := regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(section, 2)
	if len(blocks) != 2 {
		t.Fatalf("quick start has %d sh blocks; want 2 (the main job, then the tests)", len(blocks))
	}
	main, tests := strings.TrimSpace(blocks[0][1]), strings.TrimSpace(blocks[1][1])
	if tests != "go test ./..." {
		t.Fatalf("README test command is %q; .ci/run runs `go test ./...`", tests)
	}
	ci, err := os.ReadFile(".ci/run")
	if err != nil || !strings.Contains(string(ci), "\n"+tests+"\n") {
		t.Fatalf(".ci/run does not run the README's test command %q", tests)
	}

	home := t.TempDir()
	goEnv := func(name string) string {
		out, err := exec.Command("go", "env", name).Output()
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(out))
	}
	cmd := exec.Command("sh", "-c", main)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KCACHE_DIR=") && !strings.HasPrefix(kv, "XDG_CACHE_HOME=") && !strings.HasPrefix(kv, "HOME=") {
			env = append(env, kv)
		}
	}
	// Keep Go's caches where they are, so the run compiles incrementally.
	cmd.Env = append(env, "HOME="+home, "GOCACHE="+goEnv("GOCACHE"), "GOMODCACHE="+goEnv("GOMODCACHE"), "GOPATH="+goEnv("GOPATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("quick start failed: %v\n%s", err, out)
	}
	if !regexp.MustCompile(`(?m)^sample-6\.1-x86_64\s+6\.1\.0\s+tarball\s+x86_64\s`).Match(out) {
		t.Fatalf("quick start did not list the sample kernel:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(home, ".cache", "kcache", "index.db")); err != nil {
		t.Fatalf("quick start did not use the default cache: %v", err)
	}
}
