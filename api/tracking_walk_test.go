package api_test

import (
	"bytes"
	"math"
	"net/url"
	"strings"
	"testing"

	"github.com/maestro-ml/maestro/api"
	"github.com/maestro-ml/maestro/internal/testenv"
	"github.com/maestro-ml/maestro/projections"
)

// walkTracking exercises every experiment-tracking route's success and main
// errors and returns, per operation, the statuses it provoked
// (TestOpenAPIConformance checks them against the document; the Observe of e
// validates each exchange).
func walkTracking(t *testing.T, e *testenv.Env, admin string) map[string][]int {
	t.Helper()
	want := map[string][]int{}
	add := func(op string, codes ...int) { want[op] = append(want[op], codes...) }
	async := []string{"Prefer", "respond-async"}
	const missingID = "00000000-0000-4000-8000-000000000000"

	editor := regUser(e, admin, "trk-editor@example.com", "viewer")
	viewer := regUser(e, admin, "trk-viewer@example.com", "viewer")
	outsider := regUser(e, admin, "trk-outsider@example.com", "member")
	proj := asJSON[api.ProjectResponse](t, call(t, e, 201, "POST", projectsPath, admin, map[string]any{"name": "Tracking Walk"}))
	pp := projectsPath + "/" + proj.Slug
	call(t, e, 200, "PUT", pp+"/members/"+editor.ID, admin, map[string]any{"role": "editor"})
	call(t, e, 200, "PUT", pp+"/members/"+viewer.ID, admin, map[string]any{"role": "viewer"})

	// Experiments: create.
	xs := pp + "/experiments"
	r := call(t, e, 201, "POST", xs, editor.Token, map[string]any{"name": "walk", "artifact_location": "s3://bucket/walk", "tags": map[string]string{"team": "risk"}})
	x := asJSON[projections.Experiment](t, r)
	if x.Name != "walk" || x.LifecycleStage != "active" || x.Tags["team"] != "risk" || r.Header.Get("Location") != projectsPath+"/"+proj.ID+"/experiments/"+x.ID {
		t.Fatalf("created experiment: %s (Location %q)", r.Body, r.Header.Get("Location"))
	}
	xp := xs + "/" + x.ID
	keyed := call(t, e, 201, "POST", xs, editor.Token, map[string]any{"name": "keyed"}, "Idempotency-Key", "trk-cx-1")
	if again := call(t, e, 201, "POST", xs, editor.Token, map[string]any{"name": "keyed"}, "Idempotency-Key", "trk-cx-1"); again.Header.Get("Idempotent-Replayed") != "true" || !bytes.Equal(again.Body, keyed.Body) {
		t.Fatalf("replayed create: %v %s", again.Header, again.Body)
	}
	call(t, e, 202, "POST", xs, editor.Token, map[string]any{"name": "walk async"}, async...)
	callProblem(t, e, 409, "experiment-exists", "POST", xs, editor.Token, map[string]any{"name": "walk"})
	callProblem(t, e, 400, "validation-failed", "POST", xs, editor.Token, map[string]any{"name": " "})
	callProblem(t, e, 400, "validation-failed", "POST", xs, editor.Token, map[string]any{"name": "bad tag", "tags": map[string]string{"../up": "x"}})
	callProblem(t, e, 400, "malformed-json", "POST", xs, editor.Token, map[string]any{"name": "x", "description": "no such field"})
	callProblem(t, e, 403, "forbidden", "POST", xs, viewer.Token, map[string]any{"name": "x"})
	callProblem(t, e, 404, "not-found", "POST", xs, outsider.Token, map[string]any{"name": "x"})
	add("createExperiment", 201, 202, 400, 403, 404, 409)
	add("createExperiment", commandErrors(t, e, editor.Token, "POST", xs, projectsPath+"/nope/experiments", map[string]any{"name": "k"}, "trk-cx")...)

	// A second experiment to delete and restore.
	doomed := asJSON[projections.Experiment](t, call(t, e, 201, "POST", xs, editor.Token, map[string]any{"name": "doomed"}))
	dp := xs + "/" + doomed.ID

	// Experiments: read.
	r = call(t, e, 200, "GET", xs+"?max_results=1", viewer.Token, nil)
	pg := asJSON[api.ExperimentPage](t, r)
	if len(pg.Items) != 1 || pg.NextPageToken == "" {
		t.Fatalf("experiments page 1: %s", r.Body)
	}
	call(t, e, 200, "GET", xs+"?view=all&max_results=200&page_token="+url.QueryEscape(pg.NextPageToken), viewer.Token, nil)
	if byName := asJSON[api.ExperimentPage](t, call(t, e, 200, "GET", xs+"?name=walk", viewer.Token, nil)); len(byName.Items) != 1 || byName.Items[0].ID != x.ID {
		t.Fatalf("experiment by name: %+v", byName.Items)
	}
	if none := asJSON[api.ExperimentPage](t, call(t, e, 200, "GET", xs+"?name=walk&view=deleted", viewer.Token, nil)); len(none.Items) != 0 {
		t.Fatalf("a live experiment listed as deleted: %+v", none.Items)
	}
	callProblem(t, e, 400, "validation-failed", "GET", xs+"?view=gone", viewer.Token, nil)
	callProblem(t, e, 400, "validation-failed", "GET", xs+"?max_results=0", viewer.Token, nil)
	callProblem(t, e, 400, "invalid-page-token", "GET", xs+"?page_token=nope", viewer.Token, nil)
	callProblem(t, e, 401, "unauthenticated", "GET", xs, "", nil)
	callProblem(t, e, 404, "not-found", "GET", xs, outsider.Token, nil)
	add("listExperiments", 200, 400, 401, 404)

	if got := asJSON[projections.Experiment](t, call(t, e, 200, "GET", xp, viewer.Token, nil)); got.ID != x.ID || got.ArtifactLocation != "s3://bucket/walk" {
		t.Fatalf("get experiment: %+v", got)
	}
	callProblem(t, e, 404, "not-found", "GET", xs+"/"+missingID, viewer.Token, nil)
	callProblem(t, e, 404, "not-found", "GET", xs+"/not-a-uuid", viewer.Token, nil)
	callProblem(t, e, 404, "not-found", "GET", xp, outsider.Token, nil)
	callProblem(t, e, 400, "validation-failed", "GET", xp+"?min_sequence=x", viewer.Token, nil)
	callProblem(t, e, 401, "unauthenticated", "GET", xp, "", nil)
	add("getExperiment", 200, 400, 401, 404)

	// Experiments: change.
	r = call(t, e, 200, "PATCH", xp, editor.Token, map[string]any{"name": "walk renamed", "tags": map[string]string{"goal": "auc"}})
	if got := asJSON[projections.Experiment](t, r); got.Name != "walk renamed" || got.Tags["goal"] != "auc" || got.Tags["team"] != "risk" || r.Header.Get("Maestro-Sequence") == "" {
		t.Fatalf("patched experiment: %s (%v)", r.Body, r.Header)
	}
	if r = call(t, e, 200, "PATCH", xp, editor.Token, map[string]any{"name": "walk renamed"}); r.Header.Get("Maestro-Sequence") != "" {
		t.Fatalf("a no-op PATCH has Maestro-Sequence %q", r.Header.Get("Maestro-Sequence"))
	}
	call(t, e, 202, "PATCH", xp, editor.Token, map[string]any{"tags": map[string]string{"goal": "recall"}}, async...)
	callProblem(t, e, 400, "validation-failed", "PATCH", xp, editor.Token, map[string]any{})
	callProblem(t, e, 400, "validation-failed", "PATCH", xp, editor.Token, map[string]any{"name": "x", "tags": map[string]string{"/abs": "x"}})
	callProblem(t, e, 400, "malformed-json", "PATCH", xp, editor.Token, []byte(`{"name":`))
	callProblem(t, e, 403, "forbidden", "PATCH", xp, viewer.Token, map[string]any{"name": "x"})
	callProblem(t, e, 404, "not-found", "PATCH", xs+"/"+missingID, editor.Token, map[string]any{"name": "x"})
	callProblem(t, e, 404, "not-found", "PATCH", xp, outsider.Token, map[string]any{"name": "x"})
	callProblem(t, e, 409, "experiment-exists", "PATCH", xp, editor.Token, map[string]any{"name": "keyed"})
	add("updateExperiment", 200, 202, 400, 403, 404, 409)
	add("updateExperiment", commandErrors(t, e, editor.Token, "PATCH", xp, xs+"/"+missingID, map[string]any{"name": "k"}, "trk-ux")...)

	call(t, e, 204, "DELETE", xp+"/tags/team", editor.Token, nil)
	callProblem(t, e, 404, "not-found", "DELETE", xp+"/tags/team", editor.Token, nil)
	callProblem(t, e, 404, "not-found", "DELETE", xs+"/"+missingID+"/tags/goal", editor.Token, nil)
	callProblem(t, e, 400, "validation-failed", "DELETE", xp+"/tags/bad*key", editor.Token, nil)
	callProblem(t, e, 403, "forbidden", "DELETE", xp+"/tags/goal", viewer.Token, nil)
	call(t, e, 200, "PATCH", xp, editor.Token, map[string]any{"tags": map[string]string{"tmp": "1"}})
	call(t, e, 202, "DELETE", xp+"/tags/tmp", editor.Token, nil, async...)
	add("deleteExperimentTag", 202, 204, 400, 403, 404)
	add("deleteExperimentTag", commandErrors(t, e, editor.Token, "DELETE", xp+"/tags/goal", xp+"/tags/nope", nil, "trk-dxt")...)

	// Experiments: delete and restore.
	if r = call(t, e, 204, "DELETE", dp, editor.Token, nil); r.Header.Get("Maestro-Sequence") == "" {
		t.Fatalf("delete without Maestro-Sequence: %v", r.Header)
	}
	if r = call(t, e, 204, "DELETE", dp, editor.Token, nil); r.Header.Get("Maestro-Sequence") != "" {
		t.Fatalf("a repeated delete has Maestro-Sequence %q", r.Header.Get("Maestro-Sequence"))
	}
	if got := asJSON[projections.Experiment](t, call(t, e, 200, "GET", dp, viewer.Token, nil)); got.LifecycleStage != "deleted" {
		t.Fatalf("deleted experiment: %+v", got)
	}
	if del := asJSON[api.ExperimentPage](t, call(t, e, 200, "GET", xs+"?view=deleted", viewer.Token, nil)); len(del.Items) != 1 || del.Items[0].ID != doomed.ID {
		t.Fatalf("deleted experiments: %+v", del.Items)
	}
	callProblem(t, e, 409, "experiment-deleted", "PATCH", dp, editor.Token, map[string]any{"name": "undead"})
	callProblem(t, e, 409, "experiment-deleted", "DELETE", dp+"/tags/x", editor.Token, nil)
	callProblem(t, e, 409, "experiment-deleted", "POST", dp+"/runs", editor.Token, map[string]any{})
	add("updateExperiment", 409)
	add("deleteExperimentTag", 409)
	add("createRun", 409)
	callProblem(t, e, 403, "forbidden", "DELETE", dp, viewer.Token, nil)
	callProblem(t, e, 404, "not-found", "DELETE", xs+"/"+missingID, editor.Token, nil)
	callProblem(t, e, 404, "not-found", "DELETE", dp, outsider.Token, nil)
	if got := asJSON[projections.Experiment](t, call(t, e, 200, "POST", dp+":restore", editor.Token, nil)); got.LifecycleStage != "active" {
		t.Fatalf("restored experiment: %+v", got)
	}
	if r = call(t, e, 200, "POST", dp+":restore", editor.Token, nil); r.Header.Get("Maestro-Sequence") != "" {
		t.Fatalf("a repeated restore has Maestro-Sequence %q", r.Header.Get("Maestro-Sequence"))
	}
	callProblem(t, e, 403, "forbidden", "POST", dp+":restore", viewer.Token, nil)
	callProblem(t, e, 404, "not-found", "POST", xs+"/"+missingID+":restore", editor.Token, nil)
	call(t, e, 202, "DELETE", dp, editor.Token, nil, async...)
	call(t, e, 202, "POST", dp+":restore", editor.Token, nil, async...)
	add("deleteExperiment", 202, 204, 403, 404)
	add("deleteExperiment", commandErrors(t, e, editor.Token, "DELETE", dp, xs+"/"+missingID, nil, "trk-dx")...)
	add("restoreExperiment", 200, 202, 403, 404)
	add("restoreExperiment", commandErrors(t, e, editor.Token, "POST", dp+":restore", xs+"/"+missingID+":restore", nil, "trk-rx")...)

	// Runs: create.
	runs := xp + "/runs"
	r = call(t, e, 201, "POST", runs, editor.Token, map[string]any{"name": "first", "start_time": 1_700_000_000_000, "tags": map[string]string{"data": "2025-01"}})
	run := asJSON[projections.Run](t, r)
	rp := pp + "/runs/" + run.ID
	if run.Name != "first" || run.Status != "RUNNING" || run.Tags["mlflow.runName"] != "first" || run.ExperimentID != x.ID || r.Header.Get("Location") != projectsPath+"/"+proj.ID+"/runs/"+run.ID {
		t.Fatalf("created run: %s (Location %q)", r.Body, r.Header.Get("Location"))
	}
	second := asJSON[projections.Run](t, call(t, e, 201, "POST", runs, editor.Token, map[string]any{}))
	if second.Name == "" || second.EndTime != nil {
		t.Fatalf("run with defaults: %+v", second)
	}
	call(t, e, 202, "POST", runs, editor.Token, map[string]any{"start_time": 1_600_000_000_000}, async...)
	callProblem(t, e, 400, "validation-failed", "POST", runs, editor.Token, map[string]any{"name": "a", "tags": map[string]string{"mlflow.runName": "b"}})
	callProblem(t, e, 400, "validation-failed", "POST", runs, editor.Token, map[string]any{"start_time": -1})
	callProblem(t, e, 400, "malformed-json", "POST", runs, editor.Token, map[string]any{"start_time": "now"})
	callProblem(t, e, 403, "forbidden", "POST", runs, viewer.Token, map[string]any{})
	callProblem(t, e, 404, "not-found", "POST", xs+"/"+missingID+"/runs", editor.Token, map[string]any{})
	callProblem(t, e, 404, "not-found", "POST", runs, outsider.Token, map[string]any{})
	add("createRun", 201, 202, 400, 403, 404)
	add("createRun", commandErrors(t, e, editor.Token, "POST", runs, xs+"/"+missingID+"/runs", map[string]any{}, "trk-cr")...)

	// Runs: read.
	r = call(t, e, 200, "GET", runs+"?max_results=1", viewer.Token, nil)
	rpg := asJSON[api.RunPage](t, r)
	if len(rpg.Items) != 1 || rpg.NextPageToken == "" {
		t.Fatalf("runs page 1: %s", r.Body)
	}
	call(t, e, 200, "GET", runs+"?view=all&page_token="+url.QueryEscape(rpg.NextPageToken), viewer.Token, nil)
	callProblem(t, e, 400, "validation-failed", "GET", runs+"?view=gone", viewer.Token, nil)
	callProblem(t, e, 400, "invalid-page-token", "GET", runs+"?page_token=nope", viewer.Token, nil)
	callProblem(t, e, 401, "unauthenticated", "GET", runs, "", nil)
	callProblem(t, e, 404, "not-found", "GET", runs, outsider.Token, nil)
	callProblem(t, e, 404, "not-found", "GET", xs+"/"+missingID+"/runs", viewer.Token, nil)
	add("listRuns", 200, 400, 401, 404)

	if got := asJSON[projections.Run](t, call(t, e, 200, "GET", rp, viewer.Token, nil)); got.ID != run.ID || got.Tags["data"] != "2025-01" {
		t.Fatalf("get run: %+v", got)
	}
	callProblem(t, e, 404, "not-found", "GET", pp+"/runs/"+missingID, viewer.Token, nil)
	callProblem(t, e, 404, "not-found", "GET", rp, outsider.Token, nil)
	callProblem(t, e, 400, "validation-failed", "GET", rp+"?min_sequence=x", viewer.Token, nil)
	callProblem(t, e, 401, "unauthenticated", "GET", rp, "", nil)
	add("getRun", 200, 400, 401, 404)

	// Runs: change.
	r = call(t, e, 200, "PATCH", rp, editor.Token, map[string]any{"status": "FINISHED", "end_time": 1_700_000_060_000, "name": "renamed", "tags": map[string]string{"stage": "eval"}})
	if got := asJSON[projections.Run](t, r); got.Status != "FINISHED" || got.EndTime == nil || got.Name != "renamed" || got.Tags["mlflow.runName"] != "renamed" || got.Tags["stage"] != "eval" {
		t.Fatalf("updated run: %s", r.Body)
	}
	if r = call(t, e, 200, "PATCH", rp, editor.Token, map[string]any{"status": "FINISHED"}); r.Header.Get("Maestro-Sequence") != "" {
		t.Fatalf("a no-op PATCH has Maestro-Sequence %q", r.Header.Get("Maestro-Sequence"))
	}
	call(t, e, 202, "PATCH", rp, editor.Token, map[string]any{"tags": map[string]string{"note": "async"}}, async...)
	callProblem(t, e, 400, "validation-failed", "PATCH", rp, editor.Token, map[string]any{})
	callProblem(t, e, 400, "validation-failed", "PATCH", rp, editor.Token, map[string]any{"status": "DONE"})
	callProblem(t, e, 400, "malformed-json", "PATCH", rp, editor.Token, map[string]any{"status": "KILLED", "owner": "me"})
	callProblem(t, e, 403, "forbidden", "PATCH", rp, viewer.Token, map[string]any{"status": "KILLED"})
	callProblem(t, e, 404, "not-found", "PATCH", pp+"/runs/"+missingID, editor.Token, map[string]any{"status": "KILLED"})
	callProblem(t, e, 404, "not-found", "PATCH", rp, outsider.Token, map[string]any{"status": "KILLED"})
	add("updateRun", 200, 202, 400, 403, 404)
	add("updateRun", commandErrors(t, e, editor.Token, "PATCH", rp, pp+"/runs/"+missingID, map[string]any{"status": "KILLED"}, "trk-ur")...)

	params := map[string]any{"params": []map[string]string{{"key": "lr", "value": "0.1"}, {"key": "max depth", "value": "6"}}}
	if got := asJSON[projections.Run](t, call(t, e, 200, "POST", rp+"/params", editor.Token, params)); got.Params["lr"] != "0.1" || got.Params["max depth"] != "6" {
		t.Fatalf("logged params: %+v", got.Params)
	}
	if r = call(t, e, 200, "POST", rp+"/params", editor.Token, params); r.Header.Get("Maestro-Sequence") != "" {
		t.Fatalf("logging the same params again has Maestro-Sequence %q", r.Header.Get("Maestro-Sequence"))
	}
	call(t, e, 202, "POST", rp+"/params", editor.Token, map[string]any{"params": []map[string]string{{"key": "epochs", "value": "3"}}}, async...)
	callProblem(t, e, 400, "param-overwrite", "POST", rp+"/params", editor.Token, map[string]any{"params": []map[string]string{{"key": "lr", "value": "0.2"}}})
	callProblem(t, e, 400, "validation-failed", "POST", rp+"/params", editor.Token, map[string]any{"params": []map[string]string{}})
	callProblem(t, e, 400, "validation-failed", "POST", rp+"/params", editor.Token, map[string]any{"params": []map[string]string{{"key": "..", "value": "x"}}})
	callProblem(t, e, 400, "malformed-json", "POST", rp+"/params", editor.Token, map[string]any{"params": map[string]string{"lr": "0.1"}})
	callProblem(t, e, 403, "forbidden", "POST", rp+"/params", viewer.Token, params)
	callProblem(t, e, 404, "not-found", "POST", pp+"/runs/"+missingID+"/params", editor.Token, params)
	callProblem(t, e, 404, "not-found", "POST", rp+"/params", outsider.Token, params)
	add("logRunParams", 200, 202, 400, 403, 404)
	add("logRunParams", commandErrors(t, e, editor.Token, "POST", rp+"/params", pp+"/runs/"+missingID+"/params", params, "trk-lp")...)

	// Metrics: logged in one request (NaN, ±Inf and a number in a string
	// included), readable in the history when the answer arrives. The
	// answer's sequence is the metrics stream's (Maestro-Metrics-Sequence),
	// never Maestro-Sequence.
	mp := rp + "/metrics"
	points := map[string]any{"metrics": []map[string]any{
		{"key": "loss", "value": 0.5, "step": 1, "timestamp": 1_700_000_000_000},
		{"key": "loss", "value": "NaN", "step": 2, "timestamp": 1_700_000_000_100},
		{"key": "loss", "value": "Infinity", "step": 3, "timestamp": 1_700_000_000_200},
		{"key": "loss", "value": "-Infinity", "step": 4, "timestamp": 1_700_000_000_300},
		{"key": "loss", "value": "0.25", "timestamp": 1_700_000_000_400},
		{"key": "train/acc", "value": 0.75, "step": 1, "timestamp": 1_700_000_000_000},
	}}
	r = call(t, e, 200, "POST", mp, editor.Token, points, "Idempotency-Key", "trk-lm-1")
	if got := asJSON[api.MetricsLogged](t, r); got.RunID != run.ID || got.Logged != 6 || r.Header.Get("Maestro-Metrics-Sequence") == "" || r.Header.Get("Maestro-Sequence") != "" {
		t.Fatalf("logged metrics: %s (%v)", r.Body, r.Header)
	}
	if again := call(t, e, 200, "POST", mp, editor.Token, points, "Idempotency-Key", "trk-lm-1"); again.Header.Get("Idempotent-Replayed") != "true" ||
		again.Header.Get("Maestro-Metrics-Sequence") != r.Header.Get("Maestro-Metrics-Sequence") || !bytes.Equal(again.Body, r.Body) {
		t.Fatalf("replayed metrics: %v %s", again.Header, again.Body)
	}
	if ar := call(t, e, 202, "POST", mp, editor.Token, map[string]any{"metrics": []map[string]any{{"key": "async", "value": 1, "timestamp": 1}}}, async...); ar.Header.Get("Preference-Applied") != "respond-async" || ar.Header.Get("Maestro-Metrics-Sequence") == "" {
		t.Fatalf("async metrics: %v", ar.Header)
	}
	if p := callProblemBody(t, e, 400, "validation-failed", "POST", mp, editor.Token,
		map[string]any{"metrics": []map[string]any{{"key": "ok", "value": 1, "timestamp": 1}, {"key": "bad//key", "value": 1, "timestamp": 1}}}); !strings.HasPrefix(p.Detail, "metrics[1]") {
		t.Fatalf("bad key detail %q", p.Detail)
	}
	if p := callProblemBody(t, e, 400, "validation-failed", "POST", mp, editor.Token,
		map[string]any{"metrics": []map[string]any{{"key": "ok", "value": 1, "timestamp": -1}}}); !strings.HasPrefix(p.Detail, "metrics[0]") {
		t.Fatalf("bad timestamp detail %q", p.Detail)
	}
	callProblem(t, e, 400, "validation-failed", "POST", mp, editor.Token, map[string]any{"metrics": []map[string]any{}})
	callProblem(t, e, 400, "malformed-json", "POST", mp, editor.Token, map[string]any{"metrics": []map[string]any{{"key": "ok", "value": "fast"}}})
	callProblem(t, e, 400, "malformed-json", "POST", mp, editor.Token, map[string]any{"metrics": []map[string]any{{"key": "ok", "value": 1, "run_id": run.ID}}})
	callProblem(t, e, 403, "forbidden", "POST", mp, viewer.Token, points)
	callProblem(t, e, 404, "not-found", "POST", pp+"/runs/"+missingID+"/metrics", editor.Token, points)
	callProblem(t, e, 404, "not-found", "POST", mp, outsider.Token, points)
	add("logRunMetrics", 200, 202, 400, 403, 404)
	// The errors every command shares (commandErrors, with a body over this
	// route's 4 MiB limit rather than the 2 MiB of huge).
	call(t, e, 401, "POST", mp, "", points)
	callProblem(t, e, 400, "invalid-idempotency-key", "POST", mp, editor.Token, points, "Idempotency-Key", "bad key")
	callProblem(t, e, 413, "payload-too-large", "POST", mp, editor.Token, bytes.Repeat([]byte(" "), 4<<20+1), "Idempotency-Key", "trk-lm-huge")
	callProblem(t, e, 415, "unsupported-media-type", "POST", mp, editor.Token, []byte(`{}`), "Content-Type", "text/plain")
	call(t, e, 404, "POST", pp+"/runs/"+missingID+"/metrics", editor.Token, points, "Idempotency-Key", "trk-lm-2")
	callProblem(t, e, 422, "idempotency-key-reused", "POST", mp, editor.Token, points, "Idempotency-Key", "trk-lm-2")
	add("logRunMetrics", 400, 401, 413, 415, 422)

	hp := mp + "/"
	if h := asJSON[api.MetricHistory](t, call(t, e, 200, "GET", hp+"loss", viewer.Token, nil)); h.Key != "loss" || h.Truncated || len(h.Points) != 5 ||
		h.Points[0].Step != 0 || h.Points[0].Value != 0.25 || h.Points[1].Value != 0.5 || !math.IsNaN(float64(h.Points[2].Value)) ||
		!math.IsInf(float64(h.Points[3].Value), 1) || !math.IsInf(float64(h.Points[4].Value), -1) || h.Points[4].Timestamp != 1_700_000_000_300 {
		t.Fatalf("loss history: %+v", h)
	}
	if h := asJSON[api.MetricHistory](t, call(t, e, 200, "GET", hp+"train%2Facc", viewer.Token, nil, "Maestro-Min-Sequence", "1")); h.Key != "train/acc" || len(h.Points) != 1 || h.Points[0].Key != "train/acc" {
		t.Fatalf("train/acc history: %+v", h)
	}
	if h := asJSON[api.MetricHistory](t, call(t, e, 200, "GET", hp+"never%20logged?min_sequence=1", viewer.Token, nil)); len(h.Points) != 0 || h.Truncated {
		t.Fatalf("history of a key never logged: %+v", h)
	}
	callProblem(t, e, 400, "validation-failed", "GET", hp+"bad*key", viewer.Token, nil)
	callProblem(t, e, 400, "validation-failed", "GET", hp+"a%2F..%2Fb", viewer.Token, nil)
	callProblem(t, e, 400, "validation-failed", "GET", hp+"loss?min_sequence=x", viewer.Token, nil)
	callProblem(t, e, 401, "unauthenticated", "GET", hp+"loss", "", nil)
	callProblem(t, e, 404, "not-found", "GET", pp+"/runs/"+missingID+"/metrics/loss", viewer.Token, nil)
	callProblem(t, e, 404, "not-found", "GET", pp+"/runs/not-a-uuid/metrics/loss", viewer.Token, nil)
	callProblem(t, e, 404, "not-found", "GET", hp+"loss", outsider.Token, nil)
	add("getMetricHistory", 200, 400, 401, 404)

	call(t, e, 204, "DELETE", rp+"/tags/stage", editor.Token, nil)
	callProblem(t, e, 404, "not-found", "DELETE", rp+"/tags/stage", editor.Token, nil)
	callProblem(t, e, 404, "not-found", "DELETE", pp+"/runs/"+missingID+"/tags/data", editor.Token, nil)
	callProblem(t, e, 400, "validation-failed", "DELETE", rp+"/tags/mlflow.runName", editor.Token, nil)
	callProblem(t, e, 403, "forbidden", "DELETE", rp+"/tags/data", viewer.Token, nil)
	call(t, e, 200, "PATCH", rp, editor.Token, map[string]any{"tags": map[string]string{"tmp": "1"}})
	call(t, e, 202, "DELETE", rp+"/tags/tmp", editor.Token, nil, async...)
	add("deleteRunTag", 202, 204, 400, 403, 404)
	add("deleteRunTag", commandErrors(t, e, editor.Token, "DELETE", rp+"/tags/data", rp+"/tags/nope", nil, "trk-drt")...)

	// Runs: delete and restore.
	sp := pp + "/runs/" + second.ID
	if r = call(t, e, 204, "DELETE", sp, editor.Token, nil); r.Header.Get("Maestro-Sequence") == "" {
		t.Fatalf("delete without Maestro-Sequence: %v", r.Header)
	}
	call(t, e, 204, "DELETE", sp, editor.Token, nil)
	if del := asJSON[api.RunPage](t, call(t, e, 200, "GET", runs+"?view=deleted", viewer.Token, nil)); len(del.Items) != 1 || del.Items[0].ID != second.ID || del.Items[0].LifecycleStage != "deleted" {
		t.Fatalf("deleted runs: %+v", del.Items)
	}
	callProblem(t, e, 409, "run-deleted", "PATCH", sp, editor.Token, map[string]any{"status": "KILLED"})
	callProblem(t, e, 409, "run-deleted", "POST", sp+"/params", editor.Token, params)
	callProblem(t, e, 409, "run-deleted", "DELETE", sp+"/tags/mlflow.runName", editor.Token, nil)
	callProblem(t, e, 409, "run-deleted", "POST", sp+"/metrics", editor.Token, points)
	add("updateRun", 409)
	add("logRunParams", 409)
	add("deleteRunTag", 409)
	add("logRunMetrics", 409)
	callProblem(t, e, 403, "forbidden", "DELETE", sp, viewer.Token, nil)
	callProblem(t, e, 404, "not-found", "DELETE", pp+"/runs/"+missingID, editor.Token, nil)
	callProblem(t, e, 404, "not-found", "DELETE", sp, outsider.Token, nil)
	if got := asJSON[projections.Run](t, call(t, e, 200, "POST", sp+":restore", editor.Token, nil)); got.LifecycleStage != "active" {
		t.Fatalf("restored run: %+v", got)
	}
	call(t, e, 200, "POST", sp+":restore", editor.Token, nil)
	callProblem(t, e, 403, "forbidden", "POST", sp+":restore", viewer.Token, nil)
	callProblem(t, e, 404, "not-found", "POST", pp+"/runs/"+missingID+":restore", editor.Token, nil)
	call(t, e, 202, "DELETE", sp, editor.Token, nil, async...)
	call(t, e, 202, "POST", sp+":restore", editor.Token, nil, async...)
	add("deleteRun", 202, 204, 403, 404)
	add("deleteRun", commandErrors(t, e, editor.Token, "DELETE", sp, pp+"/runs/"+missingID, nil, "trk-dr")...)
	add("restoreRun", 200, 202, 403, 404)
	add("restoreRun", commandErrors(t, e, editor.Token, "POST", sp+":restore", pp+"/runs/"+missingID+":restore", nil, "trk-rr")...)

	// An archived project refuses every tracking command and stays readable.
	call(t, e, 200, "DELETE", pp, admin, nil)
	for _, c := range []struct {
		op, method, path string
		body             any
	}{
		{"createExperiment", "POST", xs, map[string]any{"name": "late"}},
		{"updateExperiment", "PATCH", xp, map[string]any{"name": "late"}},
		{"deleteExperiment", "DELETE", dp, nil},
		{"restoreExperiment", "POST", dp + ":restore", nil},
		{"deleteExperimentTag", "DELETE", xp + "/tags/goal", nil},
		{"createRun", "POST", runs, map[string]any{}},
		{"updateRun", "PATCH", rp, map[string]any{"status": "KILLED"}},
		{"deleteRun", "DELETE", rp, nil},
		{"restoreRun", "POST", rp + ":restore", nil},
		{"logRunParams", "POST", rp + "/params", map[string]any{"params": []map[string]string{{"key": "late", "value": "1"}}}},
		{"deleteRunTag", "DELETE", rp + "/tags/data", nil},
		{"logRunMetrics", "POST", mp, points},
	} {
		callProblem(t, e, 409, "project-archived", c.method, c.path, editor.Token, c.body)
		add(c.op, 409)
	}
	call(t, e, 200, "GET", rp, viewer.Token, nil)
	call(t, e, 200, "GET", hp+"loss", viewer.Token, nil)
	call(t, e, 200, "POST", pp+":restore", admin, nil)
	return want
}
