package main

import "github.com/spf13/cobra"

// newVerifyCmd is a placeholder until the command is written.
func newVerifyCmd(a *app) *cobra.Command {
	_ = a
	return &cobra.Command{Use: "verify", Hidden: true, Short: "not implemented yet", Args: args(cobra.NoArgs)}
}
