package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"

	"github.com/kcache/kcache"
	"github.com/kcache/kcache/strip"
	"github.com/spf13/cobra"
)

func newStoreCmd(a *app) *cobra.Command {
	var (
		image, vmlinux, imageName, version, source, gitHash, ref, sourceTree string
		arch, configFile, kconfigFile, kconfigHash, builtAt                  string
		asJSON                                                               bool
	)
	cmd := &cobra.Command{
		Use:   "store KEY --image PATH [--vmlinux PATH] [flags]",
		Short: "Copy a built kernel into the cache under KEY",
		Long: `Copy a built kernel into the cache under KEY, replacing any entry there
atomically (readers see the old entry or the new one). The source files are
copied, never moved. Store waits up to --lock-timeout (60 s) for harnesses
holding KEY, then fails with exit code 4.

The source type is --source, else git when --ref is given, local when
--source-tree is given, and tarball otherwise.`,
		Example: `  kcache store 6.14.2-tarball-x86_64 --image arch/x86/boot/bzImage --vmlinux vmlinux --version 6.14.2
  kcache store local-deadbee-x86_64 --image bzImage --vmlinux vmlinux --source-tree ~/linux --git-hash deadbee`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			key := argv[0]
			meta := kcache.Metadata{Arch: arch, ImageName: imageName, BuiltAt: builtAt}
			if meta.Arch == "" {
				meta.Arch = hostArch()
			}
			if meta.ImageName == "" {
				meta.ImageName = filepath.Base(image)
			}
			if version != "" {
				meta.Version = &version
			}
			if source == "" {
				switch {
				case ref != "":
					source = "git"
				case sourceTree != "":
					source = "local"
				default:
					source = "tarball"
				}
			}
			meta.Source.Type = source
			if gitHash != "" {
				meta.Source.GitHash = &gitHash
			}
			if ref != "" {
				meta.Source.Ref = &ref
			}
			if sourceTree != "" {
				if err := setSourceTree(&meta, sourceTree); err != nil {
					return err
				}
			}
			if configFile != "" {
				data, err := os.ReadFile(configFile)
				if err != nil {
					return fmt.Errorf("--config: %w", err)
				}
				h := kcache.CRC32Hex(data)
				meta.ConfigHash = &h
				if v, ok := strip.ConfigValue(string(data), "HZ"); ok {
					if hz, err := strconv.ParseUint(v, 10, 64); err == nil {
						meta.ConfigHZ = &hz
					}
				}
			}
			h, err := kconfigFlag(kconfigFile, kconfigHash)
			if err != nil {
				return err
			}
			if h != "" {
				meta.KconfigHash = &h
			}
			c, err := a.cache()
			if err != nil {
				return err
			}
			e, err := c.Store(cmd.Context(), key, kcache.Artifacts{Image: image, Vmlinux: vmlinux}, meta)
			if err != nil {
				return err
			}
			if asJSON {
				current, _ := c.KconfigHash() // the entry is stored; a failed read only loses kconfig_status
				return writeJSON(a.stdout, toEntryJSON(e, current))
			}
			fmt.Fprintf(a.stdout, "stored %s\n  image    %s (%s)\n", e.Key, e.ImagePath, humanSize(e.Image.Size))
			if e.Vmlinux != nil {
				fmt.Fprintf(a.stdout, "  vmlinux  %s (%s)\n", e.VmlinuxPath, humanSize(e.Vmlinux.Size))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&image, "image", "", "boot image to store (bzImage, Image); required")
	f.StringVar(&vmlinux, "vmlinux", "", "vmlinux ELF to store with it")
	f.StringVar(&imageName, "image-name", "", "file name of the boot image (default: base name of --image)")
	f.StringVar(&version, "version", "", "kernel version (tarball builds), e.g. 6.14.2")
	f.StringVar(&source, "source", "", "where the source came from: tarball, git or local")
	f.StringVar(&gitHash, "git-hash", "", "short git hash of the source (git and local sources)")
	f.StringVar(&ref, "ref", "", "git ref that was built (git sources)")
	f.StringVar(&sourceTree, "source-tree", "", "source tree that was built (local sources)")
	f.StringVar(&arch, "arch", "", "architecture, e.g. x86_64 or aarch64 (default: this machine's)")
	f.StringVar(&configFile, "config", "", "the build's .config; its CRC-32 is recorded as config_hash, and its CONFIG_HZ as config_hz when the vmlinux embeds no config")
	f.StringVar(&kconfigFile, "kconfig", "", "kconfig fragment the kernel was built with; its CRC-32 is recorded as kconfig_hash")
	f.StringVar(&kconfigHash, "kconfig-hash", "", "kconfig_hash to record (8 lowercase hex), instead of --kconfig")
	f.StringVar(&builtAt, "built-at", "", "build time, RFC 3339 (default: now)")
	f.BoolVar(&asJSON, "json", false, "print the stored entry as JSON")
	f.DurationVar(&a.lockTimeout, "lock-timeout", kcache.DefaultExclusiveTimeout, "how long to wait for processes holding KEY (e.g. 'kcache run') before failing with exit code 4")
	_ = cmd.MarkFlagRequired("image")
	cmd.MarkFlagsMutuallyExclusive("kconfig", "kconfig-hash")
	return cmd
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
		h, err := kcache.CRC32File(file)
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
