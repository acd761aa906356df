package main

import "github.com/spf13/cobra"

// newCleanCmd is a placeholder until the command is written.
func newCleanCmd(a *app) *cobra.Command {
	_ = a
	return &cobra.Command{Use: "clean", Hidden: true, Short: "not implemented yet", Args: args(cobra.NoArgs)}
}
