package main

import (
	"fmt"
	"io"

	"github.com/kcache/kcache"
	"github.com/spf13/cobra"
)

func newDoctorCmd(a *app) *cobra.Command {
	var asJSON bool
	var opt kcache.DoctorOptions
	cmd := &cobra.Command{
		Use:   "doctor [--dry-run] [--rebuild-index] [--compact] [--json]",
		Short: "Reconcile the index with the blob directory; rebuild or compact the index",
		Long: `Reconcile the index and the blob directory in both directions:

  - entries whose blobs are missing or have the wrong size are marked corrupt
    (error_kind blob_missing or blob_mismatch; a wrong-size file is moved to
    <root>/quarantine);
  - entries the index lost (a manifest blob no record references, whose key
    has no record or an older one, and whose blobs are all present: a lost
    last commit, or a store that failed after writing its blobs) are put
    back ("restored");
  - blob files no entry references are reported as orphans; the sweep removes
    them once they are an hour old (doctor runs it);
  - files kcache did not write, in the root or under blobs/, are moved to
    <root>/quarantine/<time>-<path>; a directory (or anything but a regular
    file) that kcache did not create is reported and left in place.

Doctor repairs only a kcache cache root: one with index.db or the marker
file .kcache-root that kcache writes beside it. Any other non-empty
directory (a mistyped --root) is refused and left untouched.
--rebuild-index also accepts a root without either when its blobs/ holds
kcache manifests (a cache older than the marker whose index.db was lost).
A removed entry stays removed: doctor never restores a manifest stored
before the last removal of its key.

--rebuild-index first builds a new index from the manifest blob that every
entry has (when several manifests name one key, the newest stored_at wins),
keeps the old file as index.db.bak and renames the new one into place while
holding the old file's lock. Pins, last_used, the current kconfig hash and the
counters are carried over when the old index is readable, and lost when it is
not (manifests do not hold them). It works when index.db is missing or garbage.

--compact rewrites index.db without its free pages when at least half of it is
free, and reports the size before and after.

--dry-run reports what would be done and changes nothing. On a healthy cache
doctor changes nothing. Exit 0 when it ran (whatever it found), 1 on error.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.cache()
			if err != nil {
				return err
			}
			rep, err := c.Doctor(cmd.Context(), opt)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(a.stdout, rep)
			}
			writeDoctorText(a.stdout, rep)
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&opt.DryRun, "dry-run", false, "print the plan, change nothing")
	f.BoolVar(&opt.RebuildIndex, "rebuild-index", false, "rebuild index.db from the manifest blobs (the old file is kept as index.db.bak)")
	f.BoolVar(&opt.Compact, "compact", false, "rewrite index.db without free pages when it is mostly free")
	f.BoolVar(&asJSON, "json", false, `print {"dry_run", "rebuild", "corrupt", "restored", "orphans", "foreign", "symlinks", "sweep", "compact"} as JSON`)
	return cmd
}

func writeDoctorText(w io.Writer, r *kcache.DoctorReport) {
	would := func(done, planned string) string {
		if r.DryRun {
			return planned
		}
		return done
	}
	if rb := r.Rebuild; rb != nil {
		fmt.Fprintf(w, "index %s: %s %d entries from %d manifests (%d superseded by a newer one); old index %s\n",
			"rebuild", would("rebuilt", "would rebuild"), rb.Entries, rb.Manifests, rb.Superseded, rb.OldIndex)
		if rb.CarriedOver {
			fmt.Fprintln(w, "  pins, last_used, kconfig hash and counters carried over from the old index")
		} else if rb.OldIndex != "missing" {
			fmt.Fprintln(w, "  the old index is unreadable: pins, last_used, the kconfig hash and the counters are lost")
		}
		if rb.Backup != "" {
			fmt.Fprintf(w, "  old index kept as %s\n", rb.Backup)
		}
		for _, d := range rb.BadManifests {
			fmt.Fprintf(w, "  manifest blob %s does not decode or hash to its name; skipped\n", d)
		}
		for _, k := range rb.CorruptKeys {
			fmt.Fprintf(w, "  %s: a blob is missing or has the wrong size; marked corrupt\n", k)
		}
	}
	for _, p := range r.Corrupt {
		fmt.Fprintf(w, "corrupt %s (%s blob %s): %s; %s\n", p.Key, p.Role, p.ErrorKind, p.Detail, would("marked corrupt", "would mark corrupt"))
		if p.QuarantinedTo != "" {
			fmt.Fprintf(w, "  moved to %s\n", p.QuarantinedTo)
		}
	}
	for _, e := range r.Restored {
		how := "the index had lost it"
		if e.Replaced {
			how = "the index had an older record"
		}
		fmt.Fprintf(w, "%s %s from manifest %s (stored %s): %s\n", would("restored", "would restore"), e.Key, e.Manifest, e.StoredAt, how)
	}
	for _, o := range r.Orphans {
		fmt.Fprintf(w, "orphan blob %s (%s, written %s): no entry references it\n", o.Digest, humanSize(o.Size), o.MTime)
	}
	for _, f := range r.Foreign {
		if f.Kept != "" {
			fmt.Fprintf(w, "foreign %s: left in place (%s)\n", f.Path, f.Kept)
		} else if f.QuarantinedTo != "" {
			fmt.Fprintf(w, "foreign %s: moved to %s\n", f.Path, f.QuarantinedTo)
		} else {
			fmt.Fprintf(w, "foreign %s: would move to the quarantine\n", f.Path)
		}
	}
	for _, s := range r.Symlinks {
		fmt.Fprintf(w, "symlink %s -> %s: kcache never creates or follows symlinks under its root; left alone, remove it\n", s.Path, s.Target)
	}
	if s := r.Sweep; s != nil {
		fmt.Fprintf(w, "sweep: %s %d orphan blobs (%s), %d dead staging directories, %d unfinished removals\n",
			would("removed", "would remove"), s.OrphansRemoved, humanSize(s.OrphanBytes), len(s.StagingRemoved), s.DyingFinished)
	}
	if c := r.Compact; c != nil {
		switch {
		case c.Compacted:
			fmt.Fprintf(w, "compact: index.db %s -> %s (%.0f%% was free)\n", humanSize(c.Before), humanSize(c.After), c.FreeRatio*100)
		case c.FreeRatio >= 0.5:
			fmt.Fprintf(w, "compact: would compact index.db (%s, %.0f%% free)\n", humanSize(c.Before), c.FreeRatio*100)
		default:
			fmt.Fprintf(w, "compact: index.db (%s) is %.0f%% free; not worth compacting\n", humanSize(c.Before), c.FreeRatio*100)
		}
	}
	if r.Healthy() {
		fmt.Fprintln(w, "no problems found")
	}
}
