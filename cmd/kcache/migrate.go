package main

import (
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/kcache/kcache"
	"github.com/kcache/kcache/lock"
	"github.com/spf13/cobra"
)

func newMigrateCmd(a *app) *cobra.Command {
	var (
		opt    kcache.MigrateOptions
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "migrate [--from DIR] [--dry-run] [--json] [--remove-source] [--lock-timeout D]",
		Short: "Import a ktstr kernel cache",
		Long: `Import the kernel cache of ktstr (one directory per entry with a metadata.json)
into kcache. The source is --from, else ktstr's own cascade: $KTSTR_CACHE_DIR,
else $XDG_CACHE_HOME/ktstr/kernels, else $HOME/.cache/ktstr/kernels.

Each valid entry is stored under its key with its metadata (ktstr_kconfig_hash
becomes kconfig_hash) and its vmlinux stripped. Each entry is read under
ktstr's lock held shared (waiting up to --lock-timeout for a ktstr build that
is replacing it; still locked then, it is reported busy and skipped). The
source is not modified: no lock file is created, and entries without one are
read unlocked. Corrupt entries are reported with ktstr's error_kind and
skipped. Run it again at any time: entries already imported from the same
files are skipped without writing, changed ones are imported again.

--remove-source removes from the source each entry that kcache holds and that
verifies (source files hash to what kcache recorded, kcache's blobs re-hash
to their digests), under ktstr's exclusive lock taken without waiting. Only
the files kcache imported are deleted: metadata.json, the image and the
vmlinux when it was imported. Anything else in the entry directory (notes,
debug files, a vmlinux that has_vmlinux does not claim, a subdirectory, a
symlink) stays, and so does the directory, with a note in the report. A
symlinked entry, image, vmlinux or metadata.json is never followed: the
entry is kept.

Exit 0 when the migration ran (also when entries were corrupt, busy or
refused: they are reported), 1 on an error. An error midway still prints
the report of the entries done before it (with --json, its "error" field
holds the error, null on success), then the error on stderr.`,
		Example: `  kcache migrate --dry-run
  kcache migrate --from ~/.cache/ktstr/kernels --json
  kcache migrate --remove-source`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.cache()
			if err != nil {
				return err
			}
			if f, ok := a.stderr.(*os.File); ok && isTerminal(f) {
				opt.Progress = func(done, total int) {
					fmt.Fprintf(f, "\rmigrating %d/%d", done, total)
					if done == total {
						fmt.Fprint(f, "\r\033[K")
					}
				}
			}
			r, err := c.Migrate(cmd.Context(), opt)
			// What was done is printed even when an error stopped the
			// migration midway: entries already imported (and removed
			// from the source) must not go unreported. The error follows
			// on stderr, with exit 1.
			switch {
			case r == nil:
			case asJSON:
				var msg *string
				if err != nil {
					s := errText(err)
					msg = &s
				}
				if werr := writeJSON(a.stdout, migrateJSON{r, msg}); werr != nil && err == nil {
					err = werr
				}
			case err == nil || migrateDidSomething(r):
				renderMigrate(a, r)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&opt.From, "from", "", "ktstr cache to import (default: $KTSTR_CACHE_DIR, $XDG_CACHE_HOME/ktstr/kernels, $HOME/.cache/ktstr/kernels)")
	f.BoolVar(&opt.DryRun, "dry-run", false, "report what would be imported; write and remove nothing")
	f.BoolVar(&opt.RemoveSource, "remove-source", false, "remove each entry from the source once kcache holds it and it verifies")
	f.DurationVar(&opt.LockTimeout, "lock-timeout", kcache.DefaultSharedTimeout, "how long to wait for a ktstr process replacing an entry before reporting it busy")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

// migrateJSON is migrate's --json output: the report and the error that
// stopped the migration, null when it ran to the end.
type migrateJSON struct {
	*kcache.MigrateReport
	Error *string `json:"error"`
}

// migrateDidSomething reports whether r has any entry: a migration that
// failed before its first entry has nothing to show but the error.
func migrateDidSomething(r *kcache.MigrateReport) bool {
	return len(r.Imported)+len(r.SkippedExisting)+len(r.Corrupt)+len(r.Busy)+len(r.Conflicts)+
		len(r.Failed)+len(r.RemovedFromSource)+len(r.NotRemoved) > 0
}

func renderMigrate(a *app, r *kcache.MigrateReport) {
	verb := "imported"
	if r.DryRun {
		verb = "would import"
	}
	fmt.Fprintf(a.stdout, "from %s: %s %d (%s read, %s stored), %d already present, %d corrupt, %d busy",
		r.From, verb, len(r.Imported), humanSize(r.BytesIn), humanSize(r.BytesStored), len(r.SkippedExisting), len(r.Corrupt), len(r.Busy))
	if n := len(r.Conflicts) + len(r.Failed); n > 0 {
		fmt.Fprintf(a.stdout, ", %d not imported", n)
	}
	if len(r.RemovedFromSource)+len(r.NotRemoved) > 0 {
		fmt.Fprintf(a.stdout, ", %d removed from the source", len(r.RemovedFromSource))
		if n := len(r.SourceDirsKept); n > 0 {
			fmt.Fprintf(a.stdout, " (%d with their directory kept)", n)
		}
	}
	fmt.Fprintln(a.stdout)
	tw := tabwriter.NewWriter(a.stdout, 2, 8, 2, ' ', 0)
	for _, e := range r.Imported {
		note := ""
		if e.Updated {
			note = "updated"
		}
		if e.VmlinuxMissing {
			note = strings.TrimPrefix(note+", vmlinux missing in the source", ", ")
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", verb, e.Key, humanSize(e.BytesIn), note)
	}
	for _, e := range r.Corrupt {
		fmt.Fprintf(tw, "  corrupt\t%s\t%s\t%s\n", e.Key, e.ErrorKind, e.Reason)
	}
	for _, e := range r.Busy {
		fmt.Fprintf(tw, "  busy\t%s\t%s\t%s\n", e.Key, e.Lockfile, strings.TrimSpace(strings.ReplaceAll(lock.FormatHolders(e.Holders), "\n", ";")))
	}
	for _, e := range r.Conflicts {
		fmt.Fprintf(tw, "  conflict\t%s\t%s\n", e.Key, e.Reason)
	}
	for _, e := range r.Failed {
		fmt.Fprintf(tw, "  refused\t%s\t%s\n", e.Key, e.Reason)
	}
	kept := map[string]string{}
	for _, e := range r.SourceDirsKept {
		kept[e.Key] = e.Reason
	}
	for _, k := range r.RemovedFromSource {
		if why, ok := kept[k]; ok {
			fmt.Fprintf(tw, "  removed\t%s\tsource directory kept: %s\n", k, why)
			continue
		}
		fmt.Fprintf(tw, "  removed\t%s\n", k)
	}
	for _, e := range r.NotRemoved {
		fmt.Fprintf(tw, "  kept\t%s\t%s\n", e.Key, strings.ReplaceAll(e.Reason, "\n", " "))
	}
	_ = tw.Flush()
}
