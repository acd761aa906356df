package main

import (
	"errors"
	"fmt"

	"github.com/kcache/kcache"
	"github.com/kcache/kcache/remote"
	"github.com/spf13/cobra"
)

type rmResult struct {
	Key       string `json:"key"`
	Removed   bool   `json:"removed"`
	Error     string `json:"error,omitempty"`
	ErrorKind string `json:"error_kind,omitempty"` // not_found, in_use, invalid, error
}

func newRmCmd(a *app) *cobra.Command {
	var asJSON, force bool
	cmd := &cobra.Command{
		Use:   "rm KEY...",
		Short: "Remove cached kernels",
		Long: `Remove each KEY's entry and every blob no other entry uses. An entry whose
lock is held (a harness running it, a store replacing it) is left alone and
its holders are listed. A pinned entry is removed only with --force (exit 4
otherwise, error_kind "pinned").

Every KEY is tried; the exit code is the most serious failure: 1 for an
unexpected error, else 2 for an invalid key, else 4 if an entry was in use,
else 3 if one was not found.`,
		Args:              args(cobra.MinimumNArgs(1)),
		ValidArgsFunction: completeKeys(a),
		RunE: func(cmd *cobra.Command, keys []string) error {
			c, err := a.cache()
			if err != nil {
				return err
			}
			var results []rmResult
			code := exitOK
			for _, key := range keys {
				r := rmResult{Key: key}
				err := c.Remove(cmd.Context(), key, kcache.RemoveOptions{Force: force})
				r.Removed = err == nil
				if err != nil {
					var c int
					r.ErrorKind, c = errorKind(err)
					code = worse(code, c)
					r.Error = errText(err)
					if !asJSON {
						fmt.Fprintf(a.stderr, "kcache: %s\n", errText(err))
					}
				} else if !asJSON {
					fmt.Fprintf(a.stdout, "removed %s\n", key)
				}
				results = append(results, r)
			}
			if asJSON {
				if err := writeJSON(a.stdout, results); err != nil {
					return err
				}
			}
			if code != exitOK {
				return &exitCodeError{code: code}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, `print [{"key","removed","error","error_kind"}] as JSON`)
	cmd.Flags().BoolVarP(&force, "force", "f", false, "remove pinned entries too (entries in use are never removed)")
	return cmd
}

// errorKind names a per-key failure for --json (error_kind) and gives the
// exit code it maps to.
func errorKind(err error) (kind string, code int) {
	switch {
	case errors.Is(err, kcache.ErrInUse):
		return "in_use", exitInUse
	case errors.Is(err, kcache.ErrPinned):
		return "pinned", exitInUse
	case errors.Is(err, kcache.ErrNotFound), errors.Is(err, remote.ErrNotFound):
		return "not_found", exitNotFound
	case errors.Is(err, kcache.ErrInvalid):
		return "invalid", exitUsage
	}
	return "error", exitError
}

// worse picks the exit code that matters most to a script: a generic error
// over usage over in-use over not-found.
func worse(cur, next int) int {
	rank := map[int]int{exitOK: 0, exitNotFound: 1, exitInUse: 2, exitUsage: 3, exitError: 4}
	if rank[next] > rank[cur] {
		return next
	}
	return cur
}
