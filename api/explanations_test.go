package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/maestro-ml/maestro/api"
	"github.com/maestro-ml/maestro/explain"
	"github.com/maestro-ml/maestro/internal/testenv"
	"github.com/maestro-ml/maestro/projections"
)

// Explanations through HTTP (docs/ARCHITECTURE.md "Explanations"): the
// schema served, explanation.json uploads validated on every artifact
// route (Maestro's version and run routes, MLflow's artifact proxy), a
// version's explanation with its comparison to the previous one, and
// approval policies that require an explanation or gate on it.

// explanationDoc is a valid explanation whose features score as given
// (permutation importance), in the order given.
func explanationDoc(scores ...any) []byte {
	var imps []map[string]any
	for i := 0; i+1 < len(scores); i += 2 {
		imps = append(imps, map[string]any{"feature": scores[i], "method": "permutation", "score": scores[i+1], "std": 0.01})
	}
	b, err := json.Marshal(map[string]any{
		"schema_version":      1,
		"dataset":             map[string]any{"name": "holdout", "rows": 200, "split": "test"},
		"target":              "y",
		"metric":              map[string]any{"name": "mse", "baseline": 0.01, "direction": "minimize"},
		"feature_importances": imps,
		"feature_effects": []any{map[string]any{"feature": "x1", "method": "partial_dependence",
			"points": []any{map[string]any{"value": -2.0, "effect": -6.0}, map[string]any{"value": 2.0, "effect": 6.0}}}},
	})
	if err != nil {
		panic(err)
	}
	return b
}

// explProject is a project with an owner, an editor, an approver, a viewer
// and an outsider (a member of no project), a model "churn", and an
// experiment with a run.
type explProject struct {
	e                                         *testenv.Env
	owner, editor, approver, viewer, outsider regClient
	slug, pp                                  string
	experiment, run                           string
}

func newExplProject(t *testing.T, e *testenv.Env, admin, name string) explProject {
	t.Helper()
	dom := strings.ReplaceAll(strings.ToLower(name), " ", "-") + ".test"
	p := explProject{e: e, owner: regUser(e, admin, "owner@"+dom, "member"), editor: regUser(e, admin, "editor@"+dom, "viewer"),
		approver: regUser(e, admin, "approver@"+dom, "viewer"), viewer: regUser(e, admin, "viewer@"+dom, "viewer"),
		outsider: regUser(e, admin, "outsider@"+dom, "member")}
	proj := asJSON[api.ProjectResponse](t, call(t, e, 201, "POST", projectsPath, p.owner.Token, map[string]any{"name": name}))
	p.slug, p.pp = proj.Slug, projectsPath+"/"+proj.Slug
	for u, role := range map[string]string{p.editor.ID: "editor", p.approver.ID: "approver", p.viewer.ID: "viewer"} {
		call(t, e, 200, "PUT", p.pp+"/members/"+u, p.owner.Token, map[string]any{"role": role})
	}
	call(t, e, 201, "POST", p.pp+"/models", p.editor.Token, map[string]any{"name": "churn"})
	p.experiment = asJSON[projections.Experiment](t, call(t, e, 201, "POST", p.pp+"/experiments", p.editor.Token, map[string]any{"name": "x"})).ID
	p.run = p.newRun(t)
	return p
}

func (p explProject) newRun(t *testing.T) string {
	t.Helper()
	return asJSON[projections.Run](t, call(t, p.e, 201, "POST", p.pp+"/experiments/"+p.experiment+"/runs", p.editor.Token, map[string]any{})).ID
}

// version registers a version of churn (from run, unless "").
func (p explProject) version(t *testing.T, run string) int {
	t.Helper()
	body := map[string]any{"description": "v"}
	if run != "" {
		body["run_id"] = run
	}
	return asJSON[api.VersionResponse](t, call(t, p.e, 201, "POST", p.pp+"/models/churn/versions", p.editor.Token, body)).Version
}

func (p explProject) versionArtifact(v int, path string) string {
	return fmt.Sprintf("%s/models/churn/versions/%d/artifacts/%s", p.pp, v, path)
}

func (p explProject) runArtifact(run, path string) string {
	return p.pp + "/runs/" + run + "/artifacts/" + path
}

func (p explProject) explanation(v int) string {
	return fmt.Sprintf("%s/models/churn/versions/%d/explanation", p.pp, v)
}

func jsonType() []string { return []string{"Content-Type", "application/json"} }

func TestExplanationSchemaServed(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	r := e.Do("GET", api.ExplanationSchemaPath, "", nil)
	if r.Status != http.StatusOK || r.Header.Get("Content-Type") != "application/schema+json" ||
		!strings.HasPrefix(r.Header.Get("Cache-Control"), "public") || r.Header.Get("ETag") == "" {
		t.Fatalf("GET %s: %d %v", api.ExplanationSchemaPath, r.Status, r.Header)
	}
	if !bytes.Equal(r.Body, explain.Schema()) {
		t.Fatal("served schema differs from the embedded one")
	}
	var s map[string]any
	if err := json.Unmarshal(r.Body, &s); err != nil || s["$schema"] != "https://json-schema.org/draft/2020-12/schema" {
		t.Fatalf("schema: %v %v", err, s["$schema"])
	}
	// A cache revalidates with the ETag.
	if r2 := e.Do("GET", api.ExplanationSchemaPath, "", nil, "If-None-Match", r.Header.Get("ETag")); r2.Status != http.StatusNotModified || len(r2.Body) != 0 {
		t.Fatalf("revalidation: %d %s", r2.Status, r2.Body)
	}
}

// TestExplanationUploadValidation: an invalid explanation.json is refused
// on every route that stores an artifact (400 naming the JSON pointer of
// the error, MLflow's INVALID_PARAMETER_VALUE on its proxy), and nothing is
// recorded; a valid one is stored; other files are not examined.
func TestExplanationUploadValidation(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@explup.test").AccessToken
	p := newExplProject(t, e, admin, "Expl Upload")
	v := p.version(t, "")
	proxy := "/mlflow/" + p.slug + "/api/2.0/mlflow-artifacts/artifacts/" + p.experiment + "/" + p.run + "/artifacts/"

	routes := []struct {
		name   string
		url    func(path string) string
		mlflow bool
	}{
		{"version artifact", func(path string) string { return p.versionArtifact(v, path) }, false},
		{"run artifact", func(path string) string { return p.runArtifact(p.run, path) }, false},
		{"MLflow artifact proxy", func(path string) string { return proxy + path }, true},
	}
	docs := []struct {
		name, doc, pointer string
	}{
		{"not JSON", `{"schema_version": 1,`, "/"},
		{"no importances", `{"schema_version":1,"dataset":{"name":"d","rows":1}}`, "/feature_importances"},
		{"a string score", strings.Replace(string(explanationDoc("x1", 0.8, "x2", 0.1)), `"score":0.1`, `"score":"high"`, 1), "/feature_importances/1/score"},
		{"zero rows", `{"schema_version":1,"dataset":{"name":"d","rows":0},"feature_importances":[{"feature":"a","method":"m","score":1}]}`, "/dataset/rows"},
		{"an unknown field", `{"schema_version":1,"dataset":{"name":"d","rows":1},"feature_importances":[{"feature":"a","method":"m","score":1,"weight":2}]}`, "/feature_importances/0/weight"},
		{"a feature twice", string(explanationDoc("x1", 0.8, "x1", 0.1)), "/feature_importances/1/feature"},
	}
	for _, rt := range routes {
		for _, d := range docs {
			for _, path := range []string{"explanation.json", "reports/explanation.json"} {
				what := rt.name + ", " + path + ", " + d.name
				before, err := e.P.Store.LastSequence(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				r := e.Do("PUT", rt.url(path), p.editor.Token, []byte(d.doc), jsonType()...)
				var detail string
				if rt.mlflow {
					if err := checkMLflowError(r, 400, "INVALID_PARAMETER_VALUE"); err != nil {
						t.Fatalf("%s: %v", what, err)
					}
					var m struct{ Message string }
					_ = json.Unmarshal(r.Body, &m)
					detail = m.Message
				} else {
					pr, err := checkProblem(r, 400, "invalid-explanation")
					if err != nil {
						t.Fatalf("%s: %v", what, err)
					}
					detail = pr.Detail
				}
				if !strings.Contains(detail, " at "+d.pointer+": ") {
					t.Errorf("%s: detail %q does not name %s", what, detail, d.pointer)
				}
				if after, _ := e.P.Store.LastSequence(t.Context()); after != before {
					t.Errorf("%s: the refused upload appended events (%d → %d)", what, before, after)
				}
			}
		}
	}
	// Nothing was recorded under any of those paths.
	call(t, e, 404, "GET", p.versionArtifact(v, "explanation.json"), p.viewer.Token, nil)
	call(t, e, 404, "GET", p.runArtifact(p.run, "reports/explanation.json"), p.viewer.Token, nil)

	// A valid one is stored, on each route; other names are not examined.
	good := explanationDoc("x1", 0.8, "x2", 0.1)
	call(t, e, 201, "PUT", p.versionArtifact(v, "explanation.json"), p.editor.Token, good, jsonType()...)
	call(t, e, 201, "PUT", p.runArtifact(p.run, "explanation.json"), p.editor.Token, good, jsonType()...)
	if r := e.Do("PUT", proxy+"reports/explanation.json", p.editor.Token, good, jsonType()...); r.Status != 200 {
		t.Fatalf("MLflow proxy upload of a valid explanation: %d %s", r.Status, r.Body)
	}
	call(t, e, 201, "PUT", p.runArtifact(p.run, "explanation.json.bak"), p.editor.Token, []byte("{not json"), jsonType()...)
	call(t, e, 201, "PUT", p.versionArtifact(v, "notes/explanation.txt"), p.editor.Token, []byte("[]"), jsonType()...)
	if got := call(t, e, 200, "GET", p.runArtifact(p.run, "reports/explanation.json"), p.viewer.Token, nil); !bytes.Equal(got.Body, good) {
		t.Fatalf("stored explanation differs: %s", got.Body)
	}

	// Past explain.MaxBytes: 413, nothing stored.
	big := append(append([]byte(`{"schema_version":1,"dataset":{"name":"d","rows":1,"description":"`), bytes.Repeat([]byte("a"), explain.MaxBytes)...), `"}}`...)
	callProblem(t, e, 413, "payload-too-large", "PUT", p.runArtifact(p.run, "big/explanation.json"), p.editor.Token, big, jsonType()...)
	call(t, e, 404, "GET", p.runArtifact(p.run, "big/explanation.json"), p.viewer.Token, nil)
}

// TestVersionExplanation: a version's own explanation, or its source
// run's, with the comparison to the nearest lower explained version; the
// readers who may see it.
func TestVersionExplanation(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@explget.test").AccessToken
	p := newExplProject(t, e, admin, "Expl Get")

	// v1 from a run that logged an explanation; v2 without one; v3 with
	// its own; v4 from a run that logs its explanation after registration.
	call(t, e, 201, "PUT", p.runArtifact(p.run, "explanation.json"), p.editor.Token, explanationDoc("x1", 0.8, "x2", 0.1, "x3", 0.05), jsonType()...)
	v1 := p.version(t, p.run)
	v2 := p.version(t, "")
	v3 := p.version(t, "")
	call(t, e, 201, "PUT", p.versionArtifact(v3, "explanation.json"), p.editor.Token, explanationDoc("x1", 0.3, "x2", 0.15, "x4", 0.2), jsonType()...)

	got := asJSON[api.ExplanationResponse](t, call(t, e, 200, "GET", p.explanation(v1), p.viewer.Token, nil))
	if got.Model != "churn" || got.Version != v1 || got.Source != "run" || got.RunID != p.run || got.Previous != nil ||
		len(got.Comparison) != 0 || len(got.Explanation.FeatureImportances) != 3 || got.Explanation.Dataset.Rows != 200 {
		t.Fatalf("v1's explanation = %+v", got)
	}
	callProblem(t, e, 404, "no-explanation", "GET", p.explanation(v2), p.viewer.Token, nil)

	got = asJSON[api.ExplanationResponse](t, call(t, e, 200, "GET", p.explanation(v3), p.viewer.Token, nil))
	if got.Source != "version" || got.Previous == nil || got.Previous.Version != v1 || got.Previous.Source != "run" {
		t.Fatalf("v3's explanation = %+v", got)
	}
	// x1 fell most (0.8 → 0.3), then x4 is new (0.2), x3 gone (−0.05), x2 rose 0.05.
	var order []string
	for _, c := range got.Comparison {
		order = append(order, fmt.Sprintf("%s:%s:%.2f", c.Feature, c.Status, c.Change))
	}
	if want := "x1:changed:-0.50 x4:new:0.20 x2:changed:0.05 x3:gone:-0.05"; strings.Join(order, " ") != want &&
		strings.Join(order, " ") != "x1:changed:-0.50 x4:new:0.20 x3:gone:-0.05 x2:changed:0.05" {
		t.Fatalf("comparison = %s, want %s", strings.Join(order, " "), want)
	}

	// A run that logs its explanation after the version was made from it:
	// the version carries it from then on.
	late := p.newRun(t)
	v4 := p.version(t, late)
	callProblem(t, e, 404, "no-explanation", "GET", p.explanation(v4), p.viewer.Token, nil)
	call(t, e, 201, "PUT", p.runArtifact(late, "explanation.json"), p.editor.Token, explanationDoc("x1", 0.4), jsonType()...)
	got = asJSON[api.ExplanationResponse](t, call(t, e, 200, "GET", p.explanation(v4), p.viewer.Token, nil))
	if got.Source != "run" || got.Previous == nil || got.Previous.Version != v3 {
		t.Fatalf("v4's explanation = %+v", got)
	}
	// A deleted version is skipped as a previous one, and is itself gone.
	call(t, e, 200, "DELETE", fmt.Sprintf("%s/models/churn/versions/%d", p.pp, v3), p.editor.Token, nil)
	if got = asJSON[api.ExplanationResponse](t, call(t, e, 200, "GET", p.explanation(v4), p.viewer.Token, nil)); got.Previous == nil || got.Previous.Version != v1 {
		t.Fatalf("v4's previous after deleting v3 = %+v", got.Previous)
	}
	callProblem(t, e, 404, "not-found", "GET", p.explanation(v3), p.viewer.Token, nil)

	// Who may read: members (viewers and up); a non-member and a missing
	// project get the same 404; no token is 401.
	for _, tok := range []string{p.viewer.Token, p.editor.Token, p.owner.Token, admin} {
		call(t, e, 200, "GET", p.explanation(v1), tok, nil)
	}
	callProblem(t, e, 404, "not-found", "GET", p.explanation(v1), p.outsider.Token, nil)
	callProblem(t, e, 404, "not-found", "GET", projectsPath+"/no-such-project/models/churn/versions/1/explanation", p.outsider.Token, nil)
	callProblem(t, e, 404, "not-found", "GET", fmt.Sprintf("%s/models/churn/versions/99/explanation", p.pp), p.viewer.Token, nil)
	callProblem(t, e, 401, "unauthenticated", "GET", p.explanation(v1), "", nil)
}

// TestPromotionGateOnExplanation: a policy that requires explanation.json
// refuses a version without one and passes a version that carries its
// run's; a gate over a feature's importance refuses a version over the
// bound, and one without an explanation.
func TestPromotionGateOnExplanation(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@explgate.test").AccessToken
	p := newExplProject(t, e, admin, "Expl Gate")

	call(t, e, 201, "PUT", p.runArtifact(p.run, "explanation.json"), p.editor.Token, explanationDoc("age", 0.05, "income", 0.6), jsonType()...)
	carried := p.version(t, p.run) // carries the run's explanation
	bare := p.version(t, "")
	over := p.version(t, "")
	call(t, e, 201, "PUT", p.versionArtifact(over, "explanation.json"), p.editor.Token, explanationDoc("age", 0.3, "income", 0.2), jsonType()...)

	request := func(v int, target string) api.PromotionResponse {
		t.Helper()
		return asJSON[api.PromotionResponse](t, call(t, e, 201, "POST", p.pp+"/promotions", p.editor.Token,
			map[string]any{"model": "churn", "version": v, "target": target}))
	}

	// "No production without an explanation" is one policy line.
	call(t, e, 200, "POST", p.pp+"/policies", p.owner.Token, map[string]any{"target": "production", "required_artifacts": []string{"explanation.json"}})
	if r := request(bare, "production"); r.State != "rejected" || r.Gate.Passed || !strings.Contains(r.Reason, "required artifacts missing: explanation.json") {
		t.Fatalf("a version without an explanation: %+v", r)
	}
	if r := request(carried, "production"); r.State != "pending" || !r.Gate.Passed {
		t.Fatalf("a version carrying its run's explanation: %+v", r)
	}

	// A gate over a feature's importance: canonical form, bad forms refused.
	callProblem(t, e, 400, "validation-failed", "POST", p.pp+"/policies", p.owner.Token, map[string]any{"target": "staging", "gate": "importance.age < 'x'"})
	callProblem(t, e, 400, "validation-failed", "POST", p.pp+"/policies", p.owner.Token, map[string]any{"target": "staging", "gate": "params.age < 1"})
	pol := asJSON[api.PolicyBody](t, call(t, e, 200, "POST", p.pp+"/policies", p.owner.Token, map[string]any{"target": "staging", "gate": "importances.age < 0.1"}))
	if pol.Gate != "importance.age < 0.1" {
		t.Fatalf("canonical gate = %q", pol.Gate)
	}
	overReq := request(over, "staging")
	if overReq.State != "rejected" || !strings.Contains(overReq.Reason, "importance of age = 0.3") ||
		overReq.Gate.Importances["age"] != 0.3 || overReq.Gate.Explanation == nil || overReq.Gate.Explanation.Source != "version" {
		t.Fatalf("a version over the bound: %+v", overReq)
	}
	// The read model shows what the gate read, by content address.
	read := asJSON[api.PromotionResponse](t, call(t, e, 200, "GET", p.pp+"/promotions/"+overReq.ID, p.viewer.Token, nil))
	if read.Gate.Importances["age"] != 0.3 || read.Gate.Explanation == nil ||
		read.Gate.Explanation.Digest != string(digestOf(explanationDoc("age", 0.3, "income", 0.2))) {
		t.Fatalf("the request as read back: %+v", read.Gate)
	}
	if r := request(bare, "staging"); r.State != "rejected" || !strings.Contains(r.Reason, "no explanation") {
		t.Fatalf("a version without an explanation under an importance gate: %+v", r)
	}
	if r := request(carried, "staging"); r.State != "pending" || !r.Gate.Passed || r.Gate.Explanation == nil || r.Gate.Explanation.Source != "run" {
		t.Fatalf("a version under the bound: %+v", r)
	}
	// A feature the explanation lacks never meets the gate.
	call(t, e, 200, "PUT", p.pp+"/policies/@champion", p.owner.Token, map[string]any{"gate": `importance."zip code" < 0.1 AND importance.age < 0.5`})
	if r := request(carried, "@champion"); r.State != "rejected" || !strings.Contains(r.Reason, "gate not met") {
		t.Fatalf("a gate naming a feature the explanation lacks: %+v", r)
	}
}

// walkExplanations covers the explanation routes for the OpenAPI walk
// (TestOpenAPIConformance); the upload refusals (400 invalid-explanation)
// are validated against the document by testenv in the tests above.
func walkExplanations(t *testing.T, e *testenv.Env, admin string) map[string][]int {
	t.Helper()
	p := newExplProject(t, e, admin, "Expl Walk")
	r := call(t, e, 200, "GET", api.ExplanationSchemaPath, "", nil)
	call(t, e, 304, "GET", api.ExplanationSchemaPath, "", nil, "If-None-Match", r.Header.Get("ETag"))

	call(t, e, 201, "PUT", p.runArtifact(p.run, "explanation.json"), p.editor.Token, explanationDoc("x1", 0.8, "x2", 0.1), jsonType()...)
	v1 := p.version(t, p.run)
	v2 := p.version(t, "")
	call(t, e, 201, "PUT", p.versionArtifact(v2, "explanation.json"), p.editor.Token, explanationDoc("x1", 0.5, "x3", 0.1), jsonType()...)
	call(t, e, 200, "GET", p.explanation(v1), p.viewer.Token, nil)
	call(t, e, 200, "GET", p.explanation(v2), p.viewer.Token, nil)
	call(t, e, 400, "GET", p.explanation(v2)+"?min_sequence=x", p.viewer.Token, nil)
	call(t, e, 401, "GET", p.explanation(v2), "", nil)
	call(t, e, 404, "GET", p.explanation(v2), p.outsider.Token, nil)
	callProblem(t, e, 404, "no-explanation", "GET", p.explanation(p.version(t, "")), p.viewer.Token, nil)
	return map[string][]int{"getExplanationSchema": {200, 304}, "getModelVersionExplanation": {200, 400, 401, 404}}
}

// explanationCells is the registry matrix's row for the explanation read:
// viewers and up, of version 1 of model "m", which the admin gives an
// explanation first (the same bytes again change nothing).
func explanationCells() map[string]mxCell {
	return map[string]mxCell{
		"GET " + mxVersion + "/explanation": {action: mxRead, build: func(m *matrix, p *mxProject) mxReq {
			m.admin("PUT", mxProjects+"/"+p.slug+"/models/m/versions/1/artifacts/explanation.json", explanationDoc("x1", 0.5))
			return mxReq{}
		}},
	}
}
