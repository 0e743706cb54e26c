package explain_test

import (
	"fmt"

	"github.com/maestro-ml/maestro/explain"
)

func ExampleValidate() {
	err := explain.Validate([]byte(`{"schema_version": 1, "dataset": {"name": "holdout", "rows": 200},
		"feature_importances": [{"feature": "age", "method": "permutation", "score": "high"}]}`))
	fmt.Println(err)
	// Output: /feature_importances/0/score: got string, want number
}

func ExampleCompare() {
	prev, _ := explain.Parse([]byte(`{"schema_version": 1, "dataset": {"name": "holdout", "rows": 200},
		"feature_importances": [{"feature": "age", "method": "permutation", "score": 0.5},
		                        {"feature": "zip", "method": "permutation", "score": 0.1}]}`))
	cur, _ := explain.Parse([]byte(`{"schema_version": 1, "dataset": {"name": "holdout", "rows": 200},
		"feature_importances": [{"feature": "age", "method": "permutation", "score": 0.2},
		                        {"feature": "income", "method": "permutation", "score": 0.4}]}`))
	for _, c := range explain.Compare(prev, cur) {
		fmt.Printf("%s %s %+.1f\n", c.Feature, c.Status, c.Change)
	}
	// Output:
	// income new +0.4
	// age changed -0.3
	// zip gone -0.1
}
