package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestMain lets tests run this test binary as the kcache CLI in a separate
// process (KCACHE_TEST_AS_CLI=1), so process-level behaviour — locks held by
// another pid, exit codes, signals — is tested on the real command.
func TestMain(m *testing.M) {
	if os.Getenv("KCACHE_TEST_AS_CLI") == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// kcacheCmd returns a command that runs kcache ARGS as a separate process
// against the cache at root.
func kcacheCmd(t testing.TB, root string, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), "KCACHE_TEST_AS_CLI=1", "KCACHE_DIR="+root)
	return cmd
}

// runProc runs kcache ARGS as a separate process and returns its output and
// exit code.
func runProc(t testing.TB, root string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runCmd(t, kcacheCmd(t, root, args...))
}

// runCmd runs a prepared command (kcacheCmd plus environment or stdin) and
// returns its output and exit code.
func runCmd(t testing.TB, cmd *exec.Cmd) (stdout, stderr string, code int) {
	t.Helper()
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("%s: %v", strings.Join(cmd.Args, " "), err)
	}
	return o.String(), e.String(), code
}

// runIn runs kcache ARGS in this process with --root root and returns its
// output and exit code.
func runIn(t testing.TB, root string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(append([]string{"--root", root}, args...), &o, &e)
	return o.String(), e.String(), code
}
