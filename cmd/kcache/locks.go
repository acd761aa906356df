package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/kcache/kcache"
	"github.com/kcache/kcache/lock"
	"github.com/spf13/cobra"
)

type locksJSON struct {
	Root  string            `json:"root"`
	Index indexLockJSON     `json:"index"`
	Locks []kcache.HeldLock `json:"locks"`
}

type indexLockJSON struct {
	Path    string        `json:"path"`
	Holders []lock.Holder `json:"holders"`
}

func newLocksCmd(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "locks",
		Short: "List the cache's locks that are held right now, with their holders",
		Long: `List every entry lock held right now (a 'kcache run', a harness, a store in
progress) and any process holding the index file, with pid, mode and
command line, as /proc/locks reports them.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.cache()
			if err != nil {
				return err
			}
			held, idx, err := c.HeldLocks(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				if held == nil {
					held = []kcache.HeldLock{}
				}
				if idx == nil {
					idx = []lock.Holder{}
				}
				return writeJSON(a.stdout, locksJSON{Root: c.Root(), Index: indexLockJSON{Path: c.IndexPath(), Holders: idx}, Locks: held})
			}
			if len(held) == 0 && len(idx) == 0 {
				fmt.Fprintln(a.stdout, "no locks held.")
				return nil
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "KEY\tMODE\tPID\tCOMMAND")
			for _, h := range idx {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", "(index)", h.Mode, h.PID, h.Cmdline)
			}
			for _, l := range held {
				for _, h := range l.Holders {
					fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", l.Key, h.Mode, h.PID, h.Cmdline)
				}
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"root", "index": {"path", "holders"}, "locks": [{"key", "lockfile", "holders"}]}`)
	return cmd
}
