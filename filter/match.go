package filter

import (
	"math"
	"strings"
)

// Values are one entity's values as Match sees them.
type Values struct {
	Metrics map[string]float64
	Params  map[string]string
	Tags    map[string]string
	// Attributes by canonical key: a string, or a number (int64 or float64).
	Attributes map[string]any
	// Importances are features' global importances (gates: Importance).
	Importances map[string]float64
}

// Match reports whether v satisfies every comparison of e, as a search
// would: a key v lacks never matches, whatever the operator; a NaN metric
// compares false except with != (IEEE 754), so the gate
// `metrics.auc >= 0.9` refuses a NaN auc; LIKE and ILIKE take % and _ with
// \ as the escape, as PostgreSQL does. Dataset comparisons match nothing.
func (e Expr) Match(v Values) bool {
	for _, c := range e.Clauses {
		if !c.match(v) {
			return false
		}
	}
	return true
}

func (c Comparison) match(v Values) bool {
	switch c.Type {
	case Metric:
		x, ok := v.Metrics[c.Key]
		return ok && compareFloat(x, c.Op, c.Value.Num)
	case Importance:
		x, ok := v.Importances[c.Key]
		return ok && compareFloat(x, c.Op, c.Value.Num)
	case Param:
		x, ok := v.Params[c.Key]
		return ok && matchString(x, c.Op, c.Value)
	case Tag:
		x, ok := v.Tags[c.Key]
		return ok && matchString(x, c.Op, c.Value)
	case Attribute:
		switch x := v.Attributes[c.Key].(type) {
		case string:
			return c.Value.Kind != Number && matchString(x, c.Op, c.Value)
		case int64:
			if n, ok := c.Value.Int(); ok {
				return compareInt(x, c.Op, n)
			}
			return c.Value.Kind == Number && compareFloat(float64(x), c.Op, c.Value.Num)
		case float64:
			return c.Value.Kind == Number && compareFloat(x, c.Op, c.Value.Num)
		}
	}
	return false
}

func compareFloat(x float64, op Op, y float64) bool {
	if math.IsNaN(x) || math.IsNaN(y) {
		return op == Ne
	}
	return compare(x, op, y)
}

func compareInt(x int64, op Op, y int64) bool { return compare(x, op, y) }

func compare[T int64 | float64](x T, op Op, y T) bool {
	switch op {
	case Eq:
		return x == y
	case Ne:
		return x != y
	case Lt:
		return x < y
	case Le:
		return x <= y
	case Gt:
		return x > y
	case Ge:
		return x >= y
	}
	return false
}

func matchString(x string, op Op, v Value) bool {
	switch op {
	case Eq:
		return x == v.Text
	case Ne:
		return x != v.Text
	case Like:
		return MatchLike(x, v.Text)
	case ILike:
		return MatchLike(strings.ToLower(x), strings.ToLower(v.Text))
	case In, NotIn:
		found := false
		for _, s := range v.List {
			if s == x {
				found = true
				break
			}
		}
		return found == (op == In)
	}
	return false
}

// MatchLike reports whether s matches the SQL LIKE pattern: % any run of
// characters, _ one character, \ makes the next character literal (a
// trailing \, which Parse refuses, matches itself).
func MatchLike(s, pattern string) bool {
	str, pat := []rune(s), []rune(pattern)
	// Greedy matching with one backtrack point (the last %), which is
	// enough for LIKE: O(len(s)·len(pattern)) at worst.
	si, pi := 0, 0
	starP, starS := -1, 0
	for si < len(str) {
		if pi < len(pat) {
			switch p := pat[pi]; {
			case p == '%':
				starP, starS = pi, si
				pi++
				continue
			case p == '_':
				si++
				pi++
				continue
			case p == '\\' && pi+1 < len(pat):
				if pat[pi+1] == str[si] {
					si++
					pi += 2
					continue
				}
			default:
				if p == str[si] {
					si++
					pi++
					continue
				}
			}
		}
		if starP < 0 {
			return false
		}
		starS++
		si, pi = starS, starP+1
	}
	for pi < len(pat) && pat[pi] == '%' {
		pi++
	}
	return pi == len(pat)
}
