package main

import (
	"fmt"

	"github.com/kcache/kcache"
	"github.com/spf13/cobra"
)

func newExportCmd(a *app) *cobra.Command {
	var asJSON, all bool
	cmd := &cobra.Command{
		Use:   "export (KEY... | --all) DIR",
		Short: "Write cached kernels out in ktstr's cache layout",
		Long: `Write each KEY's entry (or, with --all, every usable entry) into DIR in the
per-directory layout of ktstr's kernel cache: DIR/KEY/<image name>,
DIR/KEY/vmlinux when the entry has one, and DIR/KEY/metadata.json exactly as
ktstr writes it. DIR may be a ktstr cache root: KTSTR_CACHE_DIR=DIR ktstr ...
then finds the kernels.

Files are cloned from the blob directory (reflink) where the filesystem can
and copied otherwise, never hard-linked: writing to an exported file never
changes the cache. They are read-only (0444). DIR must be outside the cache
root. Each entry is built in DIR/.tmp-KEY-PID and renamed into place. An
existing DIR/KEY is replaced only if it is a ktstr cache entry: a directory
holding metadata.json and nothing but the image it names, vmlinux and
.config. Anything else there (a source checkout, a file, a symlink, a
directory with other files) is refused and left untouched. The replacement is
atomic, holding ktstr's lock DIR/.locks/KEY.lock exclusively when DIR has a
.locks directory (waiting up to --lock-timeout for ktstr processes using the
entry).

Every KEY is tried; the exit code is the most serious failure: 1 for an
unexpected error or a corrupt entry, else 2 for an invalid key, else 4 if an
entry was in use, else 3 if one was not found.`,
		Args: args(func(cmd *cobra.Command, argv []string) error {
			switch {
			case all && len(argv) != 1:
				return fmt.Errorf("export --all takes exactly one argument, DIR")
			case !all && len(argv) < 2:
				return fmt.Errorf("export needs at least one KEY and DIR (or --all DIR)")
			}
			return nil
		}),
		ValidArgsFunction: completeKeys(a),
		RunE: func(cmd *cobra.Command, argv []string) error {
			c, err := a.cache()
			if err != nil {
				return err
			}
			dir := argv[len(argv)-1]
			rep, err := c.Export(cmd.Context(), kcache.ExportOptions{Keys: argv[:len(argv)-1], All: all, Dir: dir})
			if err != nil {
				return err
			}
			code := exitOK
			for i, f := range rep.Failed {
				_, c := errorKind(f.Err)
				code = worse(code, c)
				rep.Failed[i].Error = errText(f.Err)
			}
			if asJSON {
				if err := writeJSON(a.stdout, rep); err != nil {
					return err
				}
			} else {
				for _, e := range rep.Exported {
					how := "reflinked"
					if !e.Reflinked {
						how = "copied"
					}
					fmt.Fprintf(a.stdout, "%s\t%s (%s)\n", e.Key, e.Path, how)
				}
				for _, f := range rep.Failed {
					fmt.Fprintf(a.stderr, "kcache: %s\n", f.Error)
				}
			}
			if code != exitOK {
				return &exitCodeError{code: code}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "export every usable entry (corrupt ones are reported as failed)")
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"dir", "exported": [{"key","path","linked","reflinked"}], "failed": [{"key","error"}]} as JSON`)
	cmd.Flags().DurationVar(&a.lockTimeout, "lock-timeout", kcache.DefaultExclusiveTimeout, "how long to wait for ktstr processes holding an entry being replaced in DIR")
	return cmd
}
