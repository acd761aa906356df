// Command kcache manages a cache of built Linux kernels. Each verb lives in
// its own file and only parses flags, calls the kcache library and renders
// the result: data on stdout, diagnostics on stderr.
//
// Exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 in use.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/kcache/kcache"
	"github.com/spf13/cobra"
)

// Exit codes, documented in the README; scripts branch on them.
const (
	exitOK       = 0
	exitError    = 1
	exitUsage    = 2
	exitNotFound = 3
	exitInUse    = 4
)

// usageError marks errors in how kcache was called.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// exitCodeError carries an exit code chosen by a command (run passes its child's).
type exitCodeError struct {
	code int
	err  error // nil: nothing more to print
}

func (e *exitCodeError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}
func (e *exitCodeError) Unwrap() error { return e.err }

// app is the state shared by every command of one invocation.
type app struct {
	args         []string // as given, for the kcache-remote helper (delegate)
	root         string
	indexTimeout time.Duration
	lockTimeout  time.Duration // store's wait for the entry lock; 0: the default
	readOnly     bool          // --read-only: never write to the cache
	stdout       io.Writer
	stderr       io.Writer
}

// cache opens the cache at --root or the resolved default root.
func (a *app) cache() (*kcache.Cache, error) {
	opt := &kcache.Options{Logger: newLineLogger(a.stderr), IndexTimeout: a.indexTimeout, StoreLockTimeout: a.lockTimeout, ReadOnly: a.readOnly}
	if a.root != "" {
		return kcache.Open(a.root, opt)
	}
	return kcache.OpenDefault(opt)
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one kcache invocation and returns its exit code.
func run(args []string, stdout, stderr io.Writer) int {
	a := &app{args: args, stdout: stdout, stderr: stderr}
	cmd := newRootCmd(a)
	cmd.SetArgs(args)
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	err := cmd.Execute()
	if err == nil {
		return exitOK
	}
	code := exitCode(err)
	var ec *exitCodeError
	if !errors.As(err, &ec) || ec.err != nil {
		fmt.Fprintf(stderr, "kcache: %s\n", errText(err))
		if code == exitUsage && !errors.Is(err, kcache.ErrInvalid) {
			fmt.Fprintln(stderr, "run 'kcache --help' for usage")
		}
	}
	return code
}

func exitCode(err error) int {
	var ec *exitCodeError
	var ue usageError
	switch {
	case errors.As(err, &ec):
		return ec.code
	case errors.As(err, &ue), errors.Is(err, kcache.ErrInvalid), isCobraUsage(err):
		return exitUsage
	case errors.Is(err, kcache.ErrInUse):
		return exitInUse
	case errors.Is(err, kcache.ErrNotFound):
		return exitNotFound
	}
	return exitError
}

// isCobraUsage recognises the usage errors cobra raises without a type:
// unknown subcommands and violated flag requirements or groups.
func isCobraUsage(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "required flag", "if any flags in the group", "at least one of the flags in the group"} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

func newRootCmd(a *app) *cobra.Command {
	root := &cobra.Command{
		Use:   "kcache",
		Short: "A cache of built Linux kernels for test harnesses",
		Long: `kcache stores built Linux kernels (boot image and vmlinux) once and serves them
to test harnesses many times, safely from many processes at once.

The cache root is --root, else $KCACHE_DIR, else $XDG_CACHE_HOME/kcache, else
$HOME/.cache/kcache.

Exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 in use.`,
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.PersistentFlags().StringVar(&a.root, "root", "", "cache root directory (default: $KCACHE_DIR, $XDG_CACHE_HOME/kcache, $HOME/.cache/kcache)")
	root.PersistentFlags().DurationVar(&a.indexTimeout, "index-timeout", kcache.DefaultIndexTimeout, "how long to wait for another process holding the index file")
	root.PersistentFlags().BoolVar(&a.readOnly, "read-only", false, "never write to the cache: lookups don't record last_used; commands that must write fail")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(
		newStoreCmd(a), newLookupCmd(a), newListCmd(a), newShowCmd(a), newRmCmd(a),
		newRunCmd(a), newLocksCmd(a), newPinCmd(a), newUnpinCmd(a), newKconfigCmd(a),
		newVersionCmd(a), newStripCmd(a), newConfigCmd(a),
		newCleanCmd(a), newGcCmd(a), newVerifyCmd(a), newDoctorCmd(a), newStatsCmd(a),
		newExportCmd(a),
		newMigrateCmd(a),
		newPushCmd(a), newPullCmd(a), newRemoteCmd(a),
	)
	return root
}

// args wraps a cobra argument check so that its failure is a usage error.
func args(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		if err := check(cmd, a); err != nil {
			return usageError{err}
		}
		return nil
	}
}

// completeKeys offers the cached keys for a KEY argument.
func completeKeys(a *app) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(cmd *cobra.Command, _ []string, prefix string) ([]string, cobra.ShellCompDirective) {
		c, err := a.cache()
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		keys, err := c.Keys(cmd.Context())
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []string
		for _, k := range keys {
			if strings.HasPrefix(k, prefix) {
				out = append(out, k)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}
