package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kcache/kcache"
	"github.com/kcache/kcache/lock"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// removalJSON is the JSON report of clean and the shared part of gc's.
type removalJSON struct {
	DryRun      bool              `json:"dry_run"`
	Removed     []kcache.Removed  `json:"removed"`
	KeptInUse   []kcache.HeldLock `json:"kept_in_use"`
	KeptPinned  []string          `json:"kept_pinned"`
	NotFound    []string          `json:"not_found"`
	FreedBytes  int64             `json:"freed_bytes"`
	DurationMS  float64           `json:"duration_ms"`
	IndexHeldMS float64           `json:"index_held_ms"`
}

func toRemovalJSON(dry bool, r *kcache.Removal, took time.Duration) removalJSON {
	return removalJSON{DryRun: dry, Removed: r.Removed, KeptInUse: r.KeptInUse, KeptPinned: r.KeptPinned,
		NotFound: r.NotFound, FreedBytes: r.FreedBytes, DurationMS: ms(took), IndexHeldMS: ms(r.IndexHeld)}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// isTerminal reports whether f is a terminal.
func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func newCleanCmd(a *app) *cobra.Command {
	var (
		keep                            int
		corruptOnly, force, dry, asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "clean",
		Short: "Remove corrupt entries and all but the newest N cached kernels",
		Long: `Remove every corrupt entry and every usable entry except the --keep N newest
(by built_at), as ktstr's "cache clean" does: corrupt entries never use a keep
slot; with --corrupt-only usable entries are never removed. Pinned entries are
never removed, and an entry whose lock is held (a harness running it, a store
replacing it) is skipped; both are reported.

Without --force, clean lists what it would remove on stdout and asks on stderr
for confirmation (only "y" or "Y" proceeds; anything else prints "aborted").
Asking needs a terminal on stdin: otherwise clean fails with exit 2 and
removes nothing — but only once it has found something to remove; an empty
cache or nothing to remove prints "nothing to clean" and exits 0.

Exit 0 also when entries in use or pinned were skipped (they are reported).`,
		Example: `  kcache clean --keep 5 --force
  kcache clean --corrupt-only --dry-run --json`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.cache()
			if err != nil {
				return err
			}
			opt := kcache.CleanOptions{Keep: keep, CorruptOnly: corruptOnly, DryRun: true}
			plan, err := c.Clean(cmd.Context(), opt)
			if err != nil {
				return err
			}
			if len(plan.Candidates) == 0 {
				if asJSON {
					return writeJSON(a.stdout, toRemovalJSON(dry, &plan.Removal, plan.Duration))
				}
				fmt.Fprintln(a.stdout, "nothing to clean")
				return nil
			}
			if dry {
				if asJSON {
					return writeJSON(a.stdout, toRemovalJSON(true, &plan.Removal, plan.Duration))
				}
				writeRemovalText(a.stdout, &plan.Removal, true)
				return nil
			}
			if !force {
				if !isTerminal(os.Stdin) {
					return &exitCodeError{code: exitUsage, err: fmt.Errorf("clean would remove %d entries and confirmation needs a terminal on stdin; run with --force to remove them without asking (or --dry-run to see them)", len(plan.Candidates))}
				}
				// With --json the listing goes to stderr: stdout is the report.
				out := a.stdout
				if asJSON {
					out = a.stderr
				}
				fmt.Fprintln(out, "the following entries will be removed:")
				writeListText(out, a.stderr, &kcache.Listing{Root: c.Root(), Entries: plan.Candidates})
				if !confirm(os.Stdin, a.stderr, fmt.Sprintf("remove %d entries? [y/N] ", len(plan.Candidates))) {
					fmt.Fprintln(out, "aborted")
					return nil
				}
			}
			opt.DryRun = false
			opt.Only = make([]string, 0, len(plan.Candidates))
			for _, le := range plan.Candidates {
				opt.Only = append(opt.Only, le.Key)
			}
			rep, err := c.Clean(cmd.Context(), opt)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(a.stdout, toRemovalJSON(false, &rep.Removal, rep.Duration))
			}
			writeRemovalText(a.stdout, &rep.Removal, false)
			fmt.Fprintf(a.stdout, "removed %d cached kernel(s).\n", len(rep.Removed)+len(rep.NotFound))
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&keep, "keep", 0, "keep the N newest usable entries (corrupt ones never count)")
	f.BoolVar(&corruptOnly, "corrupt-only", false, "remove corrupt entries only")
	f.BoolVarP(&force, "force", "f", false, "do not ask for confirmation")
	f.BoolVar(&dry, "dry-run", false, "only print what would be removed")
	f.BoolVar(&asJSON, "json", false, `print {"dry_run","removed","kept_in_use","kept_pinned","not_found","freed_bytes","duration_ms","index_held_ms"} as JSON`)
	cmd.MarkFlagsMutuallyExclusive("keep", "corrupt-only")
	return cmd
}

// confirm prints prompt on w and reads one line from r: only y or Y agrees.
func confirm(r io.Reader, w io.Writer, prompt string) bool {
	fmt.Fprint(w, prompt)
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return false
	}
	ans := strings.TrimSpace(line)
	return ans == "y" || ans == "Y"
}

// writeRemovalText prints a table of removed (or, dry, to-be-removed)
// entries with reason and freed bytes, then what was kept and why.
func writeRemovalText(w io.Writer, r *kcache.Removal, dry bool) {
	if len(r.Removed) > 0 {
		var table strings.Builder
		tw := tabwriter.NewWriter(&table, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "KEY\tREASON\tFREED")
		for _, x := range r.Removed {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", x.Key, x.Reason, humanSize(x.FreedBytes))
		}
		tw.Flush()
		for line := range strings.Lines(table.String()) {
			fmt.Fprintln(w, strings.TrimRight(line, " \n"))
		}
	}
	verb := "removed"
	if dry {
		verb = "would remove"
	}
	fmt.Fprintf(w, "%s %d %s, freeing %s\n", verb, len(r.Removed), plural(len(r.Removed), "entry", "entries"), humanSize(r.FreedBytes))
	for _, h := range r.KeptInUse {
		fmt.Fprintf(w, "kept in use: %s\n%s\n", h.Key, lock.FormatHolders(h.Holders))
	}
	for _, k := range r.KeptPinned {
		fmt.Fprintf(w, "kept pinned: %s\n", k)
	}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
