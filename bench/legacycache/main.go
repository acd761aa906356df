// Command legacycache drives internal/legacy (ktstr's directory layout) from
// the command line, so that bench/lookup.sh can time a legacy lookup as a
// whole Go process next to `kcache lookup`. It is a benchmark helper, not a
// tool:
//
//	legacycache store ROOT KEY IMAGE VMLINUX BUILT_AT
//	legacycache lookup ROOT KEY      prints the image path (and vmlinux path)
//	legacycache list ROOT            prints every entry as JSON, as `kcache list
//	                                 --json` does (bench/list10k.sh)
package main

import (
	"bufio"
	"encoding/json"
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
	case len(args) == 2 && args[0] == "list":
		return list(args[1])
	}
	return fmt.Errorf("usage: legacycache store ROOT KEY IMAGE VMLINUX BUILT_AT | lookup ROOT KEY | list ROOT")
}

// list reads the whole cache the way ktstr lists it (legacy.List: read,
// parse and stat every entry, sort newest first) and prints it as indented
// JSON, one object per entry with its key, paths and metadata, or its
// corruption reason; the work of `kcache list --json`.
func list(root string) error {
	l, err := legacy.List(root)
	if err != nil {
		return err
	}
	type row struct {
		Key         string           `json:"key"`
		Path        string           `json:"path"`
		ImagePath   string           `json:"image_path,omitempty"`
		VmlinuxPath *string          `json:"vmlinux_path"`
		Metadata    *legacy.Metadata `json:"metadata,omitempty"`
		Error       string           `json:"error,omitempty"`
	}
	rows := make([]row, 0, len(l))
	for _, le := range l {
		r := row{Key: le.Key, Path: filepath.Join(root, le.Key), Error: le.Corrupt}
		if e := le.Entry; e != nil {
			r.ImagePath, r.Metadata = e.ImagePath(), &e.Meta
			if e.Meta.HasVmlinux {
				p := filepath.Join(e.Path, "vmlinux")
				r.VmlinuxPath = &p
			}
		}
		rows = append(rows, r)
	}
	w := bufio.NewWriter(os.Stdout)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rows); err != nil {
		return err
	}
	return w.Flush()
}
