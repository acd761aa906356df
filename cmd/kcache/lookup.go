package main

import (
	"errors"
	"fmt"

	"github.com/kcache/kcache"
	"github.com/spf13/cobra"
)

func newLookupCmd(a *app) *cobra.Command {
	var asJSON bool
	var buildID string
	var rf remoteFlags
	cmd := &cobra.Command{
		Use:   "lookup KEY | --build-id HEX",
		Short: "Print the paths of a cached kernel's image and vmlinux",
		Long: `Print the path of KEY's boot image, then the path of its vmlinux on a second
line when it has one. The paths stay valid until the entry is replaced or
removed; to keep it from being replaced while you use it, run your command
under 'kcache run KEY -- ...'.

With --build-id, the entry is found by its vmlinux's GNU build ID (the newest
if several entries share it).

With --remote, a KEY that is not cached is pulled from the remote first
(see 'kcache pull'); a remote that fails is a warning and the lookup a miss.

Exits 3 when KEY is not cached, 1 when its entry is corrupt (with --json,
{"key", "error", "error_kind"} is printed first).`,
		Args: args(func(cmd *cobra.Command, argv []string) error {
			if buildID != "" {
				return cobra.NoArgs(cmd, argv)
			}
			if err := cobra.ExactArgs(1)(cmd, argv); err != nil {
				return err
			}
			return checkKeyArgs(argv)
		}),
		ValidArgsFunction: completeKeys(a),
		RunE: func(cmd *cobra.Command, argv []string) error {
			c, err := a.cache()
			if err != nil {
				return err
			}
			var e *kcache.Entry
			switch {
			case buildID != "":
				e, err = c.LookupBuildID(cmd.Context(), buildID)
			case cmd.Flags().Changed("remote"):
				e, err = lookupRemote(cmd.Context(), a, c, &rf, argv[0])
			default:
				e, err = c.Lookup(cmd.Context(), argv[0])
			}
			var ec *exitCodeError
			if errors.As(err, &ec) { // the helper answered (and printed)
				return err
			}
			if err != nil {
				return reportEntryErr(a, asJSON, err)
			}
			if asJSON {
				h, err := c.KconfigHash(cmd.Context())
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
	rf.add(cmd, "on a miss, pull KEY from the remote: bare --remote uses $KCACHE_REMOTE, --remote=s3://BUCKET/PREFIX names one")
	cmd.Flags().StringVar(&buildID, "build-id", "", "find the entry whose vmlinux has this GNU build ID (hex) instead of naming KEY")
	return cmd
}
