package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/kcache/kcache/index"
	"github.com/spf13/cobra"
)

type versionJSON struct {
	Version     string `json:"version"`
	Go          string `json:"go"`
	IndexSchema int    `json:"index_schema"`
}

func newVersionCmd(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print kcache's version and the index schema it reads",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := versionJSON{Version: "(devel)", Go: runtime.Version(), IndexSchema: index.SchemaVersion}
			if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
				v.Version = bi.Main.Version
			}
			if asJSON {
				return writeJSON(a.stdout, v)
			}
			fmt.Fprintf(a.stdout, "kcache %s (%s, index schema %d)\n", v.Version, v.Go, v.IndexSchema)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"version", "go", "index_schema"}`)
	return cmd
}
