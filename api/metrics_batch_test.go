package api_test

import (
	"strings"
	"testing"

	"github.com/maestro-ml/maestro/api"
	"github.com/maestro-ml/maestro/internal/testenv"
	"github.com/maestro-ml/maestro/projections"
)

// Batch logging on Maestro's API: 10,000 points with params and tags in
// one request, decided together; a rejected item is named by its index and
// nothing of that request is applied (neither its points nor its params
// and tags).
func TestLogBatchWithParamsAndTags(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@batch.test").AccessToken
	proj := asJSON[api.ProjectResponse](t, call(t, e, 201, "POST", projectsPath, admin, map[string]any{"name": "Batch"}))
	base := projectsPath + "/" + proj.Slug
	x := asJSON[projections.Experiment](t, call(t, e, 201, "POST", base+"/experiments", admin, map[string]any{"name": "x"}))
	run := asJSON[projections.Run](t, call(t, e, 201, "POST", base+"/experiments/"+x.ID+"/runs", admin, map[string]any{"name": "r"}))
	runPath := base + "/runs/" + run.ID

	points := func(key string, n int) []map[string]any {
		out := make([]map[string]any, n)
		for i := range out {
			out[i] = map[string]any{"key": key, "value": float64(i) / 10, "step": i, "timestamp": 1_700_000_000_000 + i}
		}
		return out
	}
	r := call(t, e, 200, "POST", runPath+"/metrics", admin, map[string]any{"metrics": points("loss", 10_000),
		"params": []map[string]string{{"key": "lr", "value": "0.1"}, {"key": "epochs", "value": "10"}},
		"tags":   map[string]string{"team": "risk", "stage": "train"}})
	got := asJSON[api.MetricsLogged](t, r)
	if got.Logged != 10_000 || got.Params != 2 || got.Tags != 2 || r.Header.Get("Maestro-Sequence") == "" || r.Header.Get("Maestro-Metrics-Sequence") == "" {
		t.Fatalf("batch answer %+v, headers %v", got, r.Header)
	}
	read := asJSON[projections.Run](t, call(t, e, 200, "GET", runPath, admin, nil))
	if read.Params["lr"] != "0.1" || read.Params["epochs"] != "10" || read.Tags["team"] != "risk" || read.Metrics["loss"].Step != 9_999 {
		t.Fatalf("run after the batch: params %v tags %v metrics %v", read.Params, read.Tags, read.Metrics)
	}

	// A param overwrite at index 1: nothing of the batch applies.
	bad := e.Do("POST", runPath+"/metrics", admin, map[string]any{"metrics": points("late", 10),
		"params": []map[string]string{{"key": "depth", "value": "3"}, {"key": "lr", "value": "0.2"}},
		"tags":   map[string]string{"team": "fraud"}})
	if p := wantProblem(t, bad, 400, "param-overwrite"); !strings.Contains(p.Detail, "params[1]") {
		t.Fatalf("param overwrite detail %q", p.Detail)
	}
	// A bad point at index 5: nothing applies either.
	pts := points("late", 10)
	pts[5]["key"] = "../x"
	bad = e.Do("POST", runPath+"/metrics", admin, map[string]any{"metrics": pts, "params": []map[string]string{{"key": "depth", "value": "3"}}})
	if p := wantProblem(t, bad, 400, "validation-failed"); !strings.Contains(p.Detail, "metrics[5]") {
		t.Fatalf("bad point detail %q", p.Detail)
	}
	read = asJSON[projections.Run](t, call(t, e, 200, "GET", runPath, admin, nil))
	if _, ok := read.Params["depth"]; ok || read.Tags["team"] != "risk" {
		t.Fatalf("a refused batch applied: params %v tags %v", read.Params, read.Tags)
	}
	if _, ok := read.Metrics["late"]; ok {
		t.Fatalf("a refused batch's points were logged: %v", read.Metrics)
	}
	h := asJSON[api.MetricHistory](t, call(t, e, 200, "GET", runPath+"/metrics/late", admin, nil))
	if len(h.Points) != 0 {
		t.Fatalf("history of a refused batch's key: %d points", len(h.Points))
	}
	// Params and tags alone are a batch too; an empty one is refused.
	got = asJSON[api.MetricsLogged](t, call(t, e, 200, "POST", runPath+"/metrics", admin, map[string]any{"tags": map[string]string{"note": "ok"}}))
	if got.Logged != 0 || got.Tags != 1 {
		t.Fatalf("tags-only batch: %+v", got)
	}
	wantProblem(t, e.Do("POST", runPath+"/metrics", admin, map[string]any{}), 400, "validation-failed")
}
