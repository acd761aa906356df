package main

import "github.com/spf13/cobra"

// newStatsCmd is a placeholder until the command is written.
func newStatsCmd(a *app) *cobra.Command {
	_ = a
	return &cobra.Command{Use: "stats", Hidden: true, Short: "not implemented yet", Args: args(cobra.NoArgs)}
}
