package filter_test

import (
	"fmt"

	"github.com/maestro-ml/maestro/filter"
)

// A promotion gate: a filter evaluated over a model version's metrics.
func ExampleExpr_Match() {
	gate, err := filter.Parse(filter.Runs, "metrics.auc >= 0.9 and metrics.latency_ms < 50")
	if err != nil {
		panic(err)
	}
	fmt.Println(gate)
	fmt.Println(gate.Match(filter.Values{Metrics: map[string]float64{"auc": 0.93, "latency_ms": 41}}))
	fmt.Println(gate.Match(filter.Values{Metrics: map[string]float64{"auc": 0.93}})) // no latency: no match
	// Output:
	// metrics.auc >= 0.9 AND metrics.latency_ms < 50
	// true
	// false
}

// A malformed filter names where it goes wrong.
func ExampleParse() {
	_, err := filter.Parse(filter.Runs, "metrics.auc > 0.9 OR params.lr = '0.01'")
	fmt.Println(err)
	_, err = filter.Parse(filter.Experiments, "params.lr = '0.01'")
	fmt.Println(err)
	// Output:
	// filter: at position 19: OR is not supported: a filter is comparisons joined by AND
	// filter: at position 1: invalid entity type 'params'; valid types for experiments are 'attr', 'attribute', 'attributes', 'tag', 'tags'
}
