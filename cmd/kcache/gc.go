package main

import "github.com/spf13/cobra"

// newGcCmd is a placeholder until the command is written.
func newGcCmd(a *app) *cobra.Command {
	_ = a
	return &cobra.Command{Use: "gc", Hidden: true, Short: "not implemented yet", Args: args(cobra.NoArgs)}
}
