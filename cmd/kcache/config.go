package main

import (
	"fmt"

	"github.com/kcache/kcache/strip"
	"github.com/spf13/cobra"
)

func newConfigCmd(a *app) *cobra.Command {
	var get string
	cmd := &cobra.Command{
		Use:   "config KEY [--get NAME]",
		Short: "Print the kernel config embedded in a cached kernel (IKCONFIG)",
		Long: `Print the kernel config embedded in KEY's vmlinux (CONFIG_IKCONFIG), or with
--get NAME the value of one option (NAME with or without the CONFIG_ prefix).
An option that is not set ("# CONFIG_X is not set", or absent) exits 3. A
kernel built without CONFIG_IKCONFIG is an error that says so.`,
		Example:           "  kcache config 6.14.2-tarball-x86_64 --get HZ",
		Args:              args(cobra.ExactArgs(1)),
		ValidArgsFunction: completeKeys(a),
		RunE: func(cmd *cobra.Command, argv []string) error {
			c, err := a.cache()
			if err != nil {
				return err
			}
			config, err := c.KernelConfig(cmd.Context(), argv[0])
			if err != nil {
				return err
			}
			if get == "" {
				fmt.Fprint(a.stdout, config)
				return nil
			}
			v, ok := strip.ConfigValue(config, get)
			if !ok {
				return &exitCodeError{code: exitNotFound, err: fmt.Errorf("%s is not set in the config of %q", get, argv[0])}
			}
			fmt.Fprintln(a.stdout, v)
			return nil
		},
	}
	cmd.Flags().StringVar(&get, "get", "", "print only this option's value")
	return cmd
}
