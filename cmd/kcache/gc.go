package main

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/kcache/kcache"
	"github.com/spf13/cobra"
)

// gcJSON is gc's JSON report.
type gcJSON struct {
	removalJSON
	Policies       []string `json:"policies"`
	Corrupt        []string `json:"corrupt"`
	SizeBefore     int64    `json:"size_before"`
	OrphansRemoved int      `json:"orphans_removed"`
	OrphanBytes    int64    `json:"orphan_bytes"`
	StagingRemoved []string `json:"staging_removed"`
}

func newGcCmd(a *app) *cobra.Command {
	var (
		keep                     int
		keepPer                  []string
		maxAge, maxSize, minFree string
		grace                    time.Duration
		dry, asJSON              bool
	)
	cmd := &cobra.Command{
		Use:   "gc",
		Short: "Remove cached kernels by policy, then sweep leftovers",
		Long: `Remove the entries that no given policy keeps, then sweep: blob files no entry
references that are older than --grace, staging directories of writers that
died, removals a crashed process left half done.

Policies (an entry survives if ANY of them keeps it; with none, gc only sweeps):
  --keep N               the N newest entries by built_at
  --keep-per FIELD:N     the N newest of each version, arch or source (type);
                         repeatable, each one a policy
  --max-age D            entries used (last lookup, else stored) within D
  --max-size SIZE        least recently used entries go until the cache's blobs
                         total at most SIZE (shared blobs counted once)
  --min-free SIZE|PCT%   least recently used entries go until SIZE (or PCT% of
                         the filesystem) would be free

Pinned entries always survive. Corrupt entries are left to 'kcache clean' and
'kcache doctor' and reported. An entry whose lock is held is skipped and
reported; gc still exits 0 (it is meant to run on a schedule).

D is a Go duration (36h, 90m) or days (30d, 1d12h). SIZE is bytes or a number
with K, M, G, T (powers of 1024; KiB, MiB, ... too) or KB, MB, GB, TB (powers
of 1000): 500M, 1.5GiB, 10G.`,
		Example: `  kcache gc --max-age 30d --keep 5 --dry-run
  kcache gc --max-size 20G --keep-per version:1 --json`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if grace < 0 {
				return usageError{fmt.Errorf("--grace %s is negative", grace)}
			}
			// On the command line 0 means what it says: no grace at all.
			opt := kcache.GCOptions{Grace: grace, NoGrace: grace == 0, DryRun: dry}
			if cmd.Flags().Changed("keep") {
				opt.Keep = &keep
			}
			var err error
			if opt.KeepPer, err = parseKeepPer(keepPer); err != nil {
				return usageError{err}
			}
			if maxAge != "" {
				if opt.MaxAge, err = parseDays(maxAge); err != nil || opt.MaxAge <= 0 {
					return usageError{fmt.Errorf("--max-age %q: want a positive duration such as 30d, 36h or 1d12h", maxAge)}
				}
			}
			if maxSize != "" {
				if opt.MaxSize, err = parseSize(maxSize); err != nil || opt.MaxSize <= 0 {
					return usageError{fmt.Errorf("--max-size %q: want a positive size such as 20G, 500MiB or 1.5GB", maxSize)}
				}
			}
			if minFree != "" {
				if pct, ok := strings.CutSuffix(minFree, "%"); ok {
					opt.MinFreePercent, err = strconv.ParseFloat(pct, 64)
					if err != nil || opt.MinFreePercent <= 0 || opt.MinFreePercent > 100 {
						return usageError{fmt.Errorf("--min-free %q: want a percentage above 0 and at most 100, such as 15%%", minFree)}
					}
				} else if opt.MinFree, err = parseSize(minFree); err != nil || opt.MinFree <= 0 {
					return usageError{fmt.Errorf("--min-free %q: want a size such as 20G or a percentage such as 15%%", minFree)}
				}
			}
			c, err := a.cache()
			if err != nil {
				return err
			}
			rep, err := c.GC(cmd.Context(), opt)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(a.stdout, gcJSON{removalJSON: toRemovalJSON(rep.DryRun, &rep.Removal, rep.Duration),
					Policies: rep.Policies, Corrupt: rep.Corrupt, SizeBefore: rep.SizeBefore,
					OrphansRemoved: rep.OrphansRemoved, OrphanBytes: rep.OrphanBytes, StagingRemoved: rep.StagingRemoved})
			}
			if len(rep.Policies) > 0 {
				writeRemovalText(a.stdout, &rep.Removal, rep.DryRun)
			}
			if n := len(rep.Corrupt); n > 0 {
				fmt.Fprintf(a.stdout, "left %d corrupt %s for `kcache clean --corrupt-only`: %s\n", n, plural(n, "entry", "entries"), strings.Join(rep.Corrupt, " "))
			}
			verb := "swept"
			if rep.DryRun {
				verb = "would sweep"
			}
			fmt.Fprintf(a.stdout, "%s %d orphan %s (%s) and %d dead staging %s\n", verb,
				rep.OrphansRemoved, plural(rep.OrphansRemoved, "blob", "blobs"), humanSize(rep.OrphanBytes),
				len(rep.StagingRemoved), plural(len(rep.StagingRemoved), "directory", "directories"))
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&keep, "keep", 0, "keep the N newest entries by built_at")
	f.StringArrayVar(&keepPer, "keep-per", nil, "keep the N newest of each group: version:N, arch:N or source:N (repeatable)")
	f.StringVar(&maxAge, "max-age", "", "keep entries used within this duration (30d, 36h)")
	f.StringVar(&maxSize, "max-size", "", "remove least recently used entries until the cache is at most this size (20G, 500MiB)")
	f.StringVar(&minFree, "min-free", "", "remove least recently used entries until this much is free on the cache's filesystem (20G or 15%)")
	f.DurationVar(&grace, "grace", kcache.DefaultSweepGrace, "how old an unreferenced blob file must be before it is removed (0: any age — only safe when no store is running)")
	f.BoolVar(&dry, "dry-run", false, "remove nothing; print every entry that would be removed, with its reason and size")
	f.BoolVar(&asJSON, "json", false, `print {"dry_run","removed","kept_in_use","kept_pinned","not_found","freed_bytes","duration_ms","index_held_ms","policies","corrupt","size_before","orphans_removed","orphan_bytes","staging_removed"} as JSON`)
	return cmd
}

func parseKeepPer(specs []string) (map[string]int, error) {
	if len(specs) == 0 {
		return nil, nil
	}
	out := map[string]int{}
	for _, s := range specs {
		field, num, ok := strings.Cut(s, ":")
		n, err := strconv.Atoi(num)
		if !ok || err != nil || n < 0 || (field != kcache.GroupVersion && field != kcache.GroupArch && field != kcache.GroupSource) {
			return nil, fmt.Errorf("--keep-per %q: want FIELD:N with FIELD version, arch or source and N >= 0", s)
		}
		if _, dup := out[field]; dup {
			return nil, fmt.Errorf("--keep-per %s given twice", field)
		}
		out[field] = n
	}
	return out, nil
}

// parseDays parses a Go duration, optionally preceded by whole days: 30d,
// 1d12h, 36h.
func parseDays(s string) (time.Duration, error) {
	days, rest := "", s
	if i := strings.IndexByte(s, 'd'); i >= 0 {
		days, rest = s[:i], s[i+1:]
	}
	var d time.Duration
	if days != "" {
		n, err := strconv.ParseUint(days, 10, 31)
		if err != nil {
			return 0, err
		}
		d = time.Duration(n) * 24 * time.Hour
	}
	if rest != "" || days == "" {
		r, err := time.ParseDuration(rest)
		if err != nil {
			return 0, err
		}
		d += r
	}
	return d, nil
}

var sizeRE = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)\s*(?:([kKmMgGtTpP])(i?)([bB]?))?([bB]?)$`)

// parseSize parses bytes or a number with a unit: K, M, G, T, P and their
// KiB forms are powers of 1024, KB, MB, GB, TB, PB powers of 1000.
func parseSize(s string) (int64, error) {
	m := sizeRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil || (m[2] != "" && m[5] != "") {
		return 0, fmt.Errorf("not a size: %q", s)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, err
	}
	if m[2] != "" {
		base := 1024.0
		if m[3] == "" && m[4] != "" {
			base = 1000
		}
		exp := strings.Index("kmgtp", strings.ToLower(m[2])) + 1
		for range exp {
			v *= base
		}
	}
	if v >= 1<<63 {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return int64(v), nil
}
