package explain_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/maestro-ml/maestro/explain"
)

const valid = `{
  "schema_version": 1,
  "dataset": {"name": "holdout", "rows": 200, "split": "test",
              "digest": "sha256:0000000000000000000000000000000000000000000000000000000000000000",
              "description": "the last 20%"},
  "target": "y",
  "metric": {"name": "mse", "baseline": 0.01, "direction": "minimize"},
  "feature_importances": [
    {"feature": "x1", "method": "permutation", "score": 0.8, "std": 0.05},
    {"feature": "x2", "method": "permutation", "score": 0.1},
    {"feature": "x1", "method": "shap", "score": 1.5}
  ],
  "feature_effects": [
    {"feature": "x1", "method": "partial_dependence",
     "points": [{"value": -2.0, "effect": -6.0}, {"value": 2, "effect": 6}]},
    {"feature": "colour", "method": "partial_dependence",
     "points": [{"value": "red", "effect": 1}]}
  ],
  "classes": [
    {"class": "cat", "feature_importances": [{"feature": "x1", "method": "shap", "score": 0.3}]},
    {"class": "dog", "feature_importances": [], "feature_effects": [
      {"feature": "x2", "method": "shap", "points": [{"value": 0, "effect": 0.5}]}]}
  ]
}`

// edit returns the valid document with f applied to its decoded form.
func edit(t testing.TB, f func(m map[string]any)) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(valid), &m); err != nil {
		t.Fatal(err)
	}
	f(m)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func obj(v any) map[string]any { return v.(map[string]any) }
func arr(v any) []any          { return v.([]any) }

func TestValidateAcceptsTheDocumentedShape(t *testing.T) {
	t.Parallel()
	minimal := `{"schema_version":1,"dataset":{"name":"d","rows":1},"feature_importances":[{"feature":"a","method":"gain","score":-0.5}]}`
	for name, doc := range map[string]string{"full": valid, "minimal": minimal} {
		if err := explain.Validate([]byte(doc)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	x, err := explain.Parse([]byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	if x.Dataset.Rows != 200 || x.Metric == nil || *x.Metric.Baseline != 0.01 || len(x.FeatureImportances) != 3 ||
		*x.FeatureImportances[0].Std != 0.05 || x.FeatureImportances[1].Std != nil {
		t.Fatalf("parsed %+v", x)
	}
	pts := x.FeatureEffects[1].Points
	if !pts[0].Value.IsText || pts[0].Value.String() != "red" || x.FeatureEffects[0].Points[0].Value.Number != -2 {
		t.Fatalf("effect values %+v %+v", pts, x.FeatureEffects[0].Points)
	}
	// It writes back what it read.
	b, err := json.Marshal(x)
	if err != nil {
		t.Fatal(err)
	}
	if err := explain.Validate(b); err != nil {
		t.Fatalf("re-encoded document: %v\n%s", err, b)
	}
}

func TestValidateNamesThePathOfTheError(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 251)
	many := func(n int, item func(i int) any) []any {
		out := make([]any, n)
		for i := range out {
			out[i] = item(i)
		}
		return out
	}
	cases := []struct {
		name, doc, path, contains string
	}{
		{"not JSON", `{"schema_version":`, "/schema_version", "not JSON"},
		{"trailing data", valid + ` {}`, "", "after the top-level value"},
		{"not an object", `[1,2]`, "", "object"},
		{"empty", ``, "", "not JSON"},
		{"duplicate key", `{"schema_version":1,"schema_version":1}`, "/schema_version", "duplicate key"},
		{"missing schema_version", edit(t, func(m map[string]any) { delete(m, "schema_version") }), "/schema_version", "required"},
		{"wrong schema_version", edit(t, func(m map[string]any) { m["schema_version"] = 2 }), "/schema_version", "1"},
		{"missing dataset", edit(t, func(m map[string]any) { delete(m, "dataset") }), "/dataset", "required"},
		{"missing dataset name", edit(t, func(m map[string]any) { delete(obj(m["dataset"]), "name") }), "/dataset/name", "required"},
		{"zero rows", edit(t, func(m map[string]any) { obj(m["dataset"])["rows"] = 0 }), "/dataset/rows", "minimum"},
		{"fractional rows", edit(t, func(m map[string]any) { obj(m["dataset"])["rows"] = 1.5 }), "/dataset/rows", "integer"},
		{"bad digest", edit(t, func(m map[string]any) { obj(m["dataset"])["digest"] = "md5:x" }), "/dataset/digest", "match"},
		{"unknown top-level property", edit(t, func(m map[string]any) { m["extra"] = 1 }), "/extra", "unknown property"},
		{"unknown dataset property", edit(t, func(m map[string]any) { obj(m["dataset"])["owner"] = "x" }), "/dataset/owner", "unknown property"},
		{"bad direction", edit(t, func(m map[string]any) { obj(m["metric"])["direction"] = "up" }), "/metric/direction", "minimize"},
		{"missing importances", edit(t, func(m map[string]any) { delete(m, "feature_importances") }), "/feature_importances", "required"},
		{"no importances", edit(t, func(m map[string]any) { m["feature_importances"] = []any{} }), "/feature_importances", "minItems"},
		{"string score", edit(t, func(m map[string]any) { obj(arr(m["feature_importances"])[2])["score"] = "high" }), "/feature_importances/2/score", "number"},
		{"missing score", edit(t, func(m map[string]any) { delete(obj(arr(m["feature_importances"])[1]), "score") }), "/feature_importances/1/score", "required"},
		{"negative std", edit(t, func(m map[string]any) { obj(arr(m["feature_importances"])[0])["std"] = -1 }), "/feature_importances/0/std", "minimum"},
		{"empty feature", edit(t, func(m map[string]any) { obj(arr(m["feature_importances"])[1])["feature"] = "" }), "/feature_importances/1/feature", "minLength"},
		{"long feature", edit(t, func(m map[string]any) { obj(arr(m["feature_importances"])[1])["feature"] = long }), "/feature_importances/1/feature", "maxLength"},
		{"long method", edit(t, func(m map[string]any) { obj(arr(m["feature_importances"])[1])["method"] = long[:65] }), "/feature_importances/1/method", "maxLength"},
		{"infinite score", strings.Replace(valid, `"score": 0.1`, `"score": 1e400`, 1), "/feature_importances/1/score", "finite"},
		{"duplicate feature and method", edit(t, func(m map[string]any) { obj(arr(m["feature_importances"])[1])["feature"] = "x1" }), "/feature_importances/1/feature", "also /feature_importances/0"},
		{"too many importances", edit(t, func(m map[string]any) {
			m["feature_importances"] = many(10001, func(i int) any { return map[string]any{"feature": fmt.Sprint(i), "method": "m", "score": 0} })
		}), "/feature_importances", "maxItems"},
		{"effect without points", edit(t, func(m map[string]any) { obj(arr(m["feature_effects"])[0])["points"] = []any{} }), "/feature_effects/0/points", "minItems"},
		{"boolean effect value", edit(t, func(m map[string]any) {
			obj(arr(obj(arr(m["feature_effects"])[1])["points"])[0])["value"] = true
		}), "/feature_effects/1/points/0/value", "number"},
		{"long effect category", edit(t, func(m map[string]any) {
			obj(arr(obj(arr(m["feature_effects"])[1])["points"])[0])["value"] = long
		}), "/feature_effects/1/points/0/value", "maxLength"},
		{"too many points", edit(t, func(m map[string]any) {
			obj(arr(m["feature_effects"])[0])["points"] = many(1001, func(i int) any { return map[string]any{"value": i, "effect": 0} })
		}), "/feature_effects/0/points", "maxItems"},
		{"duplicate effect", edit(t, func(m map[string]any) { obj(arr(m["feature_effects"])[1])["feature"] = "x1" }), "/feature_effects/1/feature", "also"},
		{"class without a name", edit(t, func(m map[string]any) { delete(obj(arr(m["classes"])[1]), "class") }), "/classes/1/class", "required"},
		{"duplicate class", edit(t, func(m map[string]any) { obj(arr(m["classes"])[1])["class"] = "cat" }), "/classes/1/class", "also /classes/0"},
		{"bad class importance", edit(t, func(m map[string]any) {
			obj(arr(obj(arr(m["classes"])[0])["feature_importances"])[0])["score"] = nil
		}), "/classes/0/feature_importances/0/score", "number"},
		{"first error in path order", edit(t, func(m map[string]any) {
			obj(arr(m["feature_importances"])[2])["score"] = "x"
			obj(arr(m["feature_importances"])[10%3])["score"] = "y"
		}), "/feature_importances/1/score", "number"},
		{"pointer escaping", `{"schema_version":1,"dataset":{"name":"d","rows":1},"feature_importances":[{"feature":"a","method":"m","score":1}],"a/b~c":1}`, "/a~1b~0c", "unknown property"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			err := explain.Validate([]byte(c.doc))
			var e *explain.Error
			if !errors.As(err, &e) {
				t.Fatalf("want *explain.Error, got %v", err)
			}
			if e.Path != c.path || !strings.Contains(e.Message, c.contains) {
				t.Fatalf("got path %q message %q; want path %q message containing %q", e.Path, e.Message, c.path, c.contains)
			}
			if _, err := explain.Parse([]byte(c.doc)); err == nil {
				t.Fatal("Parse accepted what Validate refused")
			}
		})
	}
}

func TestValidateRefusesAnOversizedDocument(t *testing.T) {
	t.Parallel()
	err := explain.Validate(make([]byte, explain.MaxBytes+1))
	if !errors.Is(err, explain.ErrTooLarge) {
		t.Fatalf("want ErrTooLarge, got %v", err)
	}
	if err := explain.Validate([]byte(valid)); errors.Is(err, explain.ErrTooLarge) {
		t.Fatal("a small document is not too large")
	}
}

func TestValidateIsDeterministic(t *testing.T) {
	t.Parallel()
	// Several errors under one object: the validator's tree follows map
	// order, the answer must not.
	doc := `{"schema_version":2,"dataset":{"rows":0,"zz":1},"feature_importances":[],"extra":1}`
	first := explain.Validate([]byte(doc)).Error()
	for range 50 {
		if got := explain.Validate([]byte(doc)).Error(); got != first {
			t.Fatalf("got %q then %q", first, got)
		}
	}
	if first != "/dataset/name: required" {
		t.Fatalf("got %q", first)
	}
}

func TestSchemaIsTheEmbeddedDraft202012Document(t *testing.T) {
	t.Parallel()
	var m map[string]any
	if err := json.Unmarshal(explain.Schema(), &m); err != nil {
		t.Fatal(err)
	}
	if m["$schema"] != "https://json-schema.org/draft/2020-12/schema" {
		t.Fatalf("$schema %v", m["$schema"])
	}
	s := explain.Schema()
	s[0] = 'x'
	if explain.Schema()[0] != '{' {
		t.Fatal("Schema hands out its own buffer")
	}
}

func TestCompare(t *testing.T) {
	t.Parallel()
	imp := func(f, m string, s float64) explain.Importance {
		return explain.Importance{Feature: f, Method: m, Score: s}
	}
	prev := explain.Explanation{FeatureImportances: []explain.Importance{
		imp("age", "permutation", 0.10), imp("income", "permutation", 0.50), imp("zip", "permutation", 0.05), imp("same", "permutation", 0.2),
		imp("age", "shap", 1.0),
	}}
	cur := explain.Explanation{FeatureImportances: []explain.Importance{
		imp("age", "permutation", 0.40), imp("income", "permutation", 0.45), imp("height", "permutation", 0.2), imp("same", "permutation", 0.2),
		imp("age", "shap", 0.9),
	}}
	got := explain.Compare(prev, cur)
	type row struct {
		feature, method, status string
		change                  float64
	}
	want := []row{
		{"age", "permutation", explain.StatusChanged, 0.3},
		{"height", "permutation", explain.StatusNew, 0.2},
		{"age", "shap", explain.StatusChanged, -0.1},
		{"zip", "permutation", explain.StatusGone, -0.05},
		{"income", "permutation", explain.StatusChanged, -0.05},
		{"same", "permutation", explain.StatusUnchanged, 0},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d changes: %+v", len(got), got)
	}
	for i, w := range want {
		g := got[i]
		if g.Feature != w.feature || g.Method != w.method || g.Status != w.status || fmt.Sprintf("%.6f", g.Change) != fmt.Sprintf("%.6f", w.change) {
			t.Errorf("change %d: got %+v, want %+v", i, g, w)
		}
	}
	// income and zip both moved by 0.05 (in float, income's is a hair
	// larger or equal): what matters is that new/gone carry nil sides.
	for _, g := range got {
		if (g.Status == explain.StatusNew) != (g.Previous == nil) || (g.Status == explain.StatusGone) != (g.Score == nil) {
			t.Errorf("%+v: nil sides do not match the status", g)
		}
	}
}

func TestSortedImportancesAndImportanceOf(t *testing.T) {
	t.Parallel()
	x, err := explain.Parse([]byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	s := x.SortedImportances()
	if s[0].Score != 1.5 || s[1].Score != 0.8 || s[2].Score != 0.1 {
		t.Fatalf("sorted %+v", s)
	}
	if x.FeatureImportances[0].Score != 0.8 {
		t.Fatal("SortedImportances reordered the document")
	}
	if v, ok := x.ImportanceOf("x1"); !ok || v != 0.8 {
		t.Fatalf("ImportanceOf(x1) = %v, %v; want the first entry's 0.8", v, ok)
	}
	if _, ok := x.ImportanceOf("nope"); ok {
		t.Fatal("ImportanceOf a missing feature")
	}
	if x.MaxScore() != 1.5 {
		t.Fatalf("MaxScore %v", x.MaxScore())
	}
}

func FuzzValidate(f *testing.F) {
	f.Add([]byte(valid))
	f.Add([]byte(`{"schema_version":1,"dataset":{"name":"d","rows":1},"feature_importances":[{"feature":"a","method":"gain","score":-0.5}]}`))
	f.Add([]byte(`{"schema_version":1,"schema_version":1}`))
	f.Add([]byte(`{"schema_version":1,"dataset":{"name":"d","rows":1},"feature_importances":[{"feature":"a","method":"m","score":1e400}]}`))
	f.Add([]byte(`[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]`))
	f.Add([]byte(`{"feature_effects":[{"feature":"x","method":"m","points":[{"value":"a","effect":1}]}]}`))
	f.Add([]byte(``))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		err := explain.Validate(data)
		x, perr := explain.Parse(data)
		if (err == nil) != (perr == nil) {
			t.Fatalf("Validate %v, Parse %v", err, perr)
		}
		if err != nil {
			var e *explain.Error
			if !errors.As(err, &e) {
				t.Fatalf("not an *explain.Error: %v", err)
			}
			if e.Path != "" && !strings.HasPrefix(e.Path, "/") {
				t.Fatalf("path %q is not a JSON pointer", e.Path)
			}
			return
		}
		// A valid document survives a round trip and compares with itself.
		b, err := json.Marshal(x)
		if err != nil {
			t.Fatal(err)
		}
		if err := explain.Validate(b); err != nil {
			t.Fatalf("re-encoded: %v\n%s", err, b)
		}
		for _, c := range explain.Compare(x, x) {
			if c.Change != 0 || c.Status != explain.StatusUnchanged {
				t.Fatalf("self-comparison %+v", c)
			}
		}
	})
}

// BenchmarkValidate measures a document at the list bounds: 10,000
// importances and 100 effects of 100 points.
func BenchmarkValidate(b *testing.B) {
	imps := make([]any, 10000)
	for i := range imps {
		imps[i] = map[string]any{"feature": fmt.Sprintf("feature_%d", i), "method": "permutation", "score": float64(i) / 10000, "std": 0.01}
	}
	effs := make([]any, 100)
	for i := range effs {
		pts := make([]any, 100)
		for j := range pts {
			pts[j] = map[string]any{"value": float64(j), "effect": float64(i * j)}
		}
		effs[i] = map[string]any{"feature": fmt.Sprintf("feature_%d", i), "method": "partial_dependence", "points": pts}
	}
	doc, err := json.Marshal(map[string]any{"schema_version": 1, "dataset": map[string]any{"name": "d", "rows": 1000},
		"feature_importances": imps, "feature_effects": effs})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	for b.Loop() {
		if err := explain.Validate(doc); err != nil {
			b.Fatal(err)
		}
	}
}
