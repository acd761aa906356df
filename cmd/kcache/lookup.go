package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newLookupCmd(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "lookup KEY",
		Short: "Print the paths of a cached kernel's image and vmlinux",
		Long: `Print the path of KEY's boot image, then the path of its vmlinux on a second
line when it has one. The paths stay valid until the entry is replaced or
removed; to keep it from being replaced while you use it, run your command
under 'kcache run KEY -- ...'.

Exits 3 when KEY is not cached, 1 when its entry is corrupt (with --json,
{"key", "error", "error_kind"} is printed first).`,
		Args:              args(cobra.ExactArgs(1)),
		ValidArgsFunction: completeKeys(a),
		RunE: func(cmd *cobra.Command, argv []string) error {
			c, err := a.cache()
			if err != nil {
				return err
			}
			e, err := c.Lookup(argv[0])
			if err != nil {
				return reportEntryErr(a, asJSON, err)
			}
			if asJSON {
				h, err := c.KconfigHash()
				if err != nil {
					return err
				}
				return writeJSON(a.stdout, toEntryJSON(e, h))
			}
			fmt.Fprintln(a.stdout, e.ImagePath)
			if e.VmlinuxPath != "" {
				fmt.Fprintln(a.stdout, e.VmlinuxPath)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the entry as JSON (the list schema)")
	return cmd
}
