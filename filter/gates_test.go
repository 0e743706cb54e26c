package filter_test

import (
	"strings"
	"testing"

	"github.com/maestro-ml/maestro/filter"
)

// The gate kind: the run language plus importance.<feature>, numeric only.
func TestGatesKind(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in, canonical, err string
	}{
		{in: "importance.age < 0.1", canonical: "importance.age < 0.1"},
		{in: "importances.age <= 1e-2 and metrics.auc >= 0.9", canonical: "importance.age <= 1e-2 AND metrics.auc >= 0.9"},
		{in: `importance."zip code" < 0.5`, canonical: "importance.`zip code` < 0.5"},
		{in: "importance.age < '0.1'", err: "expected a number for importance of feature 'age'"},
		{in: "importance.age LIKE 'a%'", err: "invalid comparator 'LIKE' for importance of feature 'age'"},
		{in: "importance.age IN ('a')", err: "invalid comparator 'IN'"},
	} {
		e, err := filter.Parse(filter.Gates, c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: err %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || e.String() != c.canonical || e.Clauses[0].Type != filter.Importance {
			t.Errorf("%s: %v %q", c.in, err, e.String())
		}
	}
	// Other kinds do not know importance.
	if _, err := filter.Parse(filter.Runs, "importance.age < 0.1"); err == nil {
		t.Error("run search accepted importance.age")
	}
	e, _ := filter.Parse(filter.Gates, "importance.age < 0.1 AND metrics.auc >= 0.9")
	for _, m := range []struct {
		v    filter.Values
		want bool
	}{
		{filter.Values{Metrics: map[string]float64{"auc": 0.95}, Importances: map[string]float64{"age": 0.05}}, true},
		{filter.Values{Metrics: map[string]float64{"auc": 0.95}, Importances: map[string]float64{"age": 0.5}}, false},
		{filter.Values{Metrics: map[string]float64{"auc": 0.95}}, false},              // no importance: never matches
		{filter.Values{Metrics: map[string]float64{"auc": 0.95, "age": 0.01}}, false}, // a metric is not an importance
		{filter.Values{Metrics: map[string]float64{"auc": 0.5}, Importances: map[string]float64{"age": 0.05}}, false},
	} {
		if got := e.Match(m.v); got != m.want {
			t.Errorf("Match(%+v) = %v, want %v", m.v, got, m.want)
		}
	}
}
