package events

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

var eventType = regexp.MustCompile(`^maestro\.[a-z_.]+\.v[0-9]+$`)

// Every event type constant of this package is in Types (except the
// other streams' (otherStream)), exactly once.
func TestCatalogueIsComplete(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var declared []string
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			if v, err := strconv.Unquote(lit.Value); err == nil && eventType.MatchString(v) && !otherStream(v) {
				declared = append(declared, v)
			}
			return true
		})
	}
	types := Types()
	for _, d := range declared {
		if !slices.Contains(types, d) {
			t.Errorf("event type %s is declared but not in Types()", d)
		}
	}
	seen := map[string]bool{}
	for _, ty := range types {
		if seen[ty] {
			t.Errorf("%s is in Types() twice", ty)
		}
		seen[ty] = true
	}
	if len(declared) < 20 {
		t.Fatalf("found only %d event type constants: the scan is broken", len(declared))
	}
}

// Every catalogued type names at least one aggregate, and CheckSubject
// holds a type to its aggregates.
func TestCheckSubject(t *testing.T) {
	for _, ty := range Types() {
		aggs := AggregatesOf(ty)
		if len(aggs) == 0 {
			t.Errorf("%s names no aggregate", ty)
			continue
		}
		for _, a := range aggs {
			if err := CheckSubject(ty, Subject(a, "x")); err != nil {
				t.Errorf("CheckSubject(%s, %s): %v", ty, a, err)
			}
		}
	}
	for _, bad := range []struct{ typ, subject string }{
		{ModelVersionRegistered, Subject(AggProject, "x")},
		{UserRegistered, Subject(AggSession, "x")},
		{"maestro.thing.happened.v1", Subject(AggModel, "x")},
	} {
		if err := CheckSubject(bad.typ, bad.subject); err == nil {
			t.Errorf("CheckSubject(%s, %s) = nil, want a refusal", bad.typ, bad.subject)
		}
	}
	if err := CheckSubject(LoginRejected, LoginRejectionsSubject("a@b.c")); err != nil {
		t.Errorf("a security-stream subject: %v", err)
	}
}

// otherStream reports whether typ is appended to a stream other than
// MAESTRO_EVENTS (security signals, metric points): the catalogue lists
// MAESTRO_EVENTS only.
func otherStream(typ string) bool {
	return strings.HasPrefix(typ, "maestro.security.") || typ == MetricsLogged
}
