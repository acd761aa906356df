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
	// S3Remote says how remote commands reach S3: "built-in", the path of
	// the kcache-remote helper, or null when neither is available.
	S3Remote *string `json:"s3_remote"`
}

// s3Remote is versionJSON.S3Remote.
func s3Remote() *string {
	if openS3 != nil {
		s := "built-in"
		return &s
	}
	if p, err := findHelper(); err == nil {
		return &p
	}
	return nil
}

func newVersionCmd(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print kcache's version, the index schema it reads and how it reaches S3",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := versionJSON{Version: "(devel)", Go: runtime.Version(), IndexSchema: index.SchemaVersion, S3Remote: s3Remote()}
			if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
				v.Version = bi.Main.Version
			}
			if asJSON {
				return writeJSON(a.stdout, v)
			}
			fmt.Fprintf(a.stdout, "kcache %s (%s, index schema %d)\n", v.Version, v.Go, v.IndexSchema)
			switch {
			case v.S3Remote == nil:
				fmt.Fprintf(a.stdout, "S3 remote: not available (%s not found; see the README)\n", helperName)
			case *v.S3Remote == "built-in":
				fmt.Fprintln(a.stdout, "S3 remote: built in")
			default:
				fmt.Fprintf(a.stdout, "S3 remote: through %s\n", *v.S3Remote)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"version", "go", "index_schema", "s3_remote"}`)
	return cmd
}
