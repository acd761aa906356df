package kcache_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/kcache/kcache"
)

// exampleRoot makes a throwaway cache root for an example.
func exampleRoot() string {
	dir, err := os.MkdirTemp("", "kcache-example-")
	if err != nil {
		log.Fatal(err)
	}
	return filepath.Join(dir, "cache")
}

// sampleMeta describes the sample kernel in testdata/sample.
func sampleMeta(builtAt string) kcache.Metadata {
	v := "6.1.0"
	return kcache.Metadata{Version: &v, Source: kcache.Source{Type: "tarball"}, Arch: "x86_64", ImageName: "bzImage", BuiltAt: builtAt}
}

// Open a cache and store a kernel a build produced: its boot image and its
// vmlinux, which the cache strips to symbols, BTF and the embedded config.
func Example_store() {
	root := exampleRoot()
	defer os.RemoveAll(filepath.Dir(root))
	c, err := kcache.Open(root, nil)
	if err != nil {
		log.Fatal(err)
	}
	e, err := c.Store(context.Background(), "6.1.0-tarball-x86_64",
		kcache.Artifacts{Image: "testdata/sample/bzImage", Vmlinux: "testdata/sample/vmlinux"},
		sampleMeta("2026-01-02T03:04:05Z"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(e.Key, e.ImageName, e.HasVmlinux, e.VmlinuxStripped)
	// Output: 6.1.0-tarball-x86_64 bzImage true true
}

// Hold an entry for as long as a VM boots it: rm, clean and gc skip a held
// entry, and a store replacing it waits for Release, so the paths stay
// valid.
func ExampleCache_Hold() {
	root := exampleRoot()
	defer os.RemoveAll(filepath.Dir(root))
	c, err := kcache.Open(root, nil)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.Store(ctx, "k", kcache.Artifacts{Image: "testdata/sample/bzImage"}, sampleMeta("")); err != nil {
		log.Fatal(err)
	}
	h, err := c.Hold(ctx, "k", kcache.HoldOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer h.Release()
	// boot(h.Entry.ImagePath, h.Entry.VmlinuxPath) ...
	err = c.Remove(ctx, "k", kcache.RemoveOptions{})
	fmt.Println("remove while held:", errors.Is(err, kcache.ErrInUse))
	// Output: remove while held: true
}

// A miss is an error matching ErrNotFound: build the kernel, store it, and
// look again. Looking up a missing key creates nothing on disk.
func ExampleCache_Lookup_miss() {
	root := exampleRoot()
	defer os.RemoveAll(filepath.Dir(root))
	c, err := kcache.Open(root, nil)
	if err != nil {
		log.Fatal(err)
	}
	_, err = c.Lookup(context.Background(), "6.14.2-tarball-x86_64")
	if errors.Is(err, kcache.ErrNotFound) {
		fmt.Println("not cached: build it")
	}
	_, statErr := os.Stat(root)
	fmt.Println("root created:", statErr == nil)
	// Output:
	// not cached: build it
	// root created: false
}

// Collect garbage with a keep policy: the newest entries by built_at
// survive, and the others are removed with the blobs no survivor uses.
func ExampleCache_GC() {
	root := exampleRoot()
	defer os.RemoveAll(filepath.Dir(root))
	c, err := kcache.Open(root, nil)
	if err != nil {
		log.Fatal(err)
	}
	for i, day := range []string{"01", "02", "03"} {
		key := fmt.Sprintf("build-%d", i)
		if _, err := c.Store(context.Background(), key, kcache.Artifacts{Image: "testdata/sample/bzImage"}, sampleMeta("2026-01-"+day+"T00:00:00Z")); err != nil {
			log.Fatal(err)
		}
	}
	keep := 2
	rep, err := c.GC(context.Background(), kcache.GCOptions{Keep: &keep})
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range rep.Removed {
		fmt.Println("removed", r.Key)
	}
	// Output: removed build-0
}

// List every entry, newest built_at first; corrupt entries come last with
// the reason they cannot be used.
func ExampleCache_List() {
	root := exampleRoot()
	defer os.RemoveAll(filepath.Dir(root))
	c, err := kcache.Open(root, nil)
	if err != nil {
		log.Fatal(err)
	}
	for _, k := range []string{"older", "newer"} {
		at := "2026-01-01T00:00:00Z"
		if k == "newer" {
			at = "2026-02-01T00:00:00Z"
		}
		if _, err := c.Store(context.Background(), k, kcache.Artifacts{Image: "testdata/sample/bzImage"}, sampleMeta(at)); err != nil {
			log.Fatal(err)
		}
	}
	l, err := c.List(context.Background(), kcache.ListOptions{})
	if err != nil {
		log.Fatal(err)
	}
	for _, e := range l.Entries {
		if e.Corrupt != nil {
			fmt.Println(e.Key, "corrupt:", e.Corrupt.Kind)
			continue
		}
		fmt.Println(e.Key, e.Entry.BuiltAt)
	}
	// Output:
	// newer 2026-02-01T00:00:00Z
	// older 2026-01-01T00:00:00Z
}
