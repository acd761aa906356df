package main

import "github.com/spf13/cobra"

// newDoctorCmd is a placeholder until the command is written.
func newDoctorCmd(a *app) *cobra.Command {
	_ = a
	return &cobra.Command{Use: "doctor", Hidden: true, Short: "not implemented yet", Args: args(cobra.NoArgs)}
}
