package kcache_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"strings"
	"testing"
)

// TestEveryCacheMethodTakesContextFirst: every exported *Cache method but
// the pure path accessors takes ctx context.Context as its first parameter
// (what `go doc -all .` shows), so every call that opens the index, waits
// for a lock or reads blobs can be cancelled.
func TestEveryCacheMethodTakesContextFirst(t *testing.T) {
	accessors := map[string]bool{"Root": true, "IndexPath": true, "LockPath": true, "BlobPath": true}
	fset := token.NewFileSet()
	ents, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Recv == nil || !fd.Name.IsExported() {
				continue
			}
			star, ok := fd.Recv.List[0].Type.(*ast.StarExpr)
			if !ok {
				continue
			}
			if id, ok := star.X.(*ast.Ident); !ok || id.Name != "Cache" || accessors[fd.Name.Name] {
				continue
			}
			n++
			ps := fd.Type.Params.List
			if len(ps) == 0 || len(ps[0].Names) == 0 || ps[0].Names[0].Name != "ctx" {
				t.Errorf("%s: (*Cache).%s does not take ctx first", fset.Position(fd.Pos()), fd.Name.Name)
				continue
			}
			if sel, ok := ps[0].Type.(*ast.SelectorExpr); !ok || sel.Sel.Name != "Context" {
				t.Errorf("%s: (*Cache).%s: first parameter is not a context.Context", fset.Position(fd.Pos()), fd.Name.Name)
			}
		}
	}
	if n < 20 {
		t.Errorf("found only %d *Cache methods: is the test looking at the package?", n)
	}
}
