package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/kcache/kcache"
	"github.com/spf13/cobra"
)

// Tags shown after a list row, and the legend printed on stderr when a tag
// appears. The order here is the order of the legends.
var listLegends = []struct{ tag, legend string }{
	{"(stale kconfig)", "warning: entries marked (stale kconfig) were built with a different kconfig fragment than the current one (hash {current}); rebuild them and store them again."},
	{"(untracked kconfig)", "(untracked kconfig) marks entries stored without a kconfig hash, so kcache cannot tell whether they match the current kconfig (hash {current}); store them again with --kconfig or --kconfig-hash."},
	{"(unstripped)", "(unstripped) marks entries whose vmlinux could not be stripped when it was stored and is kept whole; they take more space and every lookup warns. `kcache strip VMLINUX` (without -o) shows why."},
	{"(pinned)", "(pinned) marks entries that clean and gc never remove; `kcache unpin KEY` releases one."},
}

func newListCmd(a *app) *cobra.Command {
	var (
		asJSON                   bool
		kconfigFile, kconfigHash string
	)
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List cached kernels, newest first",
		Long: `List cached kernels: usable entries newest built_at first (ties by key), then
corrupt ones. Rows go to stdout; the cache root and the legends of any tags
shown go to stderr.

Entries are compared with the current kconfig hash from --kconfig or
--kconfig-hash, else the one set with 'kcache kconfig set'; without one, no
kconfig status is shown.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.cache()
			if err != nil {
				return err
			}
			h, err := kconfigFlag(kconfigFile, kconfigHash)
			if err != nil {
				return err
			}
			opt := kcache.ListOptions{KconfigHash: h}
			if asJSON {
				// Streamed: each entry is written as it is read.
				var w *listJSONWriter
				_, err := c.ListEach(cmd.Context(), opt, func(current string) error {
					w = newListJSONWriter(a.stdout, c.Root(), current)
					return nil
				}, func(le kcache.Listed) error { return w.add(le) })
				if err != nil {
					return err
				}
				return w.finish()
			}
			l := &kcache.Listing{Root: c.Root()}
			l.CurrentKconfigHash, err = c.ListEach(cmd.Context(), opt, nil, func(le kcache.Listed) error {
				l.Entries = append(l.Entries, le)
				return nil
			})
			if err != nil {
				return err
			}
			writeListText(a.stdout, a.stderr, l)
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&asJSON, "json", false, `print {"root", "current_kconfig_hash", "entries": [...]} as JSON`)
	f.StringVar(&kconfigFile, "kconfig", "", "kconfig fragment whose CRC-32 is the current kconfig hash")
	f.StringVar(&kconfigHash, "kconfig-hash", "", "current kconfig hash (8 lowercase hex)")
	cmd.MarkFlagsMutuallyExclusive("kconfig", "kconfig-hash")
	return cmd
}

// entryTags returns the tags of a row, in legend order.
func entryTags(e *kcache.Entry, current string) []string {
	var tags []string
	switch e.KconfigStatus(current) {
	case kcache.KconfigStale:
		tags = append(tags, "(stale kconfig)")
	case kcache.KconfigUntracked:
		tags = append(tags, "(untracked kconfig)")
	}
	if e.HasVmlinux && !e.VmlinuxStripped {
		tags = append(tags, "(unstripped)")
	}
	if e.Pinned {
		tags = append(tags, "(pinned)")
	}
	return tags
}

func writeListText(stdout, stderr io.Writer, l *kcache.Listing) {
	fmt.Fprintf(stderr, "cache: %s\n", l.Root)
	if len(l.Entries) == 0 {
		fmt.Fprintln(stdout, "no cached kernels. Store one with `kcache store KEY --image PATH [--vmlinux PATH]`.")
		return
	}
	var table strings.Builder
	tw := tabwriter.NewWriter(&table, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tVERSION\tSOURCE\tARCH\tBUILT\tSIZE\t")
	seen := map[string]bool{}
	var corrupt []*kcache.CorruptError
	for _, le := range l.Entries {
		if le.Corrupt != nil {
			corrupt = append(corrupt, le.Corrupt)
			continue
		}
		e := le.Entry
		size := e.Image.Size
		if e.Vmlinux != nil {
			size += e.Vmlinux.Size
		}
		tags := entryTags(e, l.CurrentKconfigHash)
		for _, t := range tags {
			seen[t] = true
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Key, orDash(e.Version), e.Source.Type,
			e.Arch, e.BuiltAt, humanSize(size), strings.Join(tags, " "))
	}
	tw.Flush()
	for line := range strings.Lines(table.String()) {
		fmt.Fprintln(stdout, strings.TrimRight(line, " \n"))
	}
	// Corrupt rows are not aligned with the table: their reason is free text.
	for _, ce := range corrupt {
		fmt.Fprintf(stdout, "%s  (corrupt %s: %s)\n", ce.Key, ce.Kind, ce.Reason)
	}
	for _, lg := range listLegends {
		if seen[lg.tag] {
			fmt.Fprintln(stderr, strings.ReplaceAll(lg.legend, "{current}", l.CurrentKconfigHash))
		}
	}
	if n := len(corrupt); n > 0 {
		noun := "entries"
		if n == 1 {
			noun = "entry"
		}
		fmt.Fprintf(stderr, "%d corrupt %s. warning: entries marked (corrupt) cannot be used: their index record is malformed, or a blob file is missing or has the wrong size. Remove each with `kcache rm KEY` and store it again.\n", n, noun)
	}
}
