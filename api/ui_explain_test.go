package api_test

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/maestro-ml/maestro/internal/testenv"
	"github.com/maestro-ml/maestro/internal/webtest"
)

// uiExplanationDoc is an explanation.json of importances (feature → score),
// a partial dependence curve of the first feature and one class's
// breakdown.
func uiExplanationDoc(t *testing.T, features []string, scores []float64) []byte {
	t.Helper()
	var imps []map[string]any
	for i, f := range features {
		imps = append(imps, map[string]any{"feature": f, "method": "permutation", "score": scores[i], "std": scores[i] / 10})
	}
	b, err := json.Marshal(map[string]any{
		"schema_version":      1,
		"dataset":             map[string]any{"name": "holdout", "rows": 200, "split": "test", "description": "<b>held</b> out"},
		"target":              "churned",
		"metric":              map[string]any{"name": "mse", "baseline": 0.01, "direction": "minimize"},
		"feature_importances": imps,
		"feature_effects": []map[string]any{{"feature": features[0], "method": "partial_dependence",
			"points": []map[string]any{{"value": -2.0, "effect": -6.0}, {"value": 0.0, "effect": 0.0}, {"value": 2.0, "effect": 6.0}}}},
		"classes": []map[string]any{{"class": "<i>churned</i>", "feature_importances": []map[string]any{
			{"feature": features[0], "method": "permutation", "score": scores[0] * 2}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// inOrder reports whether the texts occur in body in this order.
func inOrder(body string, texts ...string) bool {
	at := 0
	for _, s := range texts {
		i := strings.Index(body[at:], s)
		if i < 0 {
			return false
		}
		at += i + len(s)
	}
	return true
}

// section is the page's Explanation section.
var explanationSection = regexp.MustCompile(`(?s)<section class="explanation".*?</section>`)

// The Explanation section of the run and version pages: the importances
// highest first (bars and the table), the effect curves, the dataset, the
// change since the previous version, none where there is none — and the
// uploader's feature names escaped.
func TestUIExplanation(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@uiexplain.test").AccessToken
	viewer := e.Register("vi@uiexplain.test")
	call(t, e, 201, "POST", "/api/v1/projects", admin, map[string]any{"name": "Explain"})
	call(t, e, 200, "PUT", "/api/v1/projects/explain/members/"+viewer.ID, admin, map[string]any{"role": "viewer"})
	pp := "/api/v1/projects/explain"
	exp := asJSON[struct{ ID string }](t, call(t, e, 201, "POST", pp+"/experiments", admin, map[string]any{"name": "x"}))
	newRun := func(name string) string {
		return asJSON[struct{ ID string }](t, call(t, e, 201, "POST", pp+"/experiments/"+exp.ID+"/runs", admin, map[string]any{"name": name})).ID
	}
	evil := `<script>alert("f")</script>`
	run1, run2, bare := newRun("first"), newRun("second"), newRun("bare")
	json := []string{"Content-Type", "application/json"}
	call(t, e, 201, "PUT", pp+"/runs/"+run1+"/artifacts/explanation.json", admin,
		uiExplanationDoc(t, []string{"tenure", "spend", evil}, []float64{0.5, 0.3, 0.1}), json...)
	call(t, e, 201, "PUT", pp+"/runs/"+run2+"/artifacts/explanation.json", admin,
		uiExplanationDoc(t, []string{"tenure", "spend", "region"}, []float64{0.2, 0.6, 0.4}), json...)
	call(t, e, 201, "POST", pp+"/models", admin, map[string]any{"name": "churn"})
	for _, run := range []string{run1, run2, "", ""} {
		call(t, e, 201, "POST", pp+"/models/churn/versions", admin, map[string]any{"run_id": run})
	}
	// Version 4 has an explanation of its own.
	call(t, e, 201, "PUT", pp+"/models/churn/versions/4/artifacts/explanation.json", admin,
		uiExplanationDoc(t, []string{"tenure", "spend", "region"}, []float64{0.2, 0.7, 0.4}), json...)

	u := newUIClient(t, e)
	u.signIn(viewer.Email, testenv.Password)
	sectionOf := func(path string) string {
		t.Helper()
		s := explanationSection.FindString(u.get(path).want(t, 200).Body)
		if s == "" || !strings.Contains(s, ">Explanation</h2>") {
			t.Fatalf("%s has no Explanation section", path)
		}
		return s
	}

	// The run page: importances highest first, in the figure and the
	// table; the dataset line; the effect curve; escaped names.
	s := sectionOf("/projects/explain/runs/" + run1)
	escaped := "&lt;script&gt;alert(&#34;f&#34;)&lt;/script&gt;"
	if strings.Contains(s, evil) || strings.Contains(s, "<b>held") || !strings.Contains(s, escaped) {
		t.Errorf("the run's section does not escape the uploader's text:\n%s", s)
	}
	for _, want := range [][]string{
		{`<svg viewBox="0 0 640`, ">tenure</text>", ">spend</text>", ">&lt;script&gt;alert(&#34;f&#34;)&lt;/scrip…</text>"},                                     // cut                                                                 // bars
		{`<table class="importance-values">`, "<td>tenure</td><td>0.5</td><td>0.05</td>", "<td>spend</td><td>0.3</td>", "<td>" + escaped + "</td><td>0.1</td>"}, // table
		{"<dt>Dataset</dt><dd>holdout, 200 rows, test split: &lt;b&gt;held&lt;/b&gt; out</dd>", "<dt>Target</dt><dd>churned</dd>"},
		{`<figure class="effect">`, "<figcaption>tenure", "<polyline class=\"curve\" points=\"76.0,140.0 194.0,75.0 312.0,10.0\"/>", "<td>-2</td><td>-6</td>"},
		{`href="/projects/explain/runs/` + run1 + `/artifacts/explanation.json"`},
		{"<summary>Importances by class (1)</summary>", "<caption>Class &lt;i&gt;churned&lt;/i&gt;</caption>", "<td>tenure (permutation)</td><td>1</td>"},
	} {
		if !inOrder(s, want...) {
			t.Errorf("the run's section lacks, in order, %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "explanation-changes") {
		t.Error("the run page compares with a previous version")
	}

	// Version 2 (from the second run): its run's explanation, and the
	// change since version 1's, largest first.
	s = sectionOf("/projects/explain/models/churn/versions/2")
	if !inOrder(s, "<td>spend</td><td>0.6</td>", "<td>region</td><td>0.4</td>", "<td>tenure</td><td>0.2</td>") {
		t.Errorf("version 2's importances are not highest first:\n%s", s)
	}
	if !inOrder(s, "Importance changes since version 1",
		"<td>region</td><td>permutation</td><td>0.4</td><td>—</td><td>&#43;0.4 (new)</td>",
		"<td>spend</td><td>permutation</td><td>0.6</td><td>0.3</td><td>&#43;0.3</td>",
		"<td>tenure</td><td>permutation</td><td>0.2</td><td>0.5</td><td>-0.3</td>",
		"<td>"+escaped+"</td><td>permutation</td><td>—</td><td>0.1</td><td>-0.1 (gone)</td>") {
		t.Errorf("version 2's comparison:\n%s", s)
	}
	if !strings.Contains(s, "of the version&#39;s run") {
		t.Errorf("version 2's section does not say the file is its run's:\n%s", s)
	}
	// Version 4's own file, compared with version 2's (3 has none).
	s = sectionOf("/projects/explain/models/churn/versions/4")
	if !strings.Contains(s, "of this version") || !strings.Contains(s, `href="/projects/explain/models/churn/versions/4/artifacts/explanation.json"`) ||
		!inOrder(s, "Importance changes since version 2", "<td>spend</td><td>permutation</td><td>0.7</td><td>0.6</td><td>&#43;0.1</td>",
			"<td>region</td><td>permutation</td><td>0.4</td><td>0.4</td><td>0</td>") {
		t.Errorf("version 4's section:\n%s", s)
	}
	// Version 1 has nothing before it; version 3 (no run) and a run without
	// explanation.json have none.
	if s := sectionOf("/projects/explain/models/churn/versions/1"); !strings.Contains(s, "No earlier version has an explanation to compare with.") ||
		!inOrder(s, ">tenure</text>", ">spend</text>") {
		t.Errorf("version 1's section:\n%s", s)
	}
	for path, want := range map[string]string{
		"/projects/explain/models/churn/versions/3": "No explanation: neither the version nor its source run has an explanation.json.",
		"/projects/explain/runs/" + bare:            "No explanation: no explanation.json has been uploaded.",
	} {
		if s := sectionOf(path); !strings.Contains(s, want) || strings.Contains(s, "<svg") {
			t.Errorf("%s without an explanation:\n%s", path, s)
		}
	}
}

// The explanation in Chromium: the version page (its run's explanation and
// the change since the previous version) and the run page pass every
// page's checks — no script error or CSP violation, axe clean, keyboard
// reachable — and the uploaded feature names never run.
func TestUIBrowserExplanation(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@browserexplain.test").AccessToken
	call(t, e, 201, "POST", "/api/v1/projects", admin, map[string]any{"name": "Why"})
	pp := "/api/v1/projects/why"
	exp := asJSON[struct{ ID string }](t, call(t, e, 201, "POST", pp+"/experiments", admin, map[string]any{"name": "x"}))
	features := []string{"tenure", "spend", `<img src=x onerror="window.__xss=1">`, "region"}
	var runs []string
	for i, scores := range [][]float64{{0.5, 0.3, 0.1, 0.05}, {0.2, 0.6, 0.1, 0.4}} {
		run := asJSON[struct{ ID string }](t, call(t, e, 201, "POST", pp+"/experiments/"+exp.ID+"/runs", admin, map[string]any{"name": fmt.Sprint("r", i)})).ID
		call(t, e, 201, "PUT", pp+"/runs/"+run+"/artifacts/explanation.json", admin, uiExplanationDoc(t, features, scores), "Content-Type", "application/json")
		runs = append(runs, run)
	}
	call(t, e, 201, "POST", pp+"/models", admin, map[string]any{"name": "churn"})
	for _, run := range runs {
		call(t, e, 201, "POST", pp+"/models/churn/versions", admin, map[string]any{"run_id": run})
	}
	b := newBrowserPage(t, e)
	b.signIn("root@browserexplain.test")
	b.open("/projects/why/models/churn/versions/2", "version-explanation")
	if main := b.tab.Text("main"); !strings.Contains(main, "Importance changes since version 1") || !strings.Contains(main, "Feature effects") {
		t.Fatalf("the version page: %.2000s", main)
	}
	b.tab.Click("figure.importances details summary")
	b.check("version-explanation-values")
	b.open("/projects/why/runs/"+runs[0], "run-explanation")
	if webtest.Eval[bool](b.tab, "window.__xss === 1") {
		t.Fatal("a feature name ran as script")
	}
}
