package main

import (
	"fmt"
	"io"
	"os"

	"github.com/kcache/kcache"
	"github.com/spf13/cobra"
)

func newVerifyCmd(a *app) *cobra.Command {
	var asJSON, deep bool
	cmd := &cobra.Command{
		Use:   "verify [KEY...] [--deep] [--json]",
		Short: "Check that the blobs of cached kernels are intact; quarantine bad ones",
		Long: `Check every blob (image, vmlinux, manifest) of the given entries, or of all
entries: that it exists with the size the index recorded, and with --deep that
its content hashes to its sha256 digest (reads every byte).

A bad blob is moved to <root>/quarantine/<time>-<digest> (never deleted) and
every entry using it is marked corrupt in the index with error_kind
blob_missing (the file is gone) or blob_mismatch (wrong size, e.g. truncated,
or wrong content), which list and lookup then report until the key is stored
again. A damaged manifest is rewritten from the index record instead. With
--read-only nothing is moved or marked.

Exit codes: 0 all blobs good, 1 problems found (or an error), 3 a KEY has no
entry. --json prints {"checked", "deep", "problems": [{"key", "role",
"digest", "error_kind", "detail", "quarantined_to", "repaired"}]}.`,
		ValidArgsFunction: completeKeys(a),
		RunE: func(cmd *cobra.Command, keys []string) error {
			c, err := a.cache()
			if err != nil {
				return err
			}
			opt := kcache.VerifyOptions{Keys: keys, Deep: deep}
			bar := newProgress(a.stderr, "verify")
			if bar != nil {
				opt.Progress = bar.update
			}
			rep, err := c.Verify(cmd.Context(), opt)
			bar.done()
			if err != nil {
				return err
			}
			if asJSON {
				if err := writeJSON(a.stdout, rep); err != nil {
					return err
				}
			} else {
				writeVerifyText(a.stdout, a.stderr, rep)
			}
			if len(rep.Problems) > 0 {
				return &exitCodeError{code: exitError}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&deep, "deep", false, "re-hash every blob (reads everything; without it only presence and size are checked)")
	f.BoolVar(&asJSON, "json", false, `print {"checked", "deep", "problems": [...]} as JSON`)
	return cmd
}

func writeVerifyText(stdout, stderr io.Writer, rep *kcache.VerifyReport) {
	how := "size"
	if rep.Deep {
		how = "size and sha256"
	}
	for _, p := range rep.Problems {
		fmt.Fprintf(stdout, "%s  %s  %s: %s\n", p.Key, p.Role, p.ErrorKind, p.Detail)
		switch {
		case p.Repaired:
			fmt.Fprintf(stdout, "    manifest rewritten from the index record; the entry stays usable\n")
		case p.QuarantinedTo != "":
			fmt.Fprintf(stdout, "    moved to %s; the entry is marked corrupt\n", p.QuarantinedTo)
		}
	}
	fmt.Fprintf(stderr, "checked %d blobs (%s): %d problems\n", rep.Checked, how, len(rep.Problems))
	if len(rep.Problems) > 0 {
		fmt.Fprintln(stderr, "store the affected kernels again (`kcache store KEY ...`), or remove them with `kcache rm KEY`")
	}
}

// progress draws "<what>: done/total" on a terminal's stderr, redrawn in
// place; nil (a no-op) when stderr is not a terminal.
type progress struct {
	w    io.Writer
	what string
	last int
}

func newProgress(w io.Writer, what string) *progress {
	if f, ok := w.(*os.File); !ok || !isTerminal(f) {
		return nil
	}
	return &progress{w: w, what: what}
}

func (p *progress) update(done, total int) {
	// Redraw at most ~100 times: a terminal is slower than a stat.
	if step := max(total/100, 1); done != total && done-p.last < step {
		return
	}
	p.last = done
	fmt.Fprintf(p.w, "\r%s: %d/%d blobs", p.what, done, total)
}

func (p *progress) done() {
	if p != nil && p.last > 0 {
		fmt.Fprint(p.w, "\r\033[K")
	}
}
