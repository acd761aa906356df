package kcache_test

import (
	"context"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/kcache/kcache"
)

// cliWords finds a string that names a kcache command ("kcache rm", "`kcache
// doctor`") or a command-line flag ("--force").
var cliWords = regexp.MustCompile("kcache (store|lookup|list|ls|show|config|strip|rm|run|locks|clean|gc|verify|doctor|stats|migrate|export|pin|unpin|kconfig|version|push|pull|remote)\\b|(^|[\\s(`'\"])--[a-z][a-z-]+")

// reportValues are string literals of the library that are values in a
// report's JSON, pinned by the CLI's output contract (gc and clean JSON
// "reason"): they name the policy the way the user wrote it. Moving their
// wording into the CLI changes the library's report types (issue 14's
// schema table); until then they are the only exception.
var reportValues = map[string]bool{"clean --corrupt-only": true, "clean --keep %d": true}

// TestLibraryStringsNameNoCLI: no string literal in the library (every
// non-test .go file outside cmd/, bench/, examples/ and the test machinery
// under internal/ that starts servers or builds fixtures) names a kcache
// command or a flag: errors carry data, the CLI adds the advice.
func TestLibraryStringsNameNoCLI(t *testing.T) {
	skip := map[string]bool{"cmd": true, "bench": true, "examples": true, "testdata": true,
		filepath.Join("internal", "s3test"): true, filepath.Join("internal", "legacy"): true, filepath.Join("internal", "ktstrfixture"): true}
	fset := token.NewFileSet()
	var bad []string
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if skip[p] || strings.HasPrefix(d.Name(), ".") && p != "." {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, p, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			s, err := strconv.Unquote(lit.Value)
			if err != nil || reportValues[s] {
				return true
			}
			if cliWords.MatchString(s) {
				bad = append(bad, fset.Position(lit.Pos()).String()+": "+s)
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(bad) > 0 {
		t.Errorf("library strings name a kcache command or a flag (hints belong in cmd/kcache):\n%s", strings.Join(bad, "\n"))
	}
}

// TestTypedErrorsCarryData: the errors a harness meets expose their facts
// as fields, and match their sentinels.
func TestTypedErrorsCarryData(t *testing.T) {
	c := mustOpen(filepath.Join(t.TempDir(), "cache"), nil)
	_, err := c.Lookup(context.Background(), "nope")
	var nf *kcache.NotFoundError
	if !errors.As(err, &nf) || nf.Key != "nope" || !errors.Is(err, kcache.ErrNotFound) {
		t.Errorf("Lookup of a missing key = %#v; want *NotFoundError{Key: nope}", err)
	}
	holdStore(t, c, "k", "bytes")
	if err := c.Pin(context.Background(), "k", "bisect base"); err != nil {
		t.Fatal(err)
	}
	var pe *kcache.PinnedError
	if err := c.Remove(context.Background(), "k", kcache.RemoveOptions{}); !errors.As(err, &pe) || pe.Key != "k" || pe.Reason != "bisect base" || !errors.Is(err, kcache.ErrPinned) {
		t.Errorf("Remove of a pinned entry = %v; want *PinnedError{k, bisect base}", err)
	}
	e, err := c.Describe(context.Background(), "k")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(e.ImagePath); err != nil {
		t.Fatal(err)
	}
	var ce *kcache.CorruptError
	if _, err := c.Lookup(context.Background(), "k"); !errors.As(err, &ce) || ce.Key != "k" || ce.Kind != "image_missing" || !errors.Is(err, kcache.ErrCorruptEntry) {
		t.Errorf("Lookup with the image gone = %v; want *CorruptError{k, image_missing}", err)
	}
}
