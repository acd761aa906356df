// Command harness is a small, complete test harness on the kcache library,
// meant to be copied: it gets a kernel from the cache (storing the given
// build on a miss), holds it while a "VM" boots it, and collects garbage.
// The VM here is a stand-in that reads the boot image; a real harness
// starts qemu with the same paths and hands it the hold (Held.File).
//
//	go run ./examples/harness -root /tmp/kc -key sample -image testdata/sample/bzImage -vmlinux testdata/sample/vmlinux
package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"time"

	"github.com/kcache/kcache"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "harness:", err)
		os.Exit(1)
	}
}

func run() error {
	root := flag.String("root", "", "cache root (default: kcache's default cache)")
	key := flag.String("key", "sample-6.1-x86_64", "cache key of the kernel")
	image := flag.String("image", "", "boot image to store on a miss")
	vmlinux := flag.String("vmlinux", "", "vmlinux to store on a miss (optional)")
	keep := flag.Int("keep", 5, "entries gc keeps (newest by built_at)")
	flag.Parse()

	// Ctrl-C cancels whatever kcache is waiting for.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	opt := &kcache.Options{Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	var c *kcache.Cache
	var err error
	if *root != "" {
		c, err = kcache.Open(*root, opt)
	} else {
		c, err = kcache.OpenDefault(opt)
	}
	if err != nil {
		return err
	}

	h, err := c.Hold(ctx, *key, kcache.HoldOptions{Timeout: 30 * time.Second})
	if errors.Is(err, kcache.ErrNotFound) || errors.Is(err, kcache.ErrCorruptEntry) {
		// A miss: a real harness builds the kernel here.
		if *image == "" {
			return fmt.Errorf("%s is not cached and no -image was given to store", *key)
		}
		fmt.Printf("miss: storing %s\n", *image)
		if _, err := c.Store(ctx, *key, kcache.Artifacts{Image: *image, Vmlinux: *vmlinux},
			kcache.Metadata{Source: kcache.Source{Type: "tarball"}, Arch: "x86_64", ImageName: "bzImage"}); err != nil {
			return err
		}
		h, err = c.Hold(ctx, *key, kcache.HoldOptions{Timeout: 30 * time.Second})
	}
	if err != nil {
		return err
	}
	defer h.Release()
	if err := boot(h.Entry); err != nil {
		return err
	}
	if err := h.Release(); err != nil {
		return err
	}

	l, err := c.List(ctx, kcache.ListOptions{})
	if err != nil {
		return err
	}
	fmt.Printf("cache %s holds %d entries\n", l.Root, len(l.Entries))
	rep, err := c.GC(ctx, kcache.GCOptions{Keep: keep})
	if err != nil {
		return err
	}
	fmt.Printf("gc kept the %d newest, removed %d, freed %d bytes\n", *keep, len(rep.Removed), rep.FreedBytes)
	return nil
}

// boot stands in for a VM: it reads the boot image the way qemu would and
// reports what it booted.
func boot(e *kcache.Entry) error {
	f, err := os.Open(e.ImagePath)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return err
	}
	fmt.Printf("booted %s: %s (%d bytes, sha256 %x)\n", e.Key, e.ImagePath, n, h.Sum(nil)[:8])
	if e.VmlinuxPath != "" {
		fmt.Printf("symbols from %s\n", e.VmlinuxPath)
	}
	return nil
}
