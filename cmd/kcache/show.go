package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/kcache/kcache"
	"github.com/spf13/cobra"
)

func newShowCmd(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show KEY",
		Short: "Show everything recorded about a cached kernel",
		Long: `Show everything recorded about KEY. Unlike lookup, show does not count as a
use of the entry: it neither updates last_used nor warns about an unstripped
vmlinux. With --json, a corrupt entry prints {"key", "error", "error_kind"}
and exits 1.`,
		Args:              args(cobra.ExactArgs(1)),
		ValidArgsFunction: completeKeys(a),
		RunE: func(cmd *cobra.Command, argv []string) error {
			c, err := a.cache()
			if err != nil {
				return err
			}
			e, err := c.Describe(cmd.Context(), argv[0])
			if err != nil {
				return reportEntryErr(a, asJSON, err)
			}
			current, err := c.KconfigHash(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(a.stdout, toEntryJSON(e, current))
			}
			writeShowText(a, e, current)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the entry as JSON (the list schema)")
	return cmd
}

func writeShowText(a *app, e *kcache.Entry, current string) {
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("key", e.Key)
	row("version", orDash(e.Version))
	src := e.Source.Type
	var details []string
	if e.Source.GitHash != nil {
		details = append(details, "git hash "+*e.Source.GitHash)
	}
	if e.Source.Ref != nil {
		details = append(details, "ref "+*e.Source.Ref)
	}
	if e.Source.SourceTreePath != nil {
		details = append(details, "tree "+*e.Source.SourceTreePath)
	}
	if len(details) > 0 {
		src += " (" + strings.Join(details, ", ") + ")"
	}
	row("source", src)
	row("arch", e.Arch)
	row("built at", e.BuiltAt)
	row("stored at", e.StoredAt)
	row("last used", orDash(&e.LastUsed))
	kc := orDash(e.KconfigHash)
	if st := e.KconfigStatus(current); st != "" {
		kc += " (" + st + ")"
	}
	row("kconfig hash", kc)
	row("config hash", orDash(e.ConfigHash))
	row("image", fmt.Sprintf("%s, %s, sha256 %s", e.ImageName, humanSize(e.Image.Size), e.Image.Digest))
	row("image path", e.ImagePath)
	if e.Vmlinux != nil {
		state := "stripped"
		if !e.VmlinuxStripped {
			state = "unstripped"
		}
		row("vmlinux", fmt.Sprintf("%s, %s, sha256 %s", state, humanSize(e.Vmlinux.Size), e.Vmlinux.Digest))
		row("vmlinux path", e.VmlinuxPath)
	} else {
		row("vmlinux", "-")
	}
	pinned := "no"
	switch {
	case e.Pinned && e.PinReason != "":
		pinned = "yes (" + e.PinReason + ")"
	case e.Pinned:
		pinned = "yes"
	}
	row("pinned", pinned)
	tw.Flush()
}
