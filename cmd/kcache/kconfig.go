package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"
)

func newKconfigCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "kconfig",
		Short: "Set or show the current kconfig hash that list compares entries with",
		Long: `Entries record the CRC-32 of the kconfig fragment they were built with. The
current hash, stored in the index, is what 'kcache list' compares them with to
tag entries (stale kconfig) or (untracked kconfig).`,
	}
	var file, hash string
	var asJSON bool
	set := &cobra.Command{
		Use:   "set --file FRAGMENT | --hash HEX",
		Short: "Set the current kconfig hash",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			h, err := kconfigFlag(file, hash)
			if err != nil {
				return err
			}
			if h == "" {
				return usageError{errors.New("kconfig set needs --file FRAGMENT or --hash HEX")}
			}
			c, err := a.cache()
			if err != nil {
				return err
			}
			if err := c.SetKconfigHash(cmd.Context(), h); err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, h)
			return nil
		},
	}
	set.Flags().StringVar(&file, "file", "", "kconfig fragment; its CRC-32 becomes the current hash")
	set.Flags().StringVar(&hash, "hash", "", "the current hash itself (8 lowercase hex)")
	set.MarkFlagsMutuallyExclusive("file", "hash")
	show := &cobra.Command{
		Use:   "show",
		Short: "Print the current kconfig hash (nothing when none is set)",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.cache()
			if err != nil {
				return err
			}
			h, err := c.KconfigHash(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				var v *string
				if h != "" {
					v = &h
				}
				return writeJSON(a.stdout, map[string]*string{"current_kconfig_hash": v})
			}
			if h != "" {
				fmt.Fprintln(a.stdout, h)
			}
			return nil
		},
	}
	show.Flags().BoolVar(&asJSON, "json", false, `print {"current_kconfig_hash": HEX or null}`)
	clear := &cobra.Command{
		Use:   "clear",
		Short: "Forget the current kconfig hash",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.cache()
			if err != nil {
				return err
			}
			return c.SetKconfigHash(cmd.Context(), "")
		},
	}
	cmd.AddCommand(set, show, clear)
	return cmd
}
