package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kcache/kcache"
	"github.com/kcache/kcache/internal/units"
	"github.com/kcache/kcache/remote"
	"github.com/spf13/cobra"
)

// remoteEnv names the default remote.
const remoteEnv = "KCACHE_REMOTE"

// remoteFromEnv is --remote's value when given without one: use $KCACHE_REMOTE.
const remoteFromEnv = "$" + remoteEnv

// remoteFlags are the flags of every command that talks to a remote.
type remoteFlags struct {
	url      string
	endpoint string
	insecure bool
}

const remoteHelp = `
The remote is an S3-compatible bucket, s3://BUCKET/PREFIX, from --remote=URL
or $KCACHE_REMOTE. The endpoint is --remote-endpoint, else
$AWS_ENDPOINT_URL_S3 or $AWS_ENDPOINT_URL, else AWS; the region is
$AWS_REGION or $AWS_DEFAULT_REGION; credentials come from
$AWS_ACCESS_KEY_ID / $AWS_SECRET_ACCESS_KEY ($AWS_SESSION_TOKEN) or
~/.aws/credentials ($AWS_PROFILE). An endpoint given as http://HOST:PORT, or
--remote-insecure, speaks plain HTTP (a server on loopback).`

// add registers the flags. --remote's value is optional: bare, it means
// $KCACHE_REMOTE (what lookup needs, where the flag switches the remote on).
func (rf *remoteFlags) add(cmd *cobra.Command, usage string) {
	cmd.Flags().StringVar(&rf.url, "remote", "", usage)
	cmd.Flags().Lookup("remote").NoOptDefVal = remoteFromEnv
	cmd.Flags().StringVar(&rf.endpoint, "remote-endpoint", "", "S3 endpoint, host[:port] or http(s)://host[:port] (default: $AWS_ENDPOINT_URL_S3, $AWS_ENDPOINT_URL, AWS)")
	cmd.Flags().BoolVar(&rf.insecure, "remote-insecure", false, "speak plain HTTP to the endpoint (a test server on loopback)")
}

// openS3 opens an S3 remote. It is nil in the default build, which leaves
// the S3 client (minio-go and its dependencies) out of the binary: linked
// in, its package initialisation and size double the start-up time of every
// kcache command, lookups included. A nil openS3 makes remote commands run
// the kcache-remote helper instead (see delegate), the way git runs
// git-remote-https. Building with -tags kcache_s3 sets it (remote_s3.go).
var openS3 func(remoteFlags) (remote.Remote, error)

// open returns the configured remote. Without one it is a usage error that
// says how to name one.
func (rf *remoteFlags) open() (remote.Remote, error) {
	cfg := *rf
	if cfg.url == "" || cfg.url == remoteFromEnv {
		cfg.url = os.Getenv(remoteEnv)
	}
	if cfg.url == "" {
		return nil, usageError{errors.New("no remote: set KCACHE_REMOTE=s3://BUCKET/PREFIX or pass --remote=s3://BUCKET/PREFIX")}
	}
	if openS3 == nil {
		return nil, errNeedHelper
	}
	r, err := openS3(cfg)
	if err != nil {
		return nil, usageError{err}
	}
	return r, nil
}

// checkKeyArgs catches `--remote s3://B/P KEY`: the flag's value is optional,
// so it must be attached with "=" and the URL would be taken for a key.
func checkKeyArgs(keys []string) error {
	for _, k := range keys {
		if strings.Contains(k, "://") {
			return usageError{fmt.Errorf("%q looks like a remote URL; write --remote=%s", k, k)}
		}
	}
	return nil
}

// keyArgs checks the KEY... of push and pull.
func keyArgs(cmd *cobra.Command, keys []string) error {
	if err := cobra.MinimumNArgs(1)(cmd, keys); err != nil {
		return err
	}
	return checkKeyArgs(keys)
}

// remote opens the remote of a remote command. In a build without the S3
// client it runs the helper instead and returns the helper's exit status as
// the error.
func (a *app) remote(rf *remoteFlags) (remote.Remote, error) {
	r, err := rf.open()
	if errors.Is(err, errNeedHelper) {
		return nil, a.delegate()
	}
	return r, err
}

// remoteAndCache is remote plus the cache.
func (a *app) remoteAndCache(rf *remoteFlags) (remote.Remote, *kcache.Cache, error) {
	r, err := a.remote(rf)
	if err != nil {
		return nil, nil, err
	}
	c, err := a.cache()
	return r, c, err
}

// transferProgress draws one self-overwriting line per blob on a terminal.
type transferProgress struct {
	w    io.Writer
	verb string
}

func newTransferProgress(w io.Writer, verb string) func(kcache.TransferProgress) {
	f, ok := w.(*os.File)
	if !ok || !isTerminal(f) {
		return nil
	}
	p := &transferProgress{w: w, verb: verb}
	return p.show
}

func (p *transferProgress) show(t kcache.TransferProgress) {
	fmt.Fprintf(p.w, "\r\x1b[K%s %s: %s %s / %s", p.verb, t.Key, t.Role, units.Size(t.Done), units.Size(t.Total))
	if t.Done == t.Total {
		fmt.Fprintln(p.w)
	}
}

// transferJSON is one key's line of push/pull --json.
type transferJSON struct {
	kcache.TransferReport
	Error     string `json:"error,omitempty"`
	ErrorKind string `json:"error_kind,omitempty"` // not_found, invalid, in_use, error
}

// transferKeys runs do for each key and reports the results: one line per
// key, or a JSON array. Every key is tried; the exit code is the worst.
func transferKeys(a *app, asJSON bool, keys []string, do func(key string) (*kcache.TransferReport, error), describe func(*kcache.TransferReport) string) error {
	var results []transferJSON
	code := exitOK
	for _, key := range keys {
		rep, err := do(key)
		res := transferJSON{TransferReport: kcache.TransferReport{Key: key, Blobs: []kcache.BlobTransfer{}}}
		if rep != nil {
			res.TransferReport = *rep
		}
		if err != nil {
			var c int
			res.ErrorKind, c = errorKind(err)
			code = worse(code, c)
			res.Error = errText(err)
			if !asJSON {
				fmt.Fprintf(a.stderr, "kcache: %s\n", errText(err))
			}
		} else if !asJSON {
			fmt.Fprintln(a.stdout, describe(rep))
		}
		results = append(results, res)
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
}

// moved summarises the blobs of a report: "2 blobs, 21.5 MiB uploaded" or
// "1 of 2 blobs (13.4 MiB) uploaded, 1 already there".
func moved(rep *kcache.TransferReport, verb string) string {
	n := 0
	for _, b := range rep.Blobs {
		if b.Transferred {
			n++
		}
	}
	switch {
	case n == 0:
		return fmt.Sprintf("no blob %s (all %d already there)", verb, len(rep.Blobs))
	case n == len(rep.Blobs):
		return fmt.Sprintf("%d blobs, %s %s", n, units.Size(rep.Bytes), verb)
	}
	return fmt.Sprintf("%d of %d blobs (%s) %s, %d already there", n, len(rep.Blobs), units.Size(rep.Bytes), verb, len(rep.Blobs)-n)
}

func newPushCmd(a *app) *cobra.Command {
	var rf remoteFlags
	var all, asJSON bool
	cmd := &cobra.Command{
		Use:   "push KEY... | --all",
		Short: "Copy cached kernels to the shared remote",
		Long: `Copy each KEY's entry to the remote: the blobs the remote does not have yet,
then the entry's manifest, so other machines never see an entry whose blobs
are missing. Blobs are shared between keys and skipped when already there,
so an interrupted push re-run sends only what is missing, and pushing an
unchanged entry again moves no blob bytes. Local paths (a local source's
tree path) are not sent.

Every KEY is tried; the exit code is the worst failure (3: KEY is not cached).
` + remoteHelp,
		Args: args(func(cmd *cobra.Command, keys []string) error {
			if all {
				return cobra.NoArgs(cmd, keys)
			}
			return keyArgs(cmd, keys)
		}),
		ValidArgsFunction: completeKeys(a),
		RunE: func(cmd *cobra.Command, keys []string) error {
			r, c, err := a.remoteAndCache(&rf)
			if err != nil {
				return err
			}
			if all {
				if keys, err = c.Keys(cmd.Context()); err != nil {
					return err
				}
			}
			ctx := cmd.Context()
			opt := kcache.TransferOptions{Progress: newTransferProgress(a.stderr, "push")}
			return transferKeys(a, asJSON, keys,
				func(key string) (*kcache.TransferReport, error) { return c.Push(ctx, r, key, opt) },
				func(rep *kcache.TransferReport) string {
					return fmt.Sprintf("pushed %s to %s: %s", rep.Key, rep.Remote, moved(rep, "uploaded"))
				})
		},
	}
	rf.add(cmd, "remote to push to, s3://BUCKET/PREFIX (default: $KCACHE_REMOTE)")
	cmd.Flags().BoolVar(&all, "all", false, "push every cached key")
	cmd.Flags().BoolVar(&asJSON, "json", false, `print [{"key","remote","blobs":[{"role","sha256","size","transferred"}],"bytes","error","error_kind"}]`)
	return cmd
}

func newPullCmd(a *app) *cobra.Command {
	var rf remoteFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "pull KEY...",
		Short: "Copy kernels from the shared remote into the cache",
		Long: `Install each KEY's entry from the remote. Blobs the cache already has are not
downloaded; every downloaded blob is checked against its sha256 before it is
used, and the entry appears only when all of them are in place, so a pull
that is killed leaves no partial entry and a re-run downloads only what is
still missing. A local entry with other content is replaced (as by store);
one that already matches is left alone ("up to date"). The key's lock is
taken only for the install, not during the download.

Every KEY is tried; the exit code is the worst failure (3: the remote has no
such key).
` + remoteHelp,
		Args: args(keyArgs),
		RunE: func(cmd *cobra.Command, keys []string) error {
			r, c, err := a.remoteAndCache(&rf)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			opt := kcache.TransferOptions{Progress: newTransferProgress(a.stderr, "pull")}
			return transferKeys(a, asJSON, keys,
				func(key string) (*kcache.TransferReport, error) { return c.Pull(ctx, r, key, opt) },
				func(rep *kcache.TransferReport) string {
					if rep.UpToDate {
						return fmt.Sprintf("%s is up to date with %s", rep.Key, rep.Remote)
					}
					return fmt.Sprintf("pulled %s from %s: %s", rep.Key, rep.Remote, moved(rep, "downloaded"))
				})
		},
	}
	rf.add(cmd, "remote to pull from, s3://BUCKET/PREFIX (default: $KCACHE_REMOTE)")
	cmd.Flags().BoolVar(&asJSON, "json", false, `print [{"key","remote","blobs":[{"role","sha256","size","transferred"}],"bytes","up_to_date","error","error_kind"}]`)
	return cmd
}

// remoteEntryJSON is one key of `remote ls --json`.
type remoteEntryJSON struct {
	Key             string  `json:"key"`
	Version         *string `json:"version"`
	Arch            string  `json:"arch,omitempty"`
	ImageName       string  `json:"image_name,omitempty"`
	BuiltAt         string  `json:"built_at,omitempty"`
	ConfigHash      *string `json:"config_hash"`
	KconfigHash     *string `json:"kconfig_hash"`
	HasVmlinux      bool    `json:"has_vmlinux"`
	VmlinuxStripped bool    `json:"vmlinux_stripped"`
	BuildID         *string `json:"build_id"`
	ImageSHA256     string  `json:"image_sha256,omitempty"`
	ImageSize       int64   `json:"image_size"`
	VmlinuxSHA256   *string `json:"vmlinux_sha256"`
	VmlinuxSize     *int64  `json:"vmlinux_size"`
	Pushed          string  `json:"pushed"` // when the manifest was written (RFC 3339)
	Error           string  `json:"error,omitempty"`
}

func toRemoteEntryJSON(e kcache.RemoteEntry) remoteEntryJSON {
	j := remoteEntryJSON{Key: e.Key, Pushed: e.Modified.UTC().Format(time.RFC3339), Error: e.Problem}
	if r := e.Record; r != nil {
		j.Version, j.Arch, j.ImageName, j.BuiltAt = r.Version, r.Arch, r.ImageName, r.BuiltAt
		j.ConfigHash, j.KconfigHash, j.HasVmlinux, j.VmlinuxStripped, j.BuildID = r.ConfigHash, r.KconfigHash, r.HasVmlinux, r.VmlinuxStripped, r.BuildID
		j.ImageSHA256, j.ImageSize = r.Image.Digest, r.Image.Size
		if r.Vmlinux != nil {
			j.VmlinuxSHA256, j.VmlinuxSize = &r.Vmlinux.Digest, &r.Vmlinux.Size
		}
	}
	return j
}

func newRemoteCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "remote",
		Short: "Inspect the shared remote",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usageError{errors.New("remote needs a subcommand: ls")}
		},
	}
	var rf remoteFlags
	var asJSON bool
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List the kernels on the remote",
		Long: `List every key the remote has, newest built_at first, with the kernel's
version, architecture and sizes (read from each key's manifest). A manifest
that cannot be used is listed last with the reason.
` + remoteHelp,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := a.remote(&rf)
			if err != nil {
				return err
			}
			entries, err := kcache.ListRemote(cmd.Context(), r)
			if err != nil {
				return err
			}
			if asJSON {
				out := make([]remoteEntryJSON, 0, len(entries))
				for _, e := range entries {
					out = append(out, toRemoteEntryJSON(e))
				}
				return writeJSON(a.stdout, out)
			}
			if len(entries) == 0 {
				fmt.Fprintf(a.stderr, "%s holds no kernels\n", r)
				return nil
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "KEY\tVERSION\tARCH\tBUILT\tSIZE\tPUSHED")
			for _, e := range entries {
				pushed := e.Modified.UTC().Format(time.RFC3339)
				if e.Record == nil {
					fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t%s  unusable: %s\n", e.Key, pushed, e.Problem)
					continue
				}
				r := e.Record
				size := r.Image.Size
				if r.Vmlinux != nil {
					size += r.Vmlinux.Size
				}
				version := "-"
				if r.Version != nil {
					version = *r.Version
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.Key, version, r.Arch, r.BuiltAt, units.Size(size), pushed)
			}
			return tw.Flush()
		},
	}
	rf.add(ls, "remote to list, s3://BUCKET/PREFIX (default: $KCACHE_REMOTE)")
	ls.Flags().BoolVar(&asJSON, "json", false, `print [{"key","version","arch","image_name","built_at",...,"pushed","error"}]`)
	cmd.AddCommand(ls)
	return cmd
}

// lookupRemote is lookup's --remote: pull on a local miss. Without the S3
// client built in, a local hit is answered here and only a miss runs the
// helper (which looks up again, pulls and counts the result).
func lookupRemote(ctx context.Context, a *app, c *kcache.Cache, rf *remoteFlags, key string) (*kcache.Entry, error) {
	r, err := rf.open()
	switch {
	case errors.Is(err, errNeedHelper):
		if _, derr := c.Describe(ctx, key); errors.Is(derr, kcache.ErrNotFound) {
			return nil, a.delegate()
		}
		return c.Lookup(ctx, key)
	case err != nil:
		return nil, err
	}
	return c.LookupRemote(ctx, r, key)
}
