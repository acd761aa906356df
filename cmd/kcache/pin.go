package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newPinCmd(a *app) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:               "pin KEY",
		Short:             "Keep a cached kernel from being removed by clean and gc",
		Args:              args(cobra.ExactArgs(1)),
		ValidArgsFunction: completeKeys(a),
		RunE: func(cmd *cobra.Command, argv []string) error {
			c, err := a.cache()
			if err != nil {
				return err
			}
			if err := c.Pin(cmd.Context(), argv[0], reason); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "pinned %s\n", argv[0])
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why it is pinned (shown by show and list --json as pin_reason)")
	return cmd
}

func newUnpinCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:               "unpin KEY",
		Short:             "Let clean and gc remove a pinned kernel again",
		Args:              args(cobra.ExactArgs(1)),
		ValidArgsFunction: completeKeys(a),
		RunE: func(cmd *cobra.Command, argv []string) error {
			c, err := a.cache()
			if err != nil {
				return err
			}
			had, err := c.Unpin(cmd.Context(), argv[0])
			if err != nil {
				return err
			}
			if !had {
				fmt.Fprintf(a.stderr, "kcache: %s was not pinned\n", argv[0])
				return nil
			}
			fmt.Fprintf(a.stdout, "unpinned %s\n", argv[0])
			return nil
		},
	}
}
