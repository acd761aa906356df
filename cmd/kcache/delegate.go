package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
)

// helperName is the binary that carries the S3 client: this command built
// with -tags kcache_s3 (see openS3).
const helperName = "kcache-remote"

// helperEnv names the helper binary outright.
const helperEnv = "KCACHE_REMOTE_HELPER"

// errNeedHelper is returned by remoteFlags.open in a binary without the S3
// client; commands answer it by delegating.
var errNeedHelper = errors.New("this kcache has no S3 client built in")

// findHelper returns the kcache-remote binary: $KCACHE_REMOTE_HELPER, else
// next to this executable, else on $PATH.
func findHelper() (string, error) {
	if p := os.Getenv(helperEnv); p != "" {
		return p, nil
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), helperName)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	if p, err := exec.LookPath(helperName); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("the remote commands need %s, which was not found next to kcache, on $PATH or at $%s; build it from a kcache checkout with\n"+
		"  CGO_ENABLED=0 go build -tags kcache_s3 -o \"$(dirname \"$(command -v kcache)\")/%s\" ./cmd/kcache\n"+
		"(or build kcache itself with -tags kcache_s3)", helperName, helperEnv, helperName)
}

// delegate runs this invocation again in the helper, with the same
// arguments, environment and output, and returns its exit status as an
// *exitCodeError (also for 0: the command is done, nothing more to print).
// The helper
// is killed if this process dies, so killing kcache stops the transfer.
func (a *app) delegate() error {
	helper, err := findHelper()
	if err != nil {
		return err
	}
	cmd := exec.Command(helper, a.args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, a.stdout, a.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err = cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return &exitCodeError{code: exitOK} // the helper did the work and printed
	case errors.As(err, &ee) && ee.Exited():
		return &exitCodeError{code: ee.ExitCode()}
	}
	return fmt.Errorf("run %s: %w", helper, err)
}
