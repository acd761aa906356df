// Command legacycache drives internal/legacy (ktstr's directory layout) from
// the command line, so that bench/lookup.sh can time a legacy lookup as a
// whole Go process next to `kcache lookup`. It is a benchmark helper, not a
// tool:
//
//	legacycache store ROOT KEY IMAGE VMLINUX BUILT_AT
//	legacycache lookup ROOT KEY      prints the image path (and vmlinux path)
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/kcache/kcache/internal/legacy"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "legacycache:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	switch {
	case len(args) == 6 && args[0] == "store":
		v := "6.14.2"
		_, err := legacy.Store(args[1], args[2], args[3], args[4], legacy.Metadata{
			Version: &v, Source: legacy.Source{Type: "tarball"}, Arch: "x86_64",
			ImageName: "bzImage", BuiltAt: args[5],
		})
		return err
	case len(args) == 3 && args[0] == "lookup":
		e, err := legacy.Lookup(args[1], args[2])
		if err != nil {
			return err
		}
		fmt.Println(e.ImagePath())
		if e.Meta.HasVmlinux {
			fmt.Println(filepath.Join(e.Path, "vmlinux"))
		}
		return nil
	}
	return fmt.Errorf("usage: legacycache store ROOT KEY IMAGE VMLINUX BUILT_AT | lookup ROOT KEY")
}
