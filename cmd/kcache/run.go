package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/kcache/kcache"
	"github.com/spf13/cobra"
)

func newRunCmd(a *app) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "run KEY -- CMD [ARGS...]",
		Short: "Run a command while holding a cached kernel's shared lock",
		Long: `Run CMD with KEY's lock held shared for as long as CMD runs, so that store,
rm, clean and gc leave the entry alone meanwhile. CMD gets KCACHE_KEY,
KCACHE_IMAGE and KCACHE_VMLINUX (empty when there is none) in its environment
and its standard streams; kcache exits with CMD's status (128+N if a signal
killed it). Interrupt and terminate signals are passed on to CMD.

The lock belongs to an open file that CMD inherits as file descriptor 3
(KCACHE_LOCK_FD=3 in its environment): the entry stays locked until CMD, and
every process that inherited the descriptor from it, has exited or closed
it — also when kcache itself is killed, so a VM is never left running on an
entry that rm or store may replace. A harness that starts long-lived helpers
which should not hold the entry closes that descriptor in them.`,
		Example:           `  kcache run 6.14.2-tarball-x86_64 -- sh -c 'qemu-system-x86_64 -kernel "$KCACHE_IMAGE" ...'`,
		Args:              args(cobra.MinimumNArgs(2)),
		ValidArgsFunction: completeKeys(a),
		RunE: func(cmd *cobra.Command, argv []string) error {
			if dash := cmd.ArgsLenAtDash(); dash != 1 {
				return usageError{errors.New("usage: kcache run KEY -- CMD [ARGS...] (put -- between KEY and CMD)")}
			}
			key := argv[0]
			c, err := a.cache()
			if err != nil {
				return err
			}
			// Hold looks the key up (a key never stored is reported
			// before any lock file is created), takes its lock shared,
			// reads the entry again under it and counts the use.
			held, err := c.Hold(cmd.Context(), key, kcache.HoldOptions{Timeout: timeout})
			if err != nil {
				return err
			}
			// Until CMD has started, the hold is ours alone to drop;
			// after that CMD shares it (ExtraFiles below) and kcache only
			// closes its own descriptor, so the hold ends when CMD's does
			// — whether kcache exits normally or is killed.
			started := false
			defer func() {
				if started {
					_ = held.Detach()
				} else {
					_ = held.Release()
				}
			}()
			e := held.Entry
			child := exec.Command(argv[1], argv[2:]...)
			child.Stdin, child.Stdout, child.Stderr = os.Stdin, a.stdout, a.stderr
			child.ExtraFiles = []*os.File{held.File()} // descriptor 3, not close-on-exec in CMD
			child.Env = append(os.Environ(), "KCACHE_KEY="+key, "KCACHE_IMAGE="+e.ImagePath, "KCACHE_VMLINUX="+e.VmlinuxPath,
				"KCACHE_LOCK_FD=3") // ExtraFiles[0] is descriptor 3
			sigs := make(chan os.Signal, 4)
			signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
			defer signal.Stop(sigs)
			if err := child.Start(); err != nil {
				return fmt.Errorf("run %s: %w", argv[1], err)
			}
			started = true
			done := make(chan struct{})
			go func() {
				for {
					select {
					case s := <-sigs:
						_ = child.Process.Signal(s)
					case <-done:
						return
					}
				}
			}()
			err = child.Wait()
			close(done)
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				status := ee.Sys().(syscall.WaitStatus)
				if status.Signaled() {
					return &exitCodeError{code: 128 + int(status.Signal())}
				}
				return &exitCodeError{code: status.ExitStatus()}
			}
			if err != nil {
				return fmt.Errorf("run %s: %w", argv[1], err)
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", kcache.DefaultSharedTimeout, "how long to wait for a writer holding KEY")
	return cmd
}
