package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/kcache/kcache/strip"
	"github.com/spf13/cobra"
)

// stripJSON is `kcache strip --json`: the strip result plus the paths.
type stripJSON struct {
	Input  string `json:"input"`
	Output string `json:"output"` // "" when nothing was written
	strip.Result
	ElapsedSeconds float64 `json:"elapsed_seconds"`
}

func newStripCmd(a *app) *cobra.Command {
	var out string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "strip VMLINUX [-o OUT] [--json]",
		Short: "Strip a vmlinux the way store does, without the cache",
		Long: `Strip VMLINUX to its symbols, BTF, .rodata (embedded config) and notes (build
ID), as store does, and write the result to OUT through a temporary file and a
rename. Without -o nothing is written: the report alone says whether and how
the file strips. --json reports input and output sizes, sections kept, made
NOBITS and deleted, symbols in and out, the path taken (keep-list, or
debug-only when the keep-list rewrite failed) and the elapsed time.

Unlike store, a vmlinux that cannot be stripped is an error here (exit 1).`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			in, err := os.Open(argv[0])
			if err != nil {
				return fmt.Errorf("strip: %w", err)
			}
			defer in.Close()
			fi, err := in.Stat()
			if err != nil {
				return fmt.Errorf("strip: %w", err)
			}
			if !fi.Mode().IsRegular() {
				return fmt.Errorf("strip: %s is not a regular file", argv[0])
			}
			var res strip.Result
			if out == "" {
				res, err = strip.Strip(in, fi.Size(), io.Discard)
			} else {
				res, err = stripToFile(in, fi.Size(), out)
			}
			if err != nil {
				return fmt.Errorf("strip %s: %w", argv[0], err)
			}
			if asJSON {
				return writeJSON(a.stdout, stripJSON{Input: argv[0], Output: out, Result: res, ElapsedSeconds: res.Elapsed.Seconds()})
			}
			dest := out
			if dest == "" {
				dest = "(not written)"
			}
			fmt.Fprintf(a.stdout, "%s -> %s: %s -> %s (%.1f%%), %d of %d symbols, %s, %s\n",
				argv[0], dest, humanSize(res.InputSize), humanSize(res.OutputSize),
				100*float64(res.OutputSize)/float64(max(res.InputSize, 1)), res.SymbolsOut, res.SymbolsIn, res.Mode, res.Elapsed.Round(1e5))
			if res.KeepListError != "" {
				fmt.Fprintf(a.stderr, "kcache: warning: the keep-list rewrite failed (%s); used the debug-only rewrite\n", res.KeepListError)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "where to write the stripped ELF (a regular file; replaced atomically)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the strip report as JSON")
	return cmd
}

// stripToFile strips into a temporary file beside out and renames it into
// place, so out is never seen half-written.
func stripToFile(in io.ReaderAt, size int64, out string) (strip.Result, error) {
	if fi, err := os.Stat(out); err == nil && !fi.Mode().IsRegular() {
		return strip.Result{}, fmt.Errorf("output %s exists and is not a regular file", out)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return strip.Result{}, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-*")
	if err != nil {
		return strip.Result{}, fmt.Errorf("create output: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	res, err := strip.Strip(in, size, tmp)
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), out)
	}
	return res, err
}
