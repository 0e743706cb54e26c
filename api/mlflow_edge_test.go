package api_test

import (
	"cmp"
	"encoding/json"
	"maps"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/maestro-ml/maestro/api"
)

// Every MLflow RPC, every field MLflow's requests have, each in turn set
// to what a careless or hostile client sends (NUL, which Postgres refuses
// in text; null; a negative number where a string or count goes; arrays
// and objects; long non-ASCII text), the other fields valid: the answer is
// 200 or MLflow's error body with a status below 500 (a 5xx is a bug, and
// one MLflow's clients retry for minutes). Generated from the route table,
// so a new RPC is swept too.
func TestMLflowOddInputs(t *testing.T) {
	t.Parallel()
	m := newMLflowProject(t, "mlodd.test", "Odd Inputs")
	py := m.py
	var x struct {
		ExperimentID string `json:"experiment_id"`
	}
	py.ok("POST", "experiments/create", map[string]any{"name": "odd"}, &x)
	var cr struct{ Run api.MLflowRun }
	py.ok("POST", "runs/create", map[string]any{"experiment_id": x.ExperimentID}, &cr)
	rid := cr.Run.Info.RunID
	py.ok("POST", "registered-models/create", map[string]any{"name": "m"}, nil)
	py.ok("POST", "model-versions/create", map[string]any{"name": "m", "source": "runs:/" + rid + "/model", "run_id": rid}, nil)

	valid := map[string]any{"name": "m", "experiment_id": x.ExperimentID, "experiment_ids": []string{x.ExperimentID}, "run_id": rid,
		"key": "k", "value": "v", "timestamp": 1, "version": "1", "stage": "Staging", "alias": "a", "source": "s3://b/m",
		"new_name": "n2", "metric_key": "k", "experiment_name": "odd"}
	// The fields of MLflow's requests, by the RPC's first path segment.
	paging := []string{"max_results", "page_token", "filter", "order_by"}
	fields := map[string][]string{
		"experiments": append([]string{"experiment_id", "name", "new_name", "key", "value", "tags", "view_type", "experiment_name",
			"artifact_location"}, paging...),
		"runs": append([]string{"run_id", "run_uuid", "experiment_id", "experiment_ids", "key", "value", "timestamp", "step", "status",
			"end_time", "start_time", "run_name", "tags", "metrics", "params", "datasets", "run_view_type"}, paging...),
		// The npm client's path of set-experiment-tag (its URL lacks a slash).
		"experimentsset-experiment-tag": {"experiment_id", "key", "value"},
		"metrics":                       {"run_id", "run_uuid", "metric_key", "max_results", "page_token"},
		"artifacts":                     {"run_id", "run_uuid", "path", "page_token"},
		"registered-models": append([]string{"name", "new_name", "description", "tags", "key", "value", "alias", "version",
			"stages"}, paging...),
		"model-versions": append([]string{"name", "version", "source", "run_id", "run_link", "tags", "description", "stage",
			"archive_existing_versions", "key", "value"}, paging...),
	}
	// (Out-of-range numbers are TestMLflowFieldTypes' and FuzzMLflowDecode's.)
	odd := []any{nil, "x\u0000y", -1, []any{"\u0000", 1}, map[string]any{"\u0000": nil},
		[]map[string]any{{"key": "\u0000", "value": "\u0000", "timestamp": "x"}}, strings.Repeat("é\u2028", 300)}

	type probe struct {
		method, rpc, what string
		body              map[string]any
	}
	probes := make(chan probe)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range probes {
				path := py.base + "/api/2.0/mlflow/" + p.rpc
				var body any = p.body
				if p.method == "GET" {
					q := url.Values{}
					for k, v := range p.body {
						switch v := v.(type) {
						case nil:
						case string:
							q.Set(k, v)
						case []string:
							q[k] = v
						default:
							b, _ := json.Marshal(v)
							q.Set(k, string(b))
						}
					}
					path, body = path+"?"+q.Encode(), nil
				}
				r, err := m.e.Send(p.method, path, "", body, "Authorization", py.auth)
				if err != nil {
					t.Error(err)
					continue
				}
				var me api.MLflowError
				if r.Status >= 500 || (r.Status != 200 && (json.Unmarshal(r.Body, &me) != nil || me.ErrorCode == "")) {
					t.Errorf("%s %s with %s: %d %s", p.method, p.rpc, p.what, r.Status, r.Body)
				}
			}
		}()
	}
	// The RPCs that delete or rename what the valid fields name go last,
	// so that the others get past the lookups to their deeper checks.
	routes := slices.DeleteFunc(m.e.P.API.Routes(), func(rt api.Route) bool {
		// The other prefixes run the same handlers; the proxy's paths are not RPCs.
		return !rt.MLflow || !strings.HasPrefix(rt.Pattern, "/mlflow/{project}/api/2.0/mlflow/")
	})
	slices.SortStableFunc(routes, func(a, b api.Route) int {
		last := func(rt api.Route) bool {
			return strings.HasSuffix(rt.Pattern, "/delete") || strings.HasSuffix(rt.Pattern, "/rename") ||
				strings.HasSuffix(rt.Pattern, "experiments/update")
		}
		return cmp.Compare(b2i(last(a)), b2i(last(b)))
	})
	for _, rt := range routes {
		rpc := strings.TrimPrefix(rt.Pattern, "/mlflow/{project}/api/2.0/mlflow/")
		group, _, _ := strings.Cut(rpc, "/")
		if _, ok := fields[group]; !ok {
			t.Errorf("%s %s: no fields to sweep for RPCs under %q", rt.Method, rt.Pattern, group)
		}
		for _, f := range fields[group] {
			for _, v := range odd {
				body := map[string]any{}
				for k, x := range valid {
					body[k] = x
				}
				body[f] = v
				b, _ := json.Marshal(v)
				probes <- probe{method: rt.Method, rpc: rpc, what: f + "=" + string(b[:min(len(b), 40)]), body: body}
			}
		}
	}
	close(probes)
	wg.Wait()
}

// A field sent as JSON null is a field not sent, as MLflow's parser
// (protobuf's JSON mapping) reads it; integral numbers in float form are
// integers, as Python's json hands them to protobuf.
func TestMLflowNullIsUnset(t *testing.T) {
	t.Parallel()
	m := newMLflowProject(t, "mlnull.test", "Null Fields")
	py := m.py
	var cr struct{ Run api.MLflowRun }
	// No experiment: the Default one ("0"); no start time: now.
	py.ok("POST", "runs/create", map[string]any{"experiment_id": nil, "start_time": nil, "run_name": nil, "tags": nil}, &cr)
	var d struct{ Experiment api.MLflowExperiment }
	py.ok("GET", "experiments/get", url.Values{"experiment_id": {"0"}}, &d)
	if cr.Run.Info.ExperimentID != d.Experiment.ExperimentID || cr.Run.Info.StartTime < 1e12 {
		t.Fatalf("run with null experiment and start: %+v, Default %+v", cr.Run.Info, d.Experiment)
	}
	rid := cr.Run.Info.RunID
	py.ok("POST", "runs/log-metric", map[string]any{"run_id": rid, "key": "loss", "value": 0.5, "timestamp": 1e12, "step": nil}, nil)
	py.ok("POST", "runs/log-batch", map[string]any{"run_id": rid, "params": nil, "tags": nil,
		"metrics": []map[string]any{{"key": "loss", "value": 0.25, "timestamp": 1000000000001.0, "step": 2e0}}}, nil)
	var up struct {
		RunInfo api.MLflowRunInfo `json:"run_info"`
	}
	py.ok("POST", "runs/update", map[string]any{"run_id": rid, "status": nil, "end_time": nil, "run_name": nil}, &up)
	if up.RunInfo.Status != "RUNNING" || up.RunInfo.EndTime != nil {
		t.Fatalf("update with null fields changed the run: %+v", up.RunInfo)
	}
	var hist struct {
		Metrics []mlMetric `json:"metrics"`
	}
	py.ok("GET", "metrics/get-history", url.Values{"run_id": {rid}, "metric_key": {"loss"}}, &hist)
	if len(hist.Metrics) != 2 || hist.Metrics[0].Step != 0 || hist.Metrics[0].Timestamp != 1e12 ||
		hist.Metrics[1].Step != 2 || hist.Metrics[1].Timestamp != 1e12+1 {
		t.Fatalf("history: %+v", hist.Metrics)
	}
	// Null where a value is required is a missing value; a fraction is
	// no integer.
	py.fail(400, "INVALID_PARAMETER_VALUE", "POST", "runs/log-metric", map[string]any{"run_id": rid, "key": "loss", "value": 1, "timestamp": nil})
	py.fail(400, "INVALID_PARAMETER_VALUE", "POST", "experiments/delete", map[string]any{"experiment_id": nil})
	py.fail(400, "INVALID_PARAMETER_VALUE", "POST", "runs/log-metric", map[string]any{"run_id": rid, "key": "loss", "value": 1, "timestamp": 1.5})
	py.fail(400, "INVALID_PARAMETER_VALUE", "POST", "runs/log-metric", map[string]any{"run_id": rid, "key": "loss", "value": 1, "timestamp": 1e19})
	py.fail(400, "INVALID_PARAMETER_VALUE", "POST", "runs/log-metric", map[string]any{"run_id": rid, "key": "loss", "value": 1, "timestamp": "1e3"})

	// Registry: a null archive_existing_versions is false.
	py.ok("POST", "registered-models/create", map[string]any{"name": "m", "description": nil, "tags": nil}, nil)
	py.ok("POST", "model-versions/create", map[string]any{"name": "m", "source": "runs:/" + rid + "/model", "run_id": nil}, nil)
	owner := mlflowClient{t: t, e: m.e, base: py.base, auth: bearer(m.ana.Token)}
	var v struct {
		ModelVersion api.MLflowModelVersion `json:"model_version"`
	}
	owner.ok("POST", "model-versions/transition-stage", map[string]any{"name": "m", "version": 1, "stage": "Staging",
		"archive_existing_versions": nil}, &v)
	if v.ModelVersion.CurrentStage != "Staging" || v.ModelVersion.Version != "1" {
		t.Fatalf("transition: %+v", v.ModelVersion)
	}
}

// Names and keys no experiment or metric can have (NUL, which Postgres
// refuses in a query parameter; over-long; outside MLflow's key syntax)
// are found nowhere, as MLflow answers for what does not exist, instead of
// failing inside the query; and a search's list of experiments is bounded
// before it is resolved.
func TestMLflowLookupsOfImpossibleNames(t *testing.T) {
	t.Parallel()
	m := newMLflowProject(t, "mlnames.test", "Impossible Names")
	py := m.py
	for _, name := range []string{"\u0000", "a\u0000b", "\x7f", strings.Repeat("x", 501)} {
		py.fail(404, "RESOURCE_DOES_NOT_EXIST", "GET", "experiments/get-by-name", url.Values{"experiment_name": {name}})
	}
	var cr struct{ Run api.MLflowRun }
	py.ok("POST", "runs/create", map[string]any{}, &cr)
	for _, key := range []string{"\u0000", "loss\u0000", "a b!", "../x", strings.Repeat("k", 251)} {
		r := py.ok("GET", "metrics/get-history", url.Values{"run_id": {cr.Run.Info.RunID}, "metric_key": {key}}, nil)
		if strings.TrimSpace(string(r.Body)) != "{}" {
			t.Fatalf("history of %q: %s", key, r.Body)
		}
	}
	// The run is still checked first.
	py.fail(404, "RESOURCE_DOES_NOT_EXIST", "GET", "metrics/get-history", url.Values{"run_id": {"00000000-0000-4000-8000-000000000000"}, "metric_key": {"\u0000"}})

	// A search names at most 100 experiments, refused before any is looked
	// up.
	zeros := make([]string, 101)
	for i := range zeros {
		zeros[i] = "0"
	}
	py.fail(400, "INVALID_PARAMETER_VALUE", "POST", "runs/search", map[string]any{"experiment_ids": zeros})
	py.ok("POST", "runs/search", map[string]any{"experiment_ids": zeros[:100]}, nil)
}

// MLflow deletes an experiment's runs with it: searches show a deleted
// experiment's runs as deleted runs, in every view.
func TestMLflowSearchRunsOfDeletedExperiments(t *testing.T) {
	t.Parallel()
	m := newMLflowProject(t, "mldelx.test", "Deleted Experiments")
	py := m.py
	newExperiment := func(name string) string {
		var x struct {
			ExperimentID string `json:"experiment_id"`
		}
		py.ok("POST", "experiments/create", map[string]any{"name": name}, &x)
		return x.ExperimentID
	}
	newRun := func(xid string) string {
		var cr struct{ Run api.MLflowRun }
		py.ok("POST", "runs/create", map[string]any{"experiment_id": xid}, &cr)
		return cr.Run.Info.RunID
	}
	live, gone := newExperiment("live"), newExperiment("gone")
	liveActive, liveDeleted := newRun(live), newRun(live)
	goneActive, goneDeleted := newRun(gone), newRun(gone)
	py.ok("POST", "runs/delete", map[string]any{"run_id": liveDeleted}, nil)
	py.ok("POST", "runs/delete", map[string]any{"run_id": goneDeleted}, nil)
	py.ok("POST", "experiments/delete", map[string]any{"experiment_id": gone}, nil)

	search := func(view string, ids ...string) map[string]string {
		t.Helper()
		var sr struct {
			Runs []api.MLflowRun `json:"runs"`
		}
		py.ok("POST", "runs/search", map[string]any{"experiment_ids": ids, "run_view_type": view}, &sr)
		got := map[string]string{}
		for _, r := range sr.Runs {
			got[r.Info.RunID] = r.Info.LifecycleStage
		}
		return got
	}
	for _, c := range []struct {
		view string
		ids  []string
		want map[string]string
	}{
		{"ACTIVE_ONLY", []string{gone}, map[string]string{}},
		{"ACTIVE_ONLY", []string{live, gone}, map[string]string{liveActive: "active"}},
		{"DELETED_ONLY", []string{gone}, map[string]string{goneActive: "deleted", goneDeleted: "deleted"}},
		{"DELETED_ONLY", []string{live}, map[string]string{liveDeleted: "deleted"}},
		{"DELETED_ONLY", []string{gone, live}, map[string]string{liveDeleted: "deleted", goneActive: "deleted", goneDeleted: "deleted"}},
		{"ALL", []string{live, gone}, map[string]string{liveActive: "active", liveDeleted: "deleted", goneActive: "deleted", goneDeleted: "deleted"}},
	} {
		if got := search(c.view, c.ids...); !maps.Equal(got, c.want) {
			t.Errorf("%s of %v: %v, want %v", c.view, c.ids, got, c.want)
		}
	}
	// Restored, the experiment's runs are their own again.
	py.ok("POST", "experiments/restore", map[string]any{"experiment_id": gone}, nil)
	if got := search("ACTIVE_ONLY", gone); !maps.Equal(got, map[string]string{goneActive: "active"}) {
		t.Errorf("after the restore: %v", got)
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
