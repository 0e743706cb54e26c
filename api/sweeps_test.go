package api_test

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/maestro-ml/maestro/api"
	"github.com/maestro-ml/maestro/internal/testenv"
	"github.com/maestro-ml/maestro/projections"
)

// Sweeps on the API through real HTTP: the request's validation (every
// refusal a 400 naming its field, nothing appended), who may create, read
// and stop (the same authz policy as jobs: viewers read, editors run),
// and the shapes of a sweep, its trials and the list. Every exchange is
// validated against api/openapi.json by testenv. A sweep's trials run
// `true` with no runner in these platforms: their jobs stay queued, and no
// test here depends on a trial running.

// sweepBody is a valid sweep request; mutate a copy to break it.
func sweepBody(name string) map[string]any {
	return map[string]any{
		"experiment": "sweeps", "name": name,
		"objective": map[string]any{"metric": "loss", "direction": "minimize"},
		"space": map[string]any{
			"lr":  map[string]any{"type": "log_uniform", "low": 1e-4, "high": 0.1},
			"opt": map[string]any{"type": "categorical", "values": []any{"adam", 0.5, true}},
		},
		"algorithm":      "random",
		"early_stopping": map[string]any{"rule": "median", "warmup_steps": 2},
		"max_trials":     2, "parallelism": 1, "seed": 42,
		"trial": map[string]any{"command": []string{"true"}, "timeout": "1m", "params": map[string]any{"epochs": 3}, "max_retries": 1},
	}
}

// sleeping is body with trials that run until cancelled (a sweep that
// stays running until it is stopped).
func sleeping(body map[string]any) map[string]any {
	return with(body, "trial.command", []string{"sleep", "600"})
}

// with returns body with the value at the dotted path set (nil deletes it).
func with(body map[string]any, path string, v any) map[string]any {
	var cp func(m map[string]any) map[string]any
	cp = func(m map[string]any) map[string]any {
		out := make(map[string]any, len(m))
		for k, x := range m {
			if sub, ok := x.(map[string]any); ok {
				x = cp(sub)
			}
			out[k] = x
		}
		return out
	}
	out := cp(body)
	keys := strings.Split(path, ".")
	m := out
	for _, k := range keys[:len(keys)-1] {
		m = m[k].(map[string]any)
	}
	if v == nil {
		delete(m, keys[len(keys)-1])
	} else {
		m[keys[len(keys)-1]] = v
	}
	return out
}

// sweepsEnv is a platform with project "Tune" (slug tune), an editor, a
// viewer and a non-member.
type sweepsEnv struct {
	e                        *testenv.Env
	admin                    string
	editor, viewer, outsider regClient
	path                     string // /api/v1/projects/tune/sweeps
}

func startSweeps(t *testing.T, domain string) *sweepsEnv {
	t.Helper()
	e := testenv.Start(t, testenv.Config(t))
	s := &sweepsEnv{e: e, admin: e.Admin("root@" + domain).AccessToken, path: projectsPath + "/tune/sweeps"}
	s.editor = regUser(e, s.admin, "ed@"+domain, "viewer")
	s.viewer = regUser(e, s.admin, "vi@"+domain, "viewer")
	s.outsider = regUser(e, s.admin, "out@"+domain, "member")
	call(t, e, 201, "POST", projectsPath, s.admin, map[string]any{"name": "Tune"})
	call(t, e, 200, "PUT", projectsPath+"/tune/members/"+s.editor.ID, s.admin, map[string]any{"role": "editor"})
	call(t, e, 200, "PUT", projectsPath+"/tune/members/"+s.viewer.ID, s.admin, map[string]any{"role": "viewer"})
	return s
}

func lastSeq(t *testing.T, e *testenv.Env) uint64 {
	t.Helper()
	seq, err := e.P.Store.LastSequence(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

// Every refusal of a sweep request is a 400 whose detail starts with the
// field at fault, and appends nothing.
func TestSweepCreateValidation(t *testing.T) {
	t.Parallel()
	s := startSweeps(t, "sweepvalid.test")
	ok := sweepBody("ok")
	grid := with(with(ok, "algorithm", "grid"), "early_stopping", nil)
	long := strings.Repeat("p", 100)
	manyParams := map[string]any{}
	for i := range 33 {
		manyParams[fmt.Sprintf("p%d", i)] = map[string]any{"type": "int", "low": 0, "high": 3}
	}
	manyValues := make([]any, 101)
	for i := range manyValues {
		manyValues[i] = i
	}
	for _, c := range []struct {
		name  string
		body  map[string]any
		field string // the detail's start
	}{
		{"empty range", with(ok, "space.lr", map[string]any{"type": "uniform", "low": 0.5, "high": 0.5}), "space.lr.high: "},
		{"reversed range", with(ok, "space.lr", map[string]any{"type": "uniform", "low": 1, "high": 0}), "space.lr.high: "},
		{"log of 0", with(ok, "space.lr", map[string]any{"type": "log_uniform", "low": 0, "high": 1}), "space.lr.low: "},
		{"log of a negative", with(ok, "space.lr", map[string]any{"type": "log_uniform", "low": -1, "high": 1}), "space.lr.low: "},
		{"grid over a continuous range", grid, "space.lr.type: "},
		{"int range of fractions", with(ok, "space.lr", map[string]any{"type": "int", "low": 0.5, "high": 3}), "space.lr.low: "},
		{"range without high", with(ok, "space.lr", map[string]any{"type": "uniform", "low": 0}), "space.lr.high: "},
		{"unknown param type", with(ok, "space.lr", map[string]any{"type": "normal", "low": 0, "high": 1}), "space.lr.type: "},
		{"no values", with(ok, "space.opt", map[string]any{"type": "categorical", "values": []any{}}), "space.opt.values: "},
		{"repeated value", with(ok, "space.opt", map[string]any{"type": "categorical", "values": []any{"a", "a"}}), "space.opt.values[1]: "},
		{"a value that is an object", with(ok, "space.opt", map[string]any{"type": "categorical", "values": []any{"a", map[string]any{}}}), "space.opt.values[1]: "},
		{"a null value", with(ok, "space.opt", map[string]any{"type": "categorical", "values": []any{nil}}), "space.opt.values[0]: "},
		{"too many values", with(ok, "space.opt", map[string]any{"type": "categorical", "values": manyValues}), "space.opt.values: "},
		{"too many params", with(ok, "space", manyParams), "space: "},
		{"empty space", with(ok, "space", map[string]any{}), "space: "},
		{"bad param name", with(ok, "space", map[string]any{"1lr": map[string]any{"type": "int", "low": 0, "high": 1}}), "space.1lr: "},
		{"a long param name is cut", with(ok, "space", map[string]any{long: map[string]any{"type": "int", "low": 0, "high": 1}}), "space." + long[:64] + "…: "},
		{"unknown algorithm", with(ok, "algorithm", "annealing"), "algorithm: "},
		{"missing objective metric", with(ok, "objective", map[string]any{"direction": "minimize"}), "objective.metric: "},
		{"bad direction", with(ok, "objective.direction", "up"), "objective.direction: "},
		{"unknown early stopping rule", with(ok, "early_stopping", map[string]any{"rule": "hyperband"}), "early_stopping.rule: "},
		{"median with asha's field", with(ok, "early_stopping", map[string]any{"rule": "median", "reduction_factor": 3}), "early_stopping.reduction_factor: "},
		{"max_trials 0", with(ok, "max_trials", 0), "max_trials: "},
		{"max_trials too many", with(ok, "max_trials", 1001), "max_trials: "},
		{"parallelism too high", with(ok, "parallelism", 101), "parallelism: "},
		{"seed beyond 2^53", with(ok, "seed", uint64(1)<<60), "seed: "},
		{"no name", with(ok, "name", nil), "name: "},
		{"no command", with(ok, "trial.command", []string{}), "trial: "},
		{"bad timeout", with(ok, "trial.timeout", "soon"), "trial.timeout: "},
		{"a fixed param that is sampled", with(ok, "trial.params", map[string]any{"lr": 1}), "trial.params.lr: "},
		{"a fixed param that is a list", with(ok, "trial.params", map[string]any{"x": []int{1}}), "trial.params.x: "},
		{"no experiment", with(ok, "experiment", nil), "experiment: "},
		{"a long experiment", with(ok, "experiment", strings.Repeat("x", 501)), "experiment: "},
	} {
		before := lastSeq(t, s.e)
		p := callProblemBody(t, s.e, 400, "validation-failed", "POST", s.path, s.editor.Token, c.body)
		if !strings.HasPrefix(p.Detail, c.field) {
			t.Errorf("%s: detail %q, want it to start with %q", c.name, p.Detail, c.field)
		}
		if after := lastSeq(t, s.e); after != before {
			t.Errorf("%s: the refused request appended events (%d -> %d)", c.name, before, after)
		}
	}
	// The JSON shape: unknown fields, a fraction where a count goes.
	callProblem(t, s.e, 400, "malformed-json", "POST", s.path, s.editor.Token, with(ok, "queue", "gpu"))
	callProblem(t, s.e, 400, "malformed-json", "POST", s.path, s.editor.Token, with(ok, "space.lr.step", 2))
	callProblem(t, s.e, 400, "malformed-json", "POST", s.path, s.editor.Token, with(ok, "max_trials", 1.5))
	callProblem(t, s.e, 400, "malformed-json", "POST", s.path, s.editor.Token, with(ok, "trial.image", "x"))
	// A grid of int and categorical params is fine, and max_trials 0 is
	// its size.
	g := with(with(grid, "space", map[string]any{"n": map[string]any{"type": "int", "low": 1, "high": 3},
		"opt": map[string]any{"type": "categorical", "values": []any{"a", "b"}}}), "max_trials", 0)
	if sw := asJSON[projections.SweepDetail](t, call(t, s.e, 201, "POST", s.path, s.editor.Token, g)); sw.MaxTrials != 6 || sw.Algorithm != "grid" {
		t.Fatalf("grid sweep: max_trials %d", sw.MaxTrials)
	}
}

// Viewers read sweeps, editors create and stop them; a viewer's create and
// stop are refused with nothing appended; a non-member gets the 404 of a
// missing project. The shapes: the request canonicalised, the trials by
// number, a page of sweeps.
func TestSweepsAPI(t *testing.T) {
	t.Parallel()
	s := startSweeps(t, "sweepapi.test")
	e := s.e

	r := call(t, e, 201, "POST", s.path, s.editor.Token, sleeping(sweepBody("first")))
	sw := asJSON[projections.SweepDetail](t, r)
	if r.Header.Get("Location") != projectsPath+"/"+sw.ProjectID+"/sweeps/"+sw.ID || r.Header.Get("Maestro-Sequence") == "" {
		t.Fatalf("Location %q, sequence %q", r.Header.Get("Location"), r.Header.Get("Maestro-Sequence"))
	}
	if sw.State != "running" || sw.StopRequested || sw.Seed != 42 || sw.Name != "first" || sw.Objective.Metric != "loss" ||
		sw.MaxTrials != 2 || sw.Parallelism != 1 || sw.EarlyStopping == nil || sw.EarlyStopping.WarmupSteps != 2 ||
		!slices.Equal(sw.Space["opt"].Values, []string{"adam", "0.5", "true"}) || *sw.Space["lr"].Low != 1e-4 ||
		sw.Trial.Params["epochs"] != "3" || sw.Trial.TimeoutSeconds != 60 || sw.Trial.MaxRetries != 1 ||
		!slices.Equal(sw.Trial.Command, []string{"sleep", "600"}) || sw.CreatedBy != s.editor.ID || sw.Trials == nil || sw.Progress == nil {
		t.Fatalf("created sweep: %s", r.Body)
	}
	// The experiment was created by name, as a job's is.
	x := asJSON[projections.Experiment](t, call(t, e, 200, "GET", projectsPath+"/tune/experiments/"+sw.ExperimentID, s.viewer.Token, nil))
	if x.Name != "sweeps" {
		t.Fatalf("experiment %+v", x)
	}
	// Without a seed, one is chosen and shown.
	second := asJSON[projections.SweepDetail](t, call(t, e, 201, "POST", s.path, s.editor.Token, with(sweepBody("second"), "seed", nil)))

	// A viewer reads both, newest first, by page and by state.
	pg := asJSON[api.SweepPage](t, call(t, e, 200, "GET", s.path+"?max_results=1", s.viewer.Token, nil))
	if len(pg.Items) != 1 || pg.Items[0].ID != second.ID || pg.NextPageToken == "" {
		t.Fatalf("page 1: %+v", pg)
	}
	pg = asJSON[api.SweepPage](t, call(t, e, 200, "GET", s.path+"?max_results=1&page_token="+url.QueryEscape(pg.NextPageToken), s.viewer.Token, nil))
	if len(pg.Items) != 1 || pg.Items[0].ID != sw.ID || pg.NextPageToken != "" {
		t.Fatalf("page 2: %+v", pg)
	}
	got := asJSON[projections.SweepDetail](t, call(t, e, 200, "GET", s.path+"/"+sw.ID, s.viewer.Token, nil))
	if got.ID != sw.ID || got.Seed != 42 || got.Trial.Params["epochs"] != "3" || got.Trials == nil {
		t.Fatalf("get: %+v", got)
	}
	for _, tr := range got.Trials {
		if tr.Number < 1 || tr.Params["opt"] == "" || tr.Params["lr"] == "" {
			t.Fatalf("trial %+v", tr)
		}
	}
	callProblem(t, e, 400, "validation-failed", "GET", s.path+"?state=done", s.viewer.Token, nil)
	callProblem(t, e, 404, "not-found", "GET", s.path+"/00000000-0000-4000-8000-000000000000", s.viewer.Token, nil)
	callProblem(t, e, 404, "not-found", "GET", s.path+"/nope", s.viewer.Token, nil)

	// A viewer may not create or stop; a non-member gets the 404 of a
	// missing project, for every route. Nothing of theirs is recorded (the
	// scheduler appends trials meanwhile, so the stream's head says
	// nothing: the sweeps do).
	callProblem(t, e, 403, "forbidden", "POST", s.path, s.viewer.Token, sweepBody("viewer's"))
	callProblem(t, e, 403, "forbidden", "POST", s.path+"/"+sw.ID+":stop", s.viewer.Token, nil)
	callProblem(t, e, 404, "not-found", "POST", s.path, s.outsider.Token, sweepBody("outsider's"))
	callProblem(t, e, 404, "not-found", "POST", s.path+"/"+sw.ID+":stop", s.outsider.Token, nil)
	callProblem(t, e, 404, "not-found", "GET", s.path, s.outsider.Token, nil)
	callProblem(t, e, 404, "not-found", "GET", s.path+"/"+sw.ID, s.outsider.Token, nil)
	if page := asJSON[api.SweepPage](t, call(t, e, 200, "GET", s.path, s.admin, nil)); len(page.Items) != 2 {
		t.Fatalf("refused creates made sweeps: %d sweeps", len(page.Items))
	}
	if g := asJSON[projections.SweepDetail](t, call(t, e, 200, "GET", s.path+"/"+sw.ID, s.admin, nil)); g.StopRequested || g.State != "running" {
		t.Fatalf("a refused stop was recorded: %+v", g.Sweep)
	}

	// The editor stops it: stop requested at once, stopped once its
	// trials' jobs are cancelled; stopping again while it stops changes
	// nothing, and once it has ended is a 409.
	st := asJSON[projections.SweepDetail](t, call(t, e, 200, "POST", s.path+"/"+sw.ID+":stop", s.editor.Token, nil))
	if !st.StopRequested || (st.State != "stopping" && st.State != "stopped") || !strings.Contains(st.Reason, "ed@sweepapi.test") {
		t.Fatalf("stopped sweep: %+v", st.Sweep)
	}
	eventually(t, 60*time.Second, "the stopped sweep ends", func() error {
		g := asJSON[projections.SweepDetail](t, call(t, e, 200, "GET", s.path+"/"+sw.ID, s.viewer.Token, nil))
		if g.State != "stopped" || g.EndedAt == nil {
			return fmt.Errorf("state %s, trials %+v", g.State, g.Counts)
		}
		if g.Counts.Running != 0 || g.Counts.Suggested != 0 || g.Counts.Total != g.Counts.Cancelled+g.Counts.Failed+g.Counts.Completed+g.Counts.Pruned {
			return fmt.Errorf("trials of a stopped sweep: %+v", g.Counts)
		}
		return nil
	})
	callProblem(t, e, 409, "sweep-ended", "POST", s.path+"/"+sw.ID+":stop", s.editor.Token, nil)
	if pg := asJSON[api.SweepPage](t, call(t, e, 200, "GET", s.path+"?state=stopped", s.viewer.Token, nil)); len(pg.Items) != 1 || pg.Items[0].ID != sw.ID {
		t.Fatalf("stopped sweeps: %+v", pg)
	}
	// The second sweep's trials run `true`, which logs no objective: it
	// completes with two failed trials and no best.
	eventually(t, 60*time.Second, "the second sweep completes", func() error {
		g := asJSON[projections.SweepDetail](t, call(t, e, 200, "GET", s.path+"/"+second.ID, s.viewer.Token, nil))
		if g.State != "completed" || g.Counts.Failed != 2 || g.Best != nil || len(g.Progress) != 2 || len(g.Trials) != 2 {
			return fmt.Errorf("state %s, trials %+v, progress %+v", g.State, g.Counts, g.Progress)
		}
		return nil
	})
}

// walkSweeps exercises every sweep route's success and main errors for
// TestOpenAPIConformance (which validates each exchange against the
// document) and returns the statuses it provoked per operation.
func walkSweeps(t *testing.T, e *testenv.Env, admin string) map[string][]int {
	t.Helper()
	want := map[string][]int{}
	add := func(op string, codes ...int) { want[op] = append(want[op], codes...) }
	async := []string{"Prefer", "respond-async"}
	const missingID = "00000000-0000-4000-8000-000000000000"

	editor := regUser(e, admin, "sweep-editor@example.com", "viewer")
	viewer := regUser(e, admin, "sweep-viewer@example.com", "viewer")
	outsider := regUser(e, admin, "sweep-outsider@example.com", "member")
	proj := asJSON[api.ProjectResponse](t, call(t, e, 201, "POST", projectsPath, admin, map[string]any{"name": "Sweeps Walk"}))
	pp := projectsPath + "/" + proj.Slug
	call(t, e, 200, "PUT", pp+"/members/"+editor.ID, admin, map[string]any{"role": "editor"})
	call(t, e, 200, "PUT", pp+"/members/"+viewer.ID, admin, map[string]any{"role": "viewer"})
	ss := pp + "/sweeps"

	// Create.
	sw := asJSON[projections.SweepDetail](t, call(t, e, 201, "POST", ss, editor.Token, sleeping(sweepBody("walk"))))
	sp := ss + "/" + sw.ID
	asyncSweep := asJSON[projections.SweepDetail](t, call(t, e, 202, "POST", ss, editor.Token, sleeping(sweepBody("walk async")), async...))
	callProblem(t, e, 400, "validation-failed", "POST", ss, editor.Token, with(sweepBody("x"), "space.lr.low", 0))
	callProblem(t, e, 400, "malformed-json", "POST", ss, editor.Token, with(sweepBody("x"), "queue", "gpu"))
	callProblem(t, e, 403, "forbidden", "POST", ss, viewer.Token, sweepBody("x"))
	callProblem(t, e, 404, "not-found", "POST", ss, outsider.Token, sweepBody("x"))
	gone := asJSON[projections.Experiment](t, call(t, e, 201, "POST", pp+"/experiments", editor.Token, map[string]any{"name": "gone"}))
	call(t, e, 204, "DELETE", pp+"/experiments/"+gone.ID, editor.Token, nil)
	callProblem(t, e, 409, "experiment-deleted", "POST", ss, editor.Token, with(sweepBody("x"), "experiment", gone.ID))
	add("createSweep", 201, 202, 400, 403, 404, 409)
	add("createSweep", commandErrors(t, e, editor.Token, "POST", ss, projectsPath+"/nope/sweeps", sweepBody("k"), "sweep-create")...)

	// Read.
	pg := asJSON[api.SweepPage](t, call(t, e, 200, "GET", ss+"?max_results=1", viewer.Token, nil))
	if len(pg.Items) != 1 || pg.NextPageToken == "" {
		t.Fatalf("sweeps page 1: %+v", pg)
	}
	call(t, e, 200, "GET", ss+"?max_results=200&page_token="+url.QueryEscape(pg.NextPageToken), viewer.Token, nil)
	call(t, e, 200, "GET", ss+"?state=running", viewer.Token, nil)
	callProblem(t, e, 400, "validation-failed", "GET", ss+"?state=stuck", viewer.Token, nil)
	callProblem(t, e, 400, "invalid-page-token", "GET", ss+"?page_token=nope", viewer.Token, nil)
	callProblem(t, e, 401, "unauthenticated", "GET", ss, "", nil)
	callProblem(t, e, 404, "not-found", "GET", ss, outsider.Token, nil)
	add("listSweeps", 200, 400, 401, 404)

	call(t, e, 200, "GET", sp, viewer.Token, nil)
	call(t, e, 200, "GET", ss+"/"+asyncSweep.ID, viewer.Token, nil)
	callProblem(t, e, 400, "validation-failed", "GET", sp+"?min_sequence=x", viewer.Token, nil)
	callProblem(t, e, 401, "unauthenticated", "GET", sp, "", nil)
	callProblem(t, e, 404, "not-found", "GET", ss+"/"+missingID, viewer.Token, nil)
	callProblem(t, e, 404, "not-found", "GET", sp, outsider.Token, nil)
	add("getSweep", 200, 400, 401, 404)

	// Stop: running or stopping, accepted; once ended, refused.
	call(t, e, 200, "POST", sp+":stop", editor.Token, nil)
	call(t, e, 202, "POST", ss+"/"+asyncSweep.ID+":stop", editor.Token, nil, async...)
	callProblem(t, e, 403, "forbidden", "POST", ss+"/"+asyncSweep.ID+":stop", viewer.Token, nil)
	callProblem(t, e, 404, "not-found", "POST", ss+"/"+missingID+":stop", editor.Token, nil)
	callProblem(t, e, 404, "not-found", "POST", sp+":stop", outsider.Token, nil)
	eventually(t, 60*time.Second, "the stopped sweep ends", func() error {
		if got := asJSON[projections.SweepDetail](t, call(t, e, 200, "GET", sp, viewer.Token, nil)); got.State != "stopped" {
			return fmt.Errorf("state %s", got.State)
		}
		return nil
	})
	callProblem(t, e, 409, "sweep-ended", "POST", sp+":stop", editor.Token, nil)
	add("stopSweep", 200, 202, 403, 404, 409)
	add("stopSweep", commandErrors(t, e, editor.Token, "POST", sp+":stop", ss+"/"+missingID+":stop", nil, "sweep-stop")...)
	// Leave no trial queued.
	for _, it := range asJSON[api.SweepPage](t, call(t, e, 200, "GET", ss+"?state=running&max_results=200", admin, nil)).Items {
		call(t, e, 200, "POST", ss+"/"+it.ID+":stop", admin, nil)
	}
	return want
}

// sweepCells are the sweep routes' cells of the authorization matrix
// (TestRegistryAuthorizationMatrix): viewers read, editors create and stop.
func sweepCells() map[string]mxCell {
	const sweeps = mxProj + "/sweeps"
	return map[string]mxCell{
		"POST " + sweeps: {action: mxModelWrite, build: func(m *matrix, _ *mxProject) mxReq {
			return mxReq{body: with(with(sweepBody(m.unique("mx sweep")), "experiment", "x"), "max_trials", 1)}
		}},
		"GET " + sweeps: {action: mxRead, build: func(*matrix, *mxProject) mxReq { return mxReq{} }},
		"GET " + sweeps + "/{sweep}": {action: mxRead, build: func(m *matrix, p *mxProject) mxReq {
			return mxReq{params: map[string]string{"sweep": m.sweep(p, false)}}
		}},
		"POST " + sweeps + "/{sweep}:stop": {action: mxModelWrite, build: func(m *matrix, p *mxProject) mxReq {
			return mxReq{params: map[string]string{"sweep": m.sweep(p, true)}}
		}},
	}
}

// mxSweeps holds a fixture sweep per matrix and project (the read cells
// share it; a stop cell gets a fresh one).
var mxSweeps sync.Map

// sweep returns the id of a sweep in p created by the admin: the shared
// one, or a fresh one.
func (m *matrix) sweep(p *mxProject, fresh bool) string {
	m.t.Helper()
	key := fmt.Sprintf("%p/%s", m, p.id)
	if !fresh {
		if id, ok := mxSweeps.Load(key); ok {
			return id.(string)
		}
	}
	body := with(with(sweepBody(m.unique("fixture sweep")), "experiment", "x"), "max_trials", 1)
	if fresh {
		body = sleeping(body) // running until a stop cell stops it
	}
	s := asJSON[projections.SweepDetail](m.t, m.admin("POST", mxProjects+"/"+p.slug+"/sweeps", body))
	if !fresh {
		mxSweeps.Store(key, s.ID)
	}
	return s.ID
}
