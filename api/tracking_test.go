package api_test

import (
	"math"
	"net/url"
	"strings"
	"testing"

	"github.com/maestro-ml/maestro/api"
	"github.com/maestro-ml/maestro/internal/testenv"
	"github.com/maestro-ml/maestro/projections"
)

// Tracking on Maestro's own API, end to end over HTTP: experiments (unique
// names, rename, tags, delete/restore) and runs (name ↔ mlflow.runName,
// write-once params, status, tags, delete/restore), each command readable
// at once (read-your-writes), deleted things refusing writes.
func TestTrackingFlow(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@tracking.test").AccessToken
	ada := regUser(e, admin, "ada@tracking.test", "member")
	proj := asJSON[api.ProjectResponse](t, call(t, e, 201, "POST", "/api/v1/projects", ada.Token, map[string]any{"name": "Churn"}))
	base := "/api/v1/projects/" + proj.Slug

	x := asJSON[projections.Experiment](t, call(t, e, 201, "POST", base+"/experiments", ada.Token,
		map[string]any{"name": "baseline", "tags": map[string]string{"team": "growth"}}))
	if x.Name != "baseline" || x.LifecycleStage != "active" || x.Tags["team"] != "growth" || x.ProjectID != proj.ID {
		t.Fatalf("experiment = %+v", x)
	}
	xPath := base + "/experiments/" + x.ID
	if got := asJSON[projections.Experiment](t, call(t, e, 200, "GET", xPath, ada.Token, nil)); got.Name != "baseline" || got.Tags["team"] != "growth" {
		t.Fatalf("read back = %+v", got)
	}
	callProblem(t, e, 409, "experiment-exists", "POST", base+"/experiments", ada.Token, map[string]any{"name": "baseline"})
	callProblem(t, e, 400, "validation-failed", "POST", base+"/experiments", ada.Token, map[string]any{"name": " "})
	callProblem(t, e, 400, "validation-failed", "POST", base+"/experiments", ada.Token,
		map[string]any{"name": "bad tags", "tags": map[string]string{"../etc": "x"}})

	// Rename frees the old name; tags merge; a tag is deleted.
	x = asJSON[projections.Experiment](t, call(t, e, 200, "PATCH", xPath, ada.Token,
		map[string]any{"name": "baseline v2", "tags": map[string]string{"goal": "auc"}}))
	if x.Name != "baseline v2" || x.Tags["goal"] != "auc" || x.Tags["team"] != "growth" {
		t.Fatalf("patched = %+v", x)
	}
	byName := asJSON[api.ExperimentPage](t, call(t, e, 200, "GET", base+"/experiments?name="+url.QueryEscape("baseline v2"), ada.Token, nil))
	if len(byName.Items) != 1 || byName.Items[0].ID != x.ID {
		t.Fatalf("by name = %+v", byName.Items)
	}
	call(t, e, 201, "POST", base+"/experiments", ada.Token, map[string]any{"name": "baseline"})
	call(t, e, 204, "DELETE", xPath+"/tags/team", ada.Token, nil)
	callProblem(t, e, 404, "not-found", "DELETE", xPath+"/tags/team", ada.Token, nil)

	// Runs: the name and mlflow.runName mirror each other.
	r := asJSON[projections.Run](t, call(t, e, 201, "POST", xPath+"/runs", ada.Token,
		map[string]any{"start_time": 1_700_000_000_000, "tags": map[string]string{"mlflow.runName": "first"}}))
	if r.Name != "first" || r.Status != "RUNNING" || r.StartTime != 1_700_000_000_000 || r.ExperimentID != x.ID {
		t.Fatalf("run = %+v", r)
	}
	rPath := base + "/runs/" + r.ID
	params := map[string]any{"params": []map[string]string{{"key": "lr", "value": "0.1"}, {"key": "max depth", "value": "6"},
		{"key": "学习率:warmup", "value": "0.01"}}} // keys as MLflow's: any script, colons
	r = asJSON[projections.Run](t, call(t, e, 200, "POST", rPath+"/params", ada.Token, params))
	if r.Params["lr"] != "0.1" || r.Params["max depth"] != "6" || r.Params["学习率:warmup"] != "0.01" {
		t.Fatalf("params = %+v", r.Params)
	}
	call(t, e, 200, "POST", rPath+"/params", ada.Token, params) // the same values again: fine
	p := callProblemBody(t, e, 400, "param-overwrite", "POST", rPath+"/params", ada.Token,
		map[string]any{"params": []map[string]string{{"key": "epochs", "value": "3"}, {"key": "lr", "value": "0.2"}}})
	if !strings.Contains(p.Detail, "params[1]") || !strings.Contains(p.Detail, "lr") {
		t.Fatalf("overwrite detail = %q", p.Detail)
	}
	got := asJSON[projections.Run](t, call(t, e, 200, "GET", rPath, ada.Token, nil))
	if _, half := got.Params["epochs"]; half || got.Params["lr"] != "0.1" {
		t.Fatalf("a refused batch was half applied: %+v", got.Params)
	}
	end := int64(1_700_000_060_000)
	r = asJSON[projections.Run](t, call(t, e, 200, "PATCH", rPath, ada.Token,
		map[string]any{"status": "FINISHED", "end_time": end, "name": "renamed", "tags": map[string]string{"stage": "eval"}}))
	if r.Status != "FINISHED" || r.EndTime == nil || *r.EndTime != end || r.Name != "renamed" || r.Tags["mlflow.runName"] != "renamed" || r.Tags["stage"] != "eval" {
		t.Fatalf("updated run = %+v", r)
	}
	got = asJSON[projections.Run](t, call(t, e, 200, "GET", rPath, ada.Token, nil))
	if got.Name != "renamed" || got.Tags["mlflow.runName"] != "renamed" || got.Status != "FINISHED" {
		t.Fatalf("read back run = %+v", got)
	}
	callProblem(t, e, 400, "validation-failed", "PATCH", rPath, ada.Token, map[string]any{"status": "DONE"})
	callProblem(t, e, 400, "validation-failed", "DELETE", rPath+"/tags/mlflow.runName", ada.Token, nil)
	call(t, e, 204, "DELETE", rPath+"/tags/stage", ada.Token, nil)

	// Deleted runs and experiments refuse writes until restored.
	call(t, e, 204, "DELETE", rPath, ada.Token, nil)
	callProblem(t, e, 409, "run-deleted", "PATCH", rPath, ada.Token, map[string]any{"status": "KILLED"})
	deleted := asJSON[api.RunPage](t, call(t, e, 200, "GET", xPath+"/runs?view=deleted", ada.Token, nil))
	if len(deleted.Items) != 1 || deleted.Items[0].ID != r.ID || deleted.Items[0].LifecycleStage != "deleted" {
		t.Fatalf("deleted runs = %+v", deleted.Items)
	}
	if live := asJSON[api.RunPage](t, call(t, e, 200, "GET", xPath+"/runs", ada.Token, nil)); len(live.Items) != 0 {
		t.Fatalf("live runs = %+v", live.Items)
	}
	call(t, e, 200, "POST", rPath+":restore", ada.Token, nil)
	call(t, e, 204, "DELETE", xPath, ada.Token, nil)
	callProblem(t, e, 409, "experiment-deleted", "POST", xPath+"/runs", ada.Token, map[string]any{})
	if list := asJSON[api.ExperimentPage](t, call(t, e, 200, "GET", base+"/experiments?view=deleted", ada.Token, nil)); len(list.Items) != 1 {
		t.Fatalf("deleted experiments = %+v", list.Items)
	}
	call(t, e, 200, "POST", xPath+":restore", ada.Token, nil)
	call(t, e, 201, "POST", xPath+"/runs", ada.Token, map[string]any{})

	// Paging through runs, newest start first.
	for i := range 3 {
		call(t, e, 201, "POST", xPath+"/runs", ada.Token, map[string]any{"start_time": 1_800_000_000_000 + i})
	}
	seen, token := 0, ""
	var prev int64 = 1 << 62
	for {
		q := xPath + "/runs?max_results=2"
		if token != "" {
			q += "&page_token=" + url.QueryEscape(token)
		}
		page := asJSON[api.RunPage](t, call(t, e, 200, "GET", q, ada.Token, nil))
		for _, it := range page.Items {
			if it.StartTime > prev {
				t.Fatalf("runs out of order: %d after %d", it.StartTime, prev)
			}
			prev = it.StartTime
			seen++
		}
		if token = page.NextPageToken; token == "" {
			break
		}
	}
	if seen != 5 {
		t.Fatalf("paged %d runs, want 5", seen)
	}

	// One PATCH is one command: with an Idempotency-Key, its retry answers
	// the same; a refused part leaves the rest unapplied.
	r2 := asJSON[projections.Run](t, call(t, e, 201, "POST", xPath+"/runs", ada.Token, map[string]any{}))
	r2Path := base + "/runs/" + r2.ID
	patch := map[string]any{"status": "KILLED", "tags": map[string]string{"why": "oom", "data/split": "a"}}
	first := call(t, e, 200, "PATCH", r2Path, ada.Token, patch, "Idempotency-Key", "kill-1")
	again := call(t, e, 200, "PATCH", r2Path, ada.Token, patch, "Idempotency-Key", "kill-1")
	if string(first.Body) != string(again.Body) {
		t.Fatalf("retry answered %s, first %s", again.Body, first.Body)
	}
	callProblem(t, e, 400, "validation-failed", "PATCH", r2Path, ada.Token,
		map[string]any{"status": "FAILED", "tags": map[string]string{"mlflow.runName": " "}})
	if got := asJSON[projections.Run](t, call(t, e, 200, "GET", r2Path, ada.Token, nil)); got.Status != "KILLED" {
		t.Fatalf("a refused PATCH changed the status to %s", got.Status)
	}
	// A key with "/" is deleted through its escaped form.
	call(t, e, 204, "DELETE", r2Path+"/tags/data%2Fsplit", ada.Token, nil)
	if got := asJSON[projections.Run](t, call(t, e, 200, "GET", r2Path, ada.Token, nil)); got.Tags["data/split"] != "" || got.Tags["why"] != "oom" {
		t.Fatalf("tags after deleting data/split: %v", got.Tags)
	}
	callProblem(t, e, 400, "validation-failed", "GET", base+"/experiments?name=a%00b", ada.Token, nil)
	callProblem(t, e, 400, "validation-failed", "POST", base+"/experiments", ada.Token, map[string]any{"name": "padded "})

	// Metrics: logged in one request, readable when the answer arrives,
	// NaN and ±Inf included; a refused point logs nothing.
	points := []map[string]any{
		{"key": "loss", "value": 0.5, "step": 1, "timestamp": 1_700_000_000_000},
		{"key": "loss", "value": "NaN", "step": 2, "timestamp": 1_700_000_000_100},
		{"key": "loss", "value": "-Infinity", "step": 3, "timestamp": 1_700_000_000_200},
		{"key": "train/acc", "value": 0.75, "step": 1, "timestamp": 1_700_000_000_000},
	}
	lr := call(t, e, 200, "POST", r2Path+"/metrics", ada.Token, map[string]any{"metrics": points})
	if lr.Header.Get("Maestro-Metrics-Sequence") == "" || lr.Header.Get("Maestro-Sequence") != "" {
		t.Fatalf("metrics answer headers: %v", lr.Header)
	}
	hist := asJSON[api.MetricHistory](t, call(t, e, 200, "GET", r2Path+"/metrics/loss", ada.Token, nil))
	if len(hist.Points) != 3 || hist.Points[0].Value != 0.5 || !math.IsNaN(float64(hist.Points[1].Value)) ||
		!math.IsInf(float64(hist.Points[2].Value), -1) || hist.Points[2].Step != 3 {
		t.Fatalf("history = %+v", hist)
	}
	if h := asJSON[api.MetricHistory](t, call(t, e, 200, "GET", r2Path+"/metrics/loss?max_points=4", ada.Token, nil)); len(h.Points) != 3 {
		t.Fatalf("sampled history of a short series = %+v", h)
	}
	callProblem(t, e, 400, "validation-failed", "GET", r2Path+"/metrics/loss?max_points=2", ada.Token, nil)
	withMetrics := asJSON[projections.Run](t, call(t, e, 200, "GET", r2Path, ada.Token, nil))
	if l := withMetrics.Metrics["loss"]; l.Step != 3 || !math.IsInf(float64(l.Value), -1) || withMetrics.Metrics["train/acc"].Value != 0.75 {
		t.Fatalf("latest metrics in the run = %+v", withMetrics.Metrics)
	}
	if h := asJSON[api.MetricHistory](t, call(t, e, 200, "GET", r2Path+"/metrics/train%2Facc", ada.Token, nil)); len(h.Points) != 1 {
		t.Fatalf("train/acc history = %+v", h)
	}
	p = callProblemBody(t, e, 400, "validation-failed", "POST", r2Path+"/metrics", ada.Token,
		map[string]any{"metrics": []map[string]any{{"key": "ok", "value": 1, "timestamp": 1}, {"key": "bad//key", "value": 1, "timestamp": 1}}})
	if !strings.HasPrefix(p.Detail, "metrics[1]") {
		t.Fatalf("detail %q", p.Detail)
	}
	if h := asJSON[api.MetricHistory](t, call(t, e, 200, "GET", r2Path+"/metrics/ok", ada.Token, nil)); len(h.Points) != 0 {
		t.Fatalf("a refused request logged %+v", h.Points)
	}

	// A viewer reads but does not write; a stranger sees nothing.
	viewer := regUser(e, admin, "viewer@tracking.test", "member")
	call(t, e, 200, "PUT", base+"/members/"+viewer.ID, ada.Token, map[string]any{"role": "viewer"})
	call(t, e, 200, "GET", rPath, viewer.Token, nil)
	callProblem(t, e, 403, "forbidden", "POST", rPath+"/params", viewer.Token, map[string]any{"params": []map[string]string{{"key": "x", "value": "1"}}})
	stranger := regUser(e, admin, "stranger@tracking.test", "member")
	callProblem(t, e, 404, "not-found", "GET", rPath, stranger.Token, nil)
}

// callProblemBody is callProblem returning the problem.
func callProblemBody(t *testing.T, e *testenv.Env, status int, code, method, path, token string, body any) api.Problem {
	t.Helper()
	p, err := checkProblem(e.Do(method, path, token, body), status, code)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return p
}
