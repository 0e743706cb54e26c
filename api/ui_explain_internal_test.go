package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/maestro-ml/maestro/api/web"
	"github.com/maestro-ml/maestro/explain"
)

// parseDoc parses an explanation document built from v.
func parseDoc(t *testing.T, v any) (explain.Explanation, error) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return explain.Parse(b)
}

// The section is bounded whatever the file holds: the 50 highest
// importances, 20 effect curves, a curve of at most 200 drawn points and a
// table of 25, 10 classes of 10 importances; the rest is counted, not
// shown.
func TestExplanationViewBounded(t *testing.T) {
	var imps, effs []map[string]any
	for i := range 60 {
		imps = append(imps, map[string]any{"feature": fmt.Sprintf("f%02d", i), "method": "permutation", "score": float64(i)})
	}
	for i := range 25 {
		var pts []map[string]any
		for k := range 1000 {
			pts = append(pts, map[string]any{"value": float64(999 - k), "effect": float64(k % 7)})
		}
		effs = append(effs, map[string]any{"feature": fmt.Sprintf("f%02d", i), "method": "partial_dependence", "points": pts})
	}
	effs[1]["points"] = []map[string]any{{"value": "red", "effect": 1}, {"value": "green", "effect": 1}} // categories, a flat curve
	var classes []map[string]any
	for i := range 12 {
		classes = append(classes, map[string]any{"class": fmt.Sprint("c", i), "feature_importances": imps[:15]})
	}
	x, err := parseDoc(t, map[string]any{"schema_version": 1, "dataset": map[string]any{"name": "d", "rows": 1},
		"feature_importances": imps, "feature_effects": effs, "classes": classes})
	if err != nil {
		t.Fatal(err)
	}
	v := explanationPage(x)
	if len(v.Groups) != 1 || len(v.Groups[0].Bars) != uiMaxImportances || v.Omitted != 10 || v.Groups[0].Bars[0].Feature != "f59" ||
		v.Groups[0].Bars[49].Feature != "f10" {
		t.Fatalf("importances: %d groups, omitted %d, first %+v", len(v.Groups), v.Omitted, v.Groups[0].Bars[0])
	}
	if len(v.Effects) != uiMaxEffects || v.EffOmitted != 5 {
		t.Fatalf("effects: %d shown, %d omitted", len(v.Effects), v.EffOmitted)
	}
	e := v.Effects[0]
	if n := len(strings.Fields(e.Polyline)); n != uiMaxCurvePoints || len(e.Rows) != uiMaxEffectRows || e.Sampled != 1000 || len(e.Dots) != 0 {
		t.Fatalf("a curve of 1000 points: %d drawn, %d rows, sampled %d, %d dots", n, len(e.Rows), e.Sampled, len(e.Dots))
	}
	// Drawn in the order of the values (the file lists them downwards).
	if e.Rows[0].Value != "0" || e.Rows[len(e.Rows)-1].Value != "999" || !strings.HasPrefix(e.Polyline, "76.0,") {
		t.Fatalf("curve order: rows %v…, polyline %.40s", e.Rows[0], e.Polyline)
	}
	if len(v.Classes) != uiMaxClasses || v.ClassOmitted != 2 || len(v.Classes[0].Rows) != uiMaxClassRows || v.Classes[0].Omitted != 5 ||
		v.Classes[0].Rows[0].Feature != "f14 (permutation)" {
		t.Fatalf("classes: %d shown, %d omitted; the first %+v", len(v.Classes), v.ClassOmitted, v.Classes[0])
	}
	if c := v.Effects[1]; c.XMin != "red" || c.XMax != "green" || c.YMin != "1" || len(c.Dots) != 2 {
		t.Fatalf("a categorical flat curve: %+v", c)
	}

	r, err := web.New()
	if err != nil {
		t.Fatal(err)
	}
	page, err := r.Render("version", web.Page{Title: "v", Data: versionData{Explanation: v}})
	if err != nil {
		t.Fatal(err)
	}
	out := string(page)
	if n := strings.Count(out, `<figure class="effect">`); n != uiMaxEffects {
		t.Errorf("%d effect figures rendered", n)
	}
	if n := strings.Count(out, "<rect class=\"bar"); n != uiMaxImportances {
		t.Errorf("%d bars rendered", n)
	}
	for _, want := range []string{"10 lower importances are not shown", "5 more effect curves are not shown",
		"Importances by class (10 shown, 2 more in the file)", "<caption>Class c9 (the 10 highest; 5 more in the file)</caption>"} {
		if !strings.Contains(out, want) {
			t.Errorf("the page does not say %q", want)
		}
	}
}

// Negative importances (a feature whose shuffling helped) draw leftwards
// from the zero line; a long name is cut in the figure only.
func TestExplanationBarsNegativeAndLong(t *testing.T) {
	long := strings.Repeat("a", 100)
	x, err := parseDoc(t, map[string]any{"schema_version": 1, "dataset": map[string]any{"name": "d", "rows": 1},
		"feature_importances": []map[string]any{{"feature": long, "method": "m", "score": 1, "std": 0.5}, {"feature": "n", "method": "m", "score": -0.5}}})
	if err != nil {
		t.Fatal(err)
	}
	g := explanationPage(x).Groups[0]
	pos, neg := g.Bars[0], g.Bars[1]
	// The domain is [-0.5, 1.5]: zero at a quarter of the bar area.
	if g.Zero != svgNum(barLeft+(barRight-barLeft)/4) || pos.X != g.Zero || !neg.Negative || neg.X != svgNum(barLeft) || neg.HasSD {
		t.Fatalf("bars %+v %+v, zero %s", pos, neg, g.Zero)
	}
	if pos.WhiskerFrom != svgNum(barLeft+(barRight-barLeft)/2) || pos.WhiskerTo != svgNum(barRight) {
		t.Fatalf("whisker %s..%s", pos.WhiskerFrom, pos.WhiskerTo)
	}
	if pos.Feature != long || len([]rune(pos.Label)) != uiLabelRunes || !strings.HasSuffix(pos.Label, "…") {
		t.Fatalf("label %q", pos.Label)
	}
}

// A file that is not a valid explanation, or none, is no explanation: the
// section says which.
func TestExplanationViewNone(t *testing.T) {
	s := &Server{}
	_, bad := parseDoc(t, map[string]any{"schema_version": 1, "dataset": map[string]any{"name": "d", "rows": 1},
		"feature_importances": []map[string]any{{"feature": "a", "method": "m", "score": "high"}}})
	var xe *explain.Error
	if !errors.As(bad, &xe) {
		t.Fatalf("a bad document: %v", bad)
	}
	v := s.explanationFor(t.Context(), explain.Explanation{}, bad)
	if v.Found || !strings.HasPrefix(v.Reason, "No valid explanation: explanation.json is not a valid explanation (/feature_importances/0/score: ") {
		t.Fatalf("invalid: %+v", v)
	}
	if v := s.explanationFor(t.Context(), explain.Explanation{}, errNoExplanation); v.Found || v.Reason != "No explanation: no explanation.json has been uploaded." {
		t.Fatalf("absent: %+v", v)
	}
	if v := s.explanationFor(t.Context(), explain.Explanation{}, noExplanation("neither the version nor its source run has an explanation.json")); v.Found ||
		v.Reason != "No explanation: neither the version nor its source run has an explanation.json." {
		t.Fatalf("the explanation route's none: %+v", v)
	}
	if c := comparisonFor(ExplanationResponse{}); c.Reason != "No earlier version has an explanation to compare with." || len(c.Rows) != 0 {
		t.Fatalf("comparison without a previous explanation: %+v", c)
	}
}

// BenchmarkExplanationSection lays out and renders the version page's
// section for a document near the bounds (10,000 importances, 100 effects
// of 1,000 points): the parse is explain's (BenchmarkValidate).
func BenchmarkExplanationSection(b *testing.B) {
	var imps, effs []map[string]any
	for i := range 10000 {
		imps = append(imps, map[string]any{"feature": fmt.Sprintf("feature_%05d", i), "method": "permutation", "score": float64(i%977) / 977, "std": 0.01})
	}
	for i := range 100 {
		var pts []map[string]any
		for k := range 1000 {
			pts = append(pts, map[string]any{"value": float64(k), "effect": float64(k%13) / 13})
		}
		effs = append(effs, map[string]any{"feature": fmt.Sprintf("feature_%05d", i), "method": "partial_dependence", "points": pts})
	}
	data, err := json.Marshal(map[string]any{"schema_version": 1, "dataset": map[string]any{"name": "d", "rows": 1},
		"feature_importances": imps, "feature_effects": effs})
	if err != nil {
		b.Fatal(err)
	}
	x, err := explain.Parse(data)
	if err != nil {
		b.Fatal(err)
	}
	r, err := web.New()
	if err != nil {
		b.Fatal(err)
	}
	var size int
	for b.Loop() {
		page, err := r.Render("version", web.Page{Title: "v", Data: versionData{Explanation: explanationPage(x)}})
		if err != nil {
			b.Fatal(err)
		}
		size = len(page)
	}
	b.ReportMetric(float64(len(data)), "doc-bytes")
	b.ReportMetric(float64(size), "page-bytes")
}
