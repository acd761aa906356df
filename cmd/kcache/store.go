package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/kcache/kcache"
	"github.com/kcache/kcache/internal/crc"
	"github.com/kcache/kcache/strip"
	"github.com/spf13/cobra"
)

// storeSpec is one store: the flags of `kcache store`, or one line of
// `kcache store --batch` (JSON field names in the tags). Empty means unset.
type storeSpec struct {
	Key         string `json:"key"`
	Image       string `json:"image"`
	Vmlinux     string `json:"vmlinux"`
	ImageName   string `json:"image_name"`
	Version     string `json:"version"`
	Source      string `json:"source"`
	GitHash     string `json:"git_hash"`
	Ref         string `json:"ref"`
	SourceTree  string `json:"source_tree"`
	Arch        string `json:"arch"`
	Config      string `json:"config"`
	Kconfig     string `json:"kconfig"`
	KconfigHash string `json:"kconfig_hash"`
	BuiltAt     string `json:"built_at"`
}

// metadata turns the spec into the library's Metadata.
func (sp *storeSpec) metadata() (kcache.Metadata, error) {
	meta := kcache.Metadata{Arch: sp.Arch, ImageName: sp.ImageName, BuiltAt: sp.BuiltAt}
	if meta.Arch == "" {
		meta.Arch = hostArch()
	}
	if meta.ImageName == "" {
		meta.ImageName = filepath.Base(sp.Image)
	}
	if sp.Version != "" {
		v := sp.Version
		meta.Version = &v
	}
	source := sp.Source
	if source == "" {
		switch {
		case sp.Ref != "":
			source = "git"
		case sp.SourceTree != "":
			source = "local"
		default:
			source = "tarball"
		}
	}
	meta.Source.Type = source
	if sp.GitHash != "" {
		h := sp.GitHash
		meta.Source.GitHash = &h
	}
	if sp.Ref != "" {
		r := sp.Ref
		meta.Source.Ref = &r
	}
	if sp.SourceTree != "" {
		if err := setSourceTree(&meta, sp.SourceTree); err != nil {
			return meta, err
		}
	}
	if sp.Config != "" {
		data, err := os.ReadFile(sp.Config)
		if err != nil {
			return meta, fmt.Errorf("--config: %w", err)
		}
		h := crc.Hex(data)
		meta.ConfigHash = &h
		if v, ok := strip.ConfigValue(string(data), "HZ"); ok {
			if hz, err := strconv.ParseUint(v, 10, 64); err == nil {
				meta.ConfigHZ = &hz
			}
		}
	}
	h, err := kconfigFlag(sp.Kconfig, sp.KconfigHash)
	if err != nil {
		return meta, err
	}
	if h != "" {
		meta.KconfigHash = &h
	}
	return meta, nil
}

func newStoreCmd(a *app) *cobra.Command {
	var (
		sp                storeSpec
		asJSON, batchJSON bool
		batch             bool
	)
	cmd := &cobra.Command{
		Use:   "store KEY --image PATH [--vmlinux PATH] [flags]\n  kcache store --batch [flags] < LINES",
		Short: "Copy a built kernel into the cache under KEY",
		Long: `Copy a built kernel into the cache under KEY, replacing any entry there
atomically (readers see the old entry or the new one). The source files are
copied, never moved. Store waits up to --lock-timeout (60 s) for harnesses
holding KEY, then fails with exit code 4.

The source type is --source, else git when --ref is given, local when
--source-tree is given, and tarball otherwise.

--batch stores many kernels in one process, one per line of standard input:
"KEY IMAGE [VMLINUX]" separated by blanks, or with --batch-json one JSON
object per line with the fields key, image, vmlinux, image_name, version,
source, git_hash, ref, source_tree, arch, config, kconfig, kconfig_hash and
built_at (for keys or paths with blanks). The other flags give every line's
defaults; a JSON field overrides its flag. Blank lines are skipped. Lines are
stored one after another, each atomic and durable before its result is
printed: the store's usual output (with --json, one compact JSON object per
line: {"line", "key", "ok", "entry"} or {"line", "key", "ok": false,
"exit_code", "error"}). A failed line is reported (on stderr without --json)
and the next one is stored. Exit 0 when every line was stored, 1 when any
failed or the input could not be read.`,
		Example: `  kcache store 6.14.2-tarball-x86_64 --image arch/x86/boot/bzImage --vmlinux vmlinux --version 6.14.2
  kcache store local-deadbee-x86_64 --image bzImage --vmlinux vmlinux --source-tree ~/linux --git-hash deadbee
  printf '%s\n' 'k1 out1/bzImage out1/vmlinux' 'k2 out2/bzImage out2/vmlinux' | kcache store --batch --version 6.14.2`,
		Args: args(func(cmd *cobra.Command, argv []string) error {
			if batch || batchJSON {
				if len(argv) != 0 {
					return fmt.Errorf("store --batch takes no KEY: each line of standard input names one")
				}
				for _, f := range []string{"image", "vmlinux"} {
					if cmd.Flags().Changed(f) {
						return fmt.Errorf("store --batch takes no --%s: each line of standard input names its files", f)
					}
				}
				return nil
			}
			if err := cobra.ExactArgs(1)(cmd, argv); err != nil {
				return err
			}
			if !cmd.Flags().Changed("image") { // what MarkFlagRequired said before --batch
				return fmt.Errorf(`required flag(s) "image" not set`)
			}
			return nil
		}),
		RunE: func(cmd *cobra.Command, argv []string) error {
			if batch || batchJSON {
				return storeBatch(cmd, a, sp, batchJSON, asJSON)
			}
			sp.Key = argv[0]
			meta, err := sp.metadata()
			if err != nil {
				return err
			}
			c, err := a.cache()
			if err != nil {
				return err
			}
			e, err := c.Store(cmd.Context(), sp.Key, kcache.Artifacts{Image: sp.Image, Vmlinux: sp.Vmlinux}, meta)
			if err != nil {
				return err
			}
			if asJSON {
				current, _ := c.KconfigHash(cmd.Context()) // the entry is stored; a failed read only loses kconfig_status
				return writeJSON(a.stdout, toEntryJSON(e, current))
			}
			printStored(a.stdout, e)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&sp.Image, "image", "", "boot image to store (bzImage, Image); required")
	f.StringVar(&sp.Vmlinux, "vmlinux", "", "vmlinux ELF to store with it")
	f.StringVar(&sp.ImageName, "image-name", "", "file name of the boot image (default: base name of --image)")
	f.StringVar(&sp.Version, "version", "", "kernel version (tarball builds), e.g. 6.14.2")
	f.StringVar(&sp.Source, "source", "", "where the source came from: tarball, git or local")
	f.StringVar(&sp.GitHash, "git-hash", "", "short git hash of the source (git and local sources)")
	f.StringVar(&sp.Ref, "ref", "", "git ref that was built (git sources)")
	f.StringVar(&sp.SourceTree, "source-tree", "", "source tree that was built (local sources)")
	f.StringVar(&sp.Arch, "arch", "", "architecture, e.g. x86_64 or aarch64 (default: this machine's)")
	f.StringVar(&sp.Config, "config", "", "the build's .config; its CRC-32 is recorded as config_hash, and its CONFIG_HZ as config_hz when the vmlinux embeds no config")
	f.StringVar(&sp.Kconfig, "kconfig", "", "kconfig fragment the kernel was built with; its CRC-32 is recorded as kconfig_hash")
	f.StringVar(&sp.KconfigHash, "kconfig-hash", "", "kconfig_hash to record (8 lowercase hex), instead of --kconfig")
	f.StringVar(&sp.BuiltAt, "built-at", "", "build time, RFC 3339 (default: now)")
	f.BoolVar(&asJSON, "json", false, "print the stored entry as JSON (with --batch: one JSON object per input line)")
	f.BoolVar(&batch, "batch", false, `store one kernel per line of standard input: "KEY IMAGE [VMLINUX]"`)
	f.BoolVar(&batchJSON, "batch-json", false, "like --batch, but each line is a JSON object (key, image, vmlinux, ...; see above)")
	f.DurationVar(&a.lockTimeout, "lock-timeout", kcache.DefaultExclusiveTimeout, "how long to wait for processes holding KEY (e.g. 'kcache run') before failing with exit code 4")
	cmd.MarkFlagsMutuallyExclusive("kconfig", "kconfig-hash")
	cmd.MarkFlagsMutuallyExclusive("batch", "batch-json")
	return cmd
}

// printStored is store's text output for one stored entry.
func printStored(w io.Writer, e *kcache.Entry) {
	fmt.Fprintf(w, "stored %s\n  image    %s (%s)\n", e.Key, e.ImagePath, humanSize(e.Image.Size))
	if e.Vmlinux != nil {
		fmt.Fprintf(w, "  vmlinux  %s (%s)\n", e.VmlinuxPath, humanSize(e.Vmlinux.Size))
	}
}

// maxBatchLine bounds one line of `store --batch` input.
const maxBatchLine = 1 << 20

// batchResult is one line's report of `store --batch --json`.
type batchResult struct {
	Line     int        `json:"line"`
	Key      string     `json:"key"`
	OK       bool       `json:"ok"`
	Entry    *entryJSON `json:"entry,omitempty"`
	ExitCode int        `json:"exit_code,omitempty"`
	Error    string     `json:"error,omitempty"`
}

// storeBatch is `store --batch`: one store per line of standard input, each
// reported after it returned (durable), failures counted, not fatal.
func storeBatch(cmd *cobra.Command, a *app, defaults storeSpec, jsonLines, asJSON bool) error {
	c, err := a.cache()
	if err != nil {
		return err
	}
	enc := json.NewEncoder(a.stdout)
	enc.SetEscapeHTML(false)
	sc := bufio.NewScanner(cmd.InOrStdin())
	sc.Buffer(make([]byte, 0, 64<<10), maxBatchLine)
	lines, failed := 0, 0
	for n := 1; sc.Scan(); n++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		lines++
		sp, err := parseBatchLine(text, defaults, jsonLines)
		var e *kcache.Entry
		if err == nil {
			var meta kcache.Metadata
			if meta, err = sp.metadata(); err == nil {
				e, err = c.Store(cmd.Context(), sp.Key, kcache.Artifacts{Image: sp.Image, Vmlinux: sp.Vmlinux}, meta)
			}
		}
		if err != nil {
			failed++
			if asJSON {
				if werr := enc.Encode(batchResult{Line: n, Key: sp.Key, ExitCode: exitCode(err), Error: errText(err)}); werr != nil {
					return werr
				}
			} else {
				fmt.Fprintf(a.stderr, "kcache: line %d: %s\n", n, errText(err))
			}
			continue
		}
		if asJSON {
			current, _ := c.KconfigHash(cmd.Context()) // the entry is stored; a failed read only loses kconfig_status
			ej := toEntryJSON(e, current)
			if werr := enc.Encode(batchResult{Line: n, Key: e.Key, OK: true, Entry: &ej}); werr != nil {
				return werr
			}
		} else {
			printStored(a.stdout, e)
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			err = fmt.Errorf("a line is longer than %d bytes", maxBatchLine)
		}
		return fmt.Errorf("store --batch: reading standard input after %d lines (%d failed): %w", lines, failed, err)
	}
	if failed > 0 {
		return fmt.Errorf("store --batch: %d of %d stores failed", failed, lines)
	}
	return nil
}

// parseBatchLine reads one non-blank line of `store --batch` input over the
// defaults from the flags. A JSON field that is absent or "" keeps the
// default; a line giving kconfig or kconfig_hash drops both defaults.
func parseBatchLine(text string, defaults storeSpec, jsonLine bool) (storeSpec, error) {
	sp := defaults
	if !jsonLine {
		f := strings.Fields(text)
		if len(f) < 2 || len(f) > 3 {
			return storeSpec{Key: f[0]}, usageError{fmt.Errorf(`want "KEY IMAGE [VMLINUX]", got %d fields (use --batch-json for keys or paths with blanks)`, len(f))}
		}
		sp.Key, sp.Image = f[0], f[1]
		if len(f) == 3 {
			sp.Vmlinux = f[2]
		}
		return sp, nil
	}
	var line storeSpec
	dec := json.NewDecoder(strings.NewReader(text))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&line); err != nil {
		return storeSpec{Key: line.Key}, usageError{fmt.Errorf("not a JSON store object: %w", err)}
	}
	if dec.More() {
		return storeSpec{Key: line.Key}, usageError{errors.New("more than one JSON value on the line")}
	}
	if line.Key == "" || line.Image == "" {
		return storeSpec{Key: line.Key}, usageError{errors.New(`"key" and "image" are required`)}
	}
	if line.Kconfig != "" && line.KconfigHash != "" {
		return storeSpec{Key: line.Key}, usageError{errors.New(`"kconfig" and "kconfig_hash" exclude each other`)}
	}
	if line.Kconfig != "" || line.KconfigHash != "" {
		sp.Kconfig, sp.KconfigHash = "", ""
	}
	over := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	over(&sp.Key, line.Key)
	over(&sp.Image, line.Image)
	over(&sp.Vmlinux, line.Vmlinux)
	over(&sp.ImageName, line.ImageName)
	over(&sp.Version, line.Version)
	over(&sp.Source, line.Source)
	over(&sp.GitHash, line.GitHash)
	over(&sp.Ref, line.Ref)
	over(&sp.SourceTree, line.SourceTree)
	over(&sp.Arch, line.Arch)
	over(&sp.Config, line.Config)
	over(&sp.Kconfig, line.Kconfig)
	over(&sp.KconfigHash, line.KconfigHash)
	over(&sp.BuiltAt, line.BuiltAt)
	return sp, nil
}

// setSourceTree records the canonical tree path and, when the tree has a
// vmlinux, its size and mtime (so tools can tell whether the tree still holds
// the same build).
func setSourceTree(meta *kcache.Metadata, tree string) error {
	abs, err := filepath.Abs(tree)
	if err == nil {
		abs, err = filepath.EvalSymlinks(abs)
	}
	if err != nil {
		return fmt.Errorf("--source-tree %s: %w", tree, err)
	}
	meta.Source.SourceTreePath = &abs
	if fi, err := os.Stat(filepath.Join(abs, "vmlinux")); err == nil && fi.Mode().IsRegular() {
		size, mtime := uint64(fi.Size()), fi.ModTime().Unix()
		meta.SourceVmlinuxSize, meta.SourceVmlinuxMtimeSecs = &size, &mtime
	}
	return nil
}

// kconfigFlag turns --kconfig FILE or --kconfig-hash HEX into a hash ("" if neither).
func kconfigFlag(file, hash string) (string, error) {
	if file != "" {
		h, err := crc.File(file)
		if err != nil {
			return "", fmt.Errorf("--kconfig: %w", err)
		}
		return h, nil
	}
	return hash, nil
}

// hostArch spells this machine's architecture the way kernel builds do.
func hostArch() string {
	switch runtime.GOARCH {
	case "amd64":
		return "x86_64"
	case "arm64":
		return "aarch64"
	case "386":
		return "i386"
	}
	return runtime.GOARCH
}
