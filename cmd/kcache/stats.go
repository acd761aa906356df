package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/kcache/kcache"
	"github.com/spf13/cobra"
)

func newStatsCmd(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "Show what the cache holds and how it has been used",
		Long: `Show the cache's entries (valid, corrupt, pinned), the bytes its entries
reference against the bytes blobs/ holds on disk (equal on a healthy, idle
cache), what deduplication saved, the index file's size and free pages,
staging and quarantine usage, lookup hits and misses, evictions (entries
removed by rm, clean and gc), and the last gc and sweep.

stats writes nothing; a missing cache shows as empty.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.cache()
			if err != nil {
				return err
			}
			r, err := c.Stats(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				// The library's report is the documented schema: its
				// field order and names (README, "stats --json").
				return writeJSON(a.stdout, r)
			}
			return renderStats(a, r)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

// renderStats prints the report as aligned "label  value" lines.
func renderStats(a *app, r *kcache.StatsReport) error {
	w := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	row := func(label, format string, args ...any) {
		fmt.Fprintf(w, "%s\t%s\n", label, fmt.Sprintf(format, args...))
	}
	sz := func(n int64) string {
		if n < 1024 {
			return humanSize(n)
		}
		return fmt.Sprintf("%s (%d bytes)", humanSize(n), n)
	}
	when := func(t *time.Time) string {
		if t == nil {
			return "never"
		}
		return fmt.Sprintf("%s (%s ago)", t.Format(time.RFC3339), time.Since(*t).Round(time.Second))
	}
	b := r.Blobs
	row("root", "%s", r.Root)
	row("entries", "%d (%d valid, %d corrupt, %d pinned)", r.Entries.Total, r.Entries.Valid, r.Entries.Corrupt, r.Entries.Pinned)
	row("recorded", "%s in %d blobs", sz(b.RecordedBytes), b.RecordedCount)
	row("on disk", "%s in %d files", sz(b.OnDiskBytes), b.OnDiskCount)
	if b.UnreferencedCount > 0 {
		row("unreferenced", "%s in %d files (the sweep removes blobs no entry uses)", sz(b.UnreferencedBytes), b.UnreferencedCount)
	}
	if b.MissingCount > 0 {
		row("missing", "%d blobs (see `kcache list` for the corrupt entries)", b.MissingCount)
	}
	row("dedup saved", "%s", sz(b.DedupSavedBytes))
	row("index", "%s, %d free pages (%s)", sz(r.Index.SizeBytes), r.Index.FreePages, humanSize(r.Index.FreeBytes))
	row("staging", "%s in %d dirs", sz(r.Staging.Bytes), r.Staging.Dirs)
	row("quarantine", "%s in %d files", sz(r.Quarantine.Bytes), r.Quarantine.Files)
	row("hits", "%d", r.Hits)
	row("misses", "%d", r.Misses)
	row("evictions", "%d", r.Evictions)
	gc := when(r.LastGC)
	if r.LastGCFreedBytes != nil {
		gc += ", freed " + sz(*r.LastGCFreedBytes)
	}
	if r.GCRuns > 0 {
		gc += fmt.Sprintf(", %d runs", r.GCRuns)
	}
	row("last gc", "%s", gc)
	row("last sweep", "%s", when(r.LastSweep))
	return w.Flush()
}
