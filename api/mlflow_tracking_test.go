package api_test

import (
	"bytes"
	"encoding/json"
	"math"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/maestro-ml/maestro/api"
	"github.com/maestro-ml/maestro/internal/testenv"
	"github.com/maestro-ml/maestro/projections"
)

// mlMetric is a metric point with its value as sent (NaN as "NaN", ±Inf
// as a number), for the checks of the exact JSON.
type mlMetric struct {
	Key       string          `json:"key"`
	Value     json.RawMessage `json:"value"`
	Timestamp int64           `json:"timestamp"`
	Step      int64           `json:"step"`
}

// kvs maps a list of MLflow's {key, value} pairs (tags, params).
func kvs(list any) map[string]string {
	b, _ := json.Marshal(list)
	var pairs []struct{ Key, Value string }
	_ = json.Unmarshal(b, &pairs)
	m := map[string]string{}
	for _, p := range pairs {
		m[p.Key] = p.Value
	}
	return m
}

// latestValues maps a run's metrics to their values as sent.
func latestValues(t *testing.T, r api.MLflowRun) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, p := range r.Data.Metrics {
		b, err := json.Marshal(p.Value)
		if err != nil {
			t.Fatal(err)
		}
		m[p.Key] = string(b)
	}
	return m
}

// mlflowClient sends requests as an MLflow client does: the tracking URI
// (base) + /api/2.0/mlflow/<rpc>, GET parameters in the query string, POST
// bodies as JSON, the credential in auth (an Authorization header value).
type mlflowClient struct {
	t    *testing.T
	e    *testenv.Env
	base string
	auth string
}

func (m mlflowClient) with(auth string) mlflowClient { m.auth = auth; return m }
func (m mlflowClient) at(base string) mlflowClient   { m.base = base; return m }

func (m mlflowClient) send(method, rpc string, body any) testenv.Response {
	m.t.Helper()
	path := m.base + "/api/2.0/mlflow/" + rpc
	if method == "GET" && body != nil {
		path += "?" + body.(url.Values).Encode()
		body = nil
	}
	var hdr []string
	if m.auth != "" {
		hdr = []string{"Authorization", m.auth}
	}
	return m.e.Do(method, path, "", body, hdr...)
}

// ok sends and decodes a 200 answer, which must be a JSON object.
func (m mlflowClient) ok(method, rpc string, body any, into any) testenv.Response {
	m.t.Helper()
	r := m.send(method, rpc, body)
	if r.Status != 200 || !bytes.HasPrefix(bytes.TrimSpace(r.Body), []byte("{")) {
		m.t.Fatalf("%s %s: %d %s, want 200 with a JSON object", method, rpc, r.Status, r.Body)
	}
	if into != nil {
		r.JSON(m.t, into)
	}
	return r
}

// fail sends and checks MLflow's error body; it returns the message.
func (m mlflowClient) fail(status int, code, method, rpc string, body any) string {
	m.t.Helper()
	r := m.send(method, rpc, body)
	if err := checkMLflowError(r, status, code); err != nil {
		m.t.Fatalf("%s %s: %v", method, rpc, err)
	}
	var e api.MLflowError
	r.JSON(m.t, &e)
	return e.Message
}

// mlflowProject is what the MLflow tracking tests start from: a project
// owned by ana (a member) with a viewer, an API token of each, and ana's
// MLflow client on the project's tracking URI.
type mlflowProject struct {
	e              *testenv.Env
	ana, viewer    regClient
	proj           api.ProjectResponse
	tok, viewerTok string
	// py is MLFLOW_TRACKING_URI=http://host/mlflow/<project> with ana's
	// token as MLFLOW_TRACKING_PASSWORD (HTTP Basic, any user name).
	py mlflowClient
}

// newMLflowProject starts a server with an mlflowProject; domain names the
// test's users (ana@domain), name the project.
func newMLflowProject(t *testing.T, domain, name string) mlflowProject {
	t.Helper()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@" + domain).AccessToken
	m := mlflowProject{e: e, ana: regUser(e, admin, "ana@"+domain, "member"), viewer: regUser(e, admin, "viewer@"+domain, "viewer")}
	m.proj = asJSON[api.ProjectResponse](t, call(t, e, 201, "POST", projectsPath, m.ana.Token, map[string]any{"name": name}))
	call(t, e, 200, "PUT", projectsPath+"/"+m.proj.Slug+"/members/"+m.viewer.ID, m.ana.Token, map[string]any{"role": "viewer"})
	m.tok = createToken(t, e, m.ana.Token, map[string]any{"name": "mlflow"}).Token
	m.viewerTok = createToken(t, e, m.viewer.Token, map[string]any{"name": "viewer"}).Token
	m.py = mlflowClient{t: t, e: e, base: "/mlflow/" + m.proj.Slug, auth: basicAuth(m.tok)}
	return m
}

func bearer(token string) string { return "Bearer " + token }
func basicAuth(token string) string {
	return basic(token)[1]
}

// The MLflow REST API as MLflow's Python client drives it
// (docs/MLFLOW_REFERENCE.md §8): the fluent session, both credential
// forms, the three prefixes, MLflow's error codes, int64 fields as numbers
// and NaN/±Inf as MLflow's SQL store reads them back; the data is then read
// through Maestro's own API.
func TestMLflowTrackingREST(t *testing.T) {
	t.Parallel()
	m := newMLflowProject(t, "mlflow.test", "MLflow Demo")
	e, ana, proj, tok, viewerTok, py := m.e, m.ana, m.proj, m.tok, m.viewerTok, m.py
	scoped := createToken(t, e, ana.Token, map[string]any{"name": "mlflow scoped", "project": proj.Slug}).Token

	// mlflow.set_experiment("demo"): get-by-name (404), create, get.
	msg := py.fail(404, "RESOURCE_DOES_NOT_EXIST", "GET", "experiments/get-by-name", url.Values{"experiment_name": {"demo"}})
	if !strings.Contains(msg, "demo") {
		t.Errorf("get-by-name message %q", msg)
	}
	var created struct {
		ExperimentID string `json:"experiment_id"`
	}
	py.ok("POST", "experiments/create", map[string]any{"name": "demo", "tags": []map[string]string{{"key": "team", "value": "risk"}}}, &created)
	xid := created.ExperimentID
	var got struct{ Experiment api.MLflowExperiment }
	r := py.ok("GET", "experiments/get", url.Values{"experiment_id": {xid}}, &got)
	x := got.Experiment
	if x.ExperimentID != xid || x.Name != "demo" || x.LifecycleStage != "active" || x.CreationTime < 1e12 || x.LastUpdateTime < x.CreationTime ||
		x.ArtifactLocation != "mlflow-artifacts:/"+xid || len(x.Tags) != 1 || kvs(x.Tags)["team"] != "risk" {
		t.Fatalf("experiment: %s", r.Body)
	}
	wantNumbers(t, r.Body, "experiment", "creation_time", "last_update_time")
	py.fail(400, "RESOURCE_ALREADY_EXISTS", "POST", "experiments/create", map[string]any{"name": "demo"})
	py.fail(400, "INVALID_PARAMETER_VALUE", "POST", "experiments/create", map[string]any{})
	py.fail(404, "RESOURCE_DOES_NOT_EXIST", "GET", "experiments/get", url.Values{"experiment_id": {"00000000-0000-4000-8000-000000000000"}})
	py.fail(400, "INVALID_PARAMETER_VALUE", "GET", "experiments/get", url.Values{})
	py.ok("POST", "experiments/set-experiment-tag", map[string]any{"experiment_id": xid, "key": "goal", "value": "auc"}, nil)

	// mlflow.start_run(run_name=...): runs/create with the client's tags.
	start := int64(1_700_000_000_000)
	var cr struct{ Run api.MLflowRun }
	r = py.ok("POST", "runs/create", map[string]any{"experiment_id": xid, "start_time": start, "run_name": "tidy-owl-42",
		"tags": []map[string]string{{"key": "mlflow.user", "value": "ana"}, {"key": "mlflow.source.name", "value": "train.py"},
			{"key": "mlflow.source.type", "value": "LOCAL"}}}, &cr)
	run := cr.Run
	rid := run.Info.RunID
	if run.Info.RunUUID != rid || run.Info.RunName != "tidy-owl-42" || run.Info.ExperimentID != xid || run.Info.Status != "RUNNING" ||
		run.Info.StartTime != start || run.Info.EndTime != nil || run.Info.UserID != ana.ID || run.Info.LifecycleStage != "active" ||
		run.Info.ArtifactURI != "mlflow-artifacts:/"+xid+"/"+rid+"/artifacts" || !strings.Contains(string(r.Body), `"inputs":{}`) {
		t.Fatalf("created run: %s", r.Body)
	}
	if kvs(run.Data.Tags)["mlflow.runName"] != "tidy-owl-42" {
		t.Fatalf("created run tags: %+v", run.Data.Tags)
	}
	if kvs(run.Data.Tags)["mlflow.source.type"] != "LOCAL" {
		t.Fatalf("created run tags: %+v", run.Data.Tags)
	}
	wantNumbers(t, r.Body, "run.info", "start_time")
	py.fail(400, "INVALID_PARAMETER_VALUE", "POST", "runs/create", map[string]any{"experiment_id": xid, "run_name": "a",
		"tags": []map[string]string{{"key": "mlflow.runName", "value": "b"}}})
	py.fail(404, "RESOURCE_DOES_NOT_EXIST", "POST", "runs/create", map[string]any{"experiment_id": "00000000000040008000000000000000"})

	// log_param, log_metric (NaN and ±Infinity as the Python client sends
	// them), set_tag: run_uuid and run_id both sent.
	ids := func(kv ...any) map[string]any {
		m := map[string]any{"run_id": rid, "run_uuid": rid}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	py.ok("POST", "runs/log-parameter", ids("key", "lr", "value", "0.1"), nil)
	py.ok("POST", "runs/log-parameter", ids("key", "lr", "value", "0.1"), nil) // the same value again: fine
	if m := py.fail(400, "INVALID_PARAMETER_VALUE", "POST", "runs/log-parameter", ids("key", "lr", "value", "0.2")); !strings.Contains(m, "lr") {
		t.Errorf("param overwrite message %q", m)
	}
	for i, v := range []any{0.5, "NaN", "Infinity", "-Infinity", 0.25} {
		r := py.ok("POST", "runs/log-metric", ids("key", "loss", "value", v, "timestamp", start+int64(i), "step", i), nil)
		if r.Header.Get("Maestro-Metrics-Sequence") == "" {
			t.Fatalf("log-metric without Maestro-Metrics-Sequence: %v", r.Header)
		}
	}
	py.ok("POST", "runs/set-tag", ids("key", "stage", "value", "train"), nil)
	py.fail(400, "INVALID_PARAMETER_VALUE", "POST", "runs/log-metric", map[string]any{"key": "loss", "value": 1, "timestamp": start})
	if m := py.fail(400, "INVALID_PARAMETER_VALUE", "POST", "runs/log-metric", ids("key", "loss", "timestamp", start)); !strings.Contains(m, "'value'") {
		t.Errorf("missing value message %q", m)
	}
	py.fail(400, "INVALID_PARAMETER_VALUE", "POST", "runs/log-metric", ids("key", "loss", "value", "fast", "timestamp", start))
	py.fail(400, "INVALID_PARAMETER_VALUE", "POST", "runs/log-metric", ids("key", "loss", "value", 1, "timestamp", 1.5))
	py.fail(404, "RESOURCE_DOES_NOT_EXIST", "POST", "runs/log-metric", map[string]any{"run_id": "00000000-0000-4000-8000-000000000000",
		"key": "loss", "value": 1, "timestamp": start})

	// log_batch (log_metrics/log_params/set_tags); a run id without dashes.
	hex := strings.ReplaceAll(rid, "-", "")
	py.ok("POST", "runs/log-batch", map[string]any{"run_id": hex,
		"metrics": []map[string]any{{"key": "acc", "value": 0.9, "timestamp": start, "step": 1}, {"key": "acc", "value": 0.95, "timestamp": start + 1, "step": 2}},
		"params":  []map[string]string{{"key": "epochs", "value": "10"}, {"key": "lr", "value": "0.1"}},
		"tags":    []map[string]string{{"key": "team", "value": "ml"}}}, nil)
	// A refused batch stores nothing: a param overwrite with points.
	py.fail(400, "INVALID_PARAMETER_VALUE", "POST", "runs/log-batch", map[string]any{"run_id": rid,
		"metrics": []map[string]any{{"key": "never", "value": 1, "timestamp": start}},
		"params":  []map[string]string{{"key": "epochs", "value": "11"}}})
	py.fail(400, "INVALID_PARAMETER_VALUE", "POST", "runs/log-batch", map[string]any{"metrics": []map[string]any{}})
	if m := py.fail(400, "INVALID_PARAMETER_VALUE", "POST", "runs/log-batch", map[string]any{"run_id": rid,
		"metrics": []map[string]any{{"key": "a", "timestamp": start}}}); !strings.Contains(m, "metrics[0].value") {
		t.Errorf("missing point value message %q", m)
	}
	many := make([]map[string]any, 1001)
	for i := range many {
		many[i] = map[string]any{"key": "m", "value": i, "timestamp": start, "step": i}
	}
	if m := py.fail(400, "INVALID_PARAMETER_VALUE", "POST", "runs/log-batch", map[string]any{"run_id": rid, "metrics": many}); !strings.Contains(m, "at most 1000 metrics") {
		t.Errorf("over-limit batch message %q", m)
	}
	tooManyParams := make([]map[string]string, 101)
	for i := range tooManyParams {
		tooManyParams[i] = map[string]string{"key": "p" + strconv.Itoa(i), "value": "1"}
	}
	py.fail(400, "INVALID_PARAMETER_VALUE", "POST", "runs/log-batch", map[string]any{"run_id": rid, "params": tooManyParams})
	py.ok("POST", "runs/log-batch", map[string]any{"run_id": rid, "metrics": many[:1000]}, nil)

	// get-history: every point; NaN as "NaN", ±Inf as ±max double.
	var hist struct {
		Metrics []mlMetric `json:"metrics"`
	}
	r = py.ok("GET", "metrics/get-history", url.Values{"run_uuid": {rid}, "run_id": {rid}, "metric_key": {"loss"}}, &hist)
	want := []string{`0.5`, `"NaN"`, `1.7976931348623157e+308`, `-1.7976931348623157e+308`, `0.25`}
	if len(hist.Metrics) != len(want) {
		t.Fatalf("loss history: %s", r.Body)
	}
	for i, m := range hist.Metrics {
		if string(m.Value) != want[i] || m.Step != int64(i) || m.Timestamp != start+int64(i) || m.Key != "loss" {
			t.Fatalf("loss history point %d: %+v (%s), want value %s", i, m, m.Value, want[i])
		}
	}
	var big float64
	if err := json.Unmarshal(hist.Metrics[2].Value, &big); err != nil || big != math.MaxFloat64 {
		t.Fatalf("+Inf read back as %s", hist.Metrics[2].Value)
	}
	wantNumbers(t, r.Body, "metrics.0", "timestamp", "step")
	// Paged with max_results and page_token, as MLflow 2.x clients may.
	var pageHist struct {
		Metrics       []mlMetric `json:"metrics"`
		NextPageToken string     `json:"next_page_token"`
	}
	seen := 0
	for q := (url.Values{"run_id": {rid}, "metric_key": {"m"}, "max_results": {"300"}}); ; {
		py.ok("GET", "metrics/get-history", q, &pageHist)
		for i, m := range pageHist.Metrics {
			if m.Step != int64(seen+i) {
				t.Fatalf("paged history: point %d has step %d", seen+i, m.Step)
			}
		}
		seen += len(pageHist.Metrics)
		if pageHist.NextPageToken == "" {
			break
		}
		q.Set("page_token", pageHist.NextPageToken)
		pageHist.NextPageToken = ""
	}
	if seen != 1000 {
		t.Fatalf("paged history: %d points, want 1000", seen)
	}
	py.fail(400, "INVALID_PARAMETER_VALUE", "GET", "metrics/get-history", url.Values{"run_id": {rid}, "metric_key": {"m"}, "page_token": {"nope"}})
	py.fail(400, "INVALID_PARAMETER_VALUE", "GET", "metrics/get-history", url.Values{"run_id": {rid}})
	py.fail(404, "RESOURCE_DOES_NOT_EXIST", "GET", "metrics/get-history", url.Values{"run_id": {"nope"}, "metric_key": {"loss"}})

	// runs/get: the latest point per key (loss: step 4, 0.25), params, tags.
	var rg struct{ Run api.MLflowRun }
	r = py.ok("GET", "runs/get", url.Values{"run_uuid": {rid}, "run_id": {rid}}, &rg)
	latest := latestValues(t, rg.Run)
	if latest["loss"] != "0.25" || latest["acc"] != "0.95" || latest["m"] != "999" || len(latest) != 3 {
		t.Fatalf("run data metrics: %s", r.Body)
	}
	if kvs(rg.Run.Data.Params)["epochs"] != "10" {
		t.Fatalf("run params: %+v", rg.Run.Data.Params)
	}
	if kvs(rg.Run.Data.Tags)["team"] != "ml" {
		t.Fatalf("run tags: %+v", rg.Run.Data.Tags)
	}
	if _, ok := kvs(rg.Run.Data.Params)["never"]; ok {
		t.Fatal("a refused batch stored a point")
	}
	py.fail(404, "RESOURCE_DOES_NOT_EXIST", "GET", "runs/get", url.Values{"run_id": {"00000000-0000-4000-8000-000000000000"}})
	py.fail(400, "INVALID_PARAMETER_VALUE", "GET", "runs/get", url.Values{})

	// mlflow.log_input(dataset, context="training"): runs/log-inputs; a
	// dataset is a run's input once; MLflow 3's model inputs are refused.
	iris := map[string]any{"tags": []map[string]string{{"key": "mlflow.data.context", "value": "training"}},
		"dataset": map[string]string{"name": "iris", "digest": "a1b2c3", "source_type": "local",
			"source": `{"uri": "/data/iris.csv"}`, "schema": `{"mlflow_colspec": []}`, "profile": `{"num_rows": 150}`}}
	py.ok("POST", "runs/log-inputs", map[string]any{"run_id": rid, "datasets": []any{iris}}, nil)
	if r := py.ok("POST", "runs/log-inputs", map[string]any{"run_id": rid, "datasets": []any{iris}}, nil); r.Header.Get("Maestro-Sequence") != "" {
		t.Fatalf("logging a dataset again stored something: %v", r.Header)
	}
	if m := py.fail(400, "INVALID_PARAMETER_VALUE", "POST", "runs/log-inputs", map[string]any{"run_id": rid,
		"datasets": []any{map[string]any{"dataset": map[string]string{"name": "x", "digest": "1", "source_type": "local"}}}}); !strings.Contains(m, "datasets[0].dataset.source") {
		t.Errorf("missing source message %q", m)
	}
	py.fail(400, "INVALID_PARAMETER_VALUE", "POST", "runs/log-inputs", map[string]any{"run_id": rid, "models": []any{map[string]string{"model_id": "m-1"}}})
	var withInputs struct{ Run api.MLflowRun }
	py.ok("GET", "runs/get", url.Values{"run_id": {rid}}, &withInputs)
	if in := withInputs.Run.Inputs.DatasetInputs; len(in) != 1 || in[0].Dataset.Name != "iris" || in[0].Dataset.Profile != `{"num_rows": 150}` ||
		len(in[0].Tags) != 1 || in[0].Tags[0].Value != "training" {
		t.Fatalf("run inputs: %+v", withInputs.Run.Inputs)
	}

	// search (POST, as the Python client sends it); max_results above
	// Maestro's page is a full page (the client pages on).
	var sr struct {
		Runs          []api.MLflowRun `json:"runs"`
		NextPageToken string          `json:"next_page_token"`
	}
	second := struct{ Run api.MLflowRun }{}
	py.ok("POST", "runs/create", map[string]any{"experiment_id": xid, "start_time": start + 10}, &second)
	r = py.ok("POST", "runs/search", map[string]any{"experiment_ids": []string{xid}, "filter": "params.lr = '0.1' and metrics.loss < 1",
		"run_view_type": "ACTIVE_ONLY", "max_results": 10000, "order_by": []string{"metrics.loss ASC"}}, &sr)
	if len(sr.Runs) != 1 || sr.Runs[0].Info.RunID != rid {
		t.Fatalf("search: %s", r.Body)
	}
	sr.Runs = nil
	py.ok("POST", "runs/search", map[string]any{"experiment_ids": []string{xid}, "max_results": 1}, &sr)
	if len(sr.Runs) != 1 || sr.Runs[0].Info.RunID != second.Run.Info.RunID || sr.NextPageToken == "" {
		t.Fatalf("search page 1: %+v", sr)
	}
	py.fail(400, "INVALID_PARAMETER_VALUE", "POST", "runs/search", map[string]any{"experiment_ids": []string{xid}, "filter": "metrics.loss <"})
	py.fail(400, "INVALID_PARAMETER_VALUE", "POST", "runs/search", map[string]any{"experiment_ids": []string{xid}, "max_results": 50001})
	py.fail(400, "INVALID_PARAMETER_VALUE", "POST", "runs/search", map[string]any{"experiment_ids": []string{xid}, "run_view_type": "SOME"})
	if r := py.ok("POST", "runs/search", map[string]any{}, nil); strings.TrimSpace(string(r.Body)) != "{}" {
		t.Fatalf("search without experiments: %s", r.Body)
	}
	var xs struct {
		Experiments []api.MLflowExperiment `json:"experiments"`
	}
	py.ok("POST", "experiments/search", map[string]any{"filter": "name = 'demo'"}, &xs)
	if len(xs.Experiments) != 1 || xs.Experiments[0].ExperimentID != xid {
		t.Fatalf("experiments/search: %+v", xs)
	}
	xs.Experiments = nil
	py.ok("GET", "experiments/search", url.Values{"view_type": {"ALL"}, "max_results": {"5"}, "order_by": {"name ASC"}}, &xs)
	if len(xs.Experiments) != 1 {
		t.Fatalf("experiments/search (GET): %+v", xs)
	}

	// mlflow.end_run(): runs/update FINISHED with end_time.
	end := start + 60_000
	var up struct {
		RunInfo api.MLflowRunInfo `json:"run_info"`
	}
	r = py.ok("POST", "runs/update", ids("status", "FINISHED", "end_time", end), &up)
	if up.RunInfo.Status != "FINISHED" || up.RunInfo.EndTime == nil || *up.RunInfo.EndTime != end || up.RunInfo.RunID != rid {
		t.Fatalf("runs/update: %s", r.Body)
	}
	wantNumbers(t, r.Body, "run_info", "start_time", "end_time")
	py.ok("POST", "runs/update", ids("status", 3, "run_name", "renamed"), &up) // an enum by number
	if up.RunInfo.RunName != "renamed" {
		t.Fatalf("runs/update run_name: %+v", up.RunInfo)
	}
	py.fail(400, "INVALID_PARAMETER_VALUE", "POST", "runs/update", ids("status", "DONE"))

	// Tags: delete-tag, mlflow.runName cannot go, a missing one is 404.
	py.ok("POST", "runs/delete-tag", map[string]any{"run_id": rid, "key": "stage"}, nil)
	py.fail(404, "RESOURCE_DOES_NOT_EXIST", "POST", "runs/delete-tag", map[string]any{"run_id": rid, "key": "stage"})
	py.fail(400, "INVALID_PARAMETER_VALUE", "POST", "runs/delete-tag", map[string]any{"run_id": rid, "key": "mlflow.runName"})

	// Credentials: Bearer works too; a viewer reads but writes nothing;
	// none, or a password instead of a token, is UNAUTHENTICATED.
	bear := py.with(bearer(tok))
	bear.ok("GET", "runs/get", url.Values{"run_id": {rid}}, nil)
	view := py.with(basicAuth(viewerTok))
	view.ok("GET", "runs/get", url.Values{"run_id": {rid}}, nil)
	view.fail(403, "PERMISSION_DENIED", "POST", "runs/log-parameter", ids("key", "x", "value", "1"))
	view.fail(403, "PERMISSION_DENIED", "POST", "runs/create", map[string]any{"experiment_id": xid})
	view.fail(403, "PERMISSION_DENIED", "POST", "experiments/create", map[string]any{"name": "nope"})
	py.with("").fail(401, "UNAUTHENTICATED", "GET", "runs/get", url.Values{"run_id": {rid}})
	py.with(basicAuth("not-a-token")).fail(401, "UNAUTHENTICATED", "GET", "runs/get", url.Values{"run_id": {rid}})
	py.fail(404, "ENDPOINT_NOT_FOUND", "POST", "runs/no-such-rpc", map[string]any{})
	py.fail(404, "ENDPOINT_NOT_FOUND", "GET", "runs/log-batch", url.Values{})
	py.fail(400, "INVALID_PARAMETER_VALUE", "POST", "runs/log-parameter", []byte(`{"run_id":"x"}`+"\n"))
	if r := py.send("POST", "runs/set-tag", []byte(`{}`)); r.Status != 400 {
		t.Fatalf("set-tag without fields: %d", r.Status)
	}
	r = e.Do("POST", py.base+"/api/2.0/mlflow/runs/set-tag", "", []byte(`{"run_id":"`+rid+`","key":"k","value":"v"}`),
		"Authorization", py.auth, "Content-Type", "text/plain")
	if err := checkMLflowError(r, 400, "INVALID_PARAMETER_VALUE"); err != nil {
		t.Fatalf("text/plain body: %v", err)
	}
	// Another project, or one that does not exist, is not found.
	py.at("/mlflow/no-such-project").fail(404, "RESOURCE_DOES_NOT_EXIST", "GET", "runs/get", url.Values{"run_id": {rid}})

	// The UI's ajax-api prefix, and the bare /api/2.0 with a scoped token
	// (a token without a project is refused there).
	ajaxPath := "/mlflow/" + proj.Slug + "/ajax-api/2.0/mlflow/runs/get?run_id=" + rid
	if r := e.Do("GET", ajaxPath, "", nil, "Authorization", bearer(tok)); r.Status != 200 {
		t.Fatalf("ajax-api runs/get: %d %s", r.Status, r.Body)
	}
	bare := mlflowClient{t: t, e: e, auth: basicAuth(scoped)}
	bare.ok("GET", "runs/get", url.Values{"run_id": {rid}}, nil)
	var bx struct {
		ExperimentID string `json:"experiment_id"`
	}
	bare.ok("POST", "experiments/create", map[string]any{"name": "bare"}, &bx)
	bare.with(basicAuth(tok)).fail(400, "BAD_REQUEST", "GET", "runs/get", url.Values{"run_id": {rid}})

	// Experiment "0": absent until a run needs it; then the Default.
	py.fail(404, "RESOURCE_DOES_NOT_EXIST", "GET", "experiments/get", url.Values{"experiment_id": {"0"}})
	if r := py.ok("POST", "runs/search", map[string]any{"experiment_ids": []string{"0"}}, nil); strings.TrimSpace(string(r.Body)) != "{}" {
		t.Fatalf("search of a missing Default: %s", r.Body)
	}
	var d1, d2 struct{ Run api.MLflowRun }
	py.ok("POST", "runs/create", map[string]any{"start_time": start}, &d1)
	py.ok("POST", "runs/create", map[string]any{"experiment_id": 0}, &d2)
	py.ok("GET", "experiments/get", url.Values{"experiment_id": {"0"}}, &got)
	if got.Experiment.Name != "Default" || d1.Run.Info.ExperimentID != got.Experiment.ExperimentID || d2.Run.Info.ExperimentID != got.Experiment.ExperimentID {
		t.Fatalf("Default experiment %+v; runs in %s and %s", got.Experiment, d1.Run.Info.ExperimentID, d2.Run.Info.ExperimentID)
	}
	sr.Runs = nil
	py.ok("POST", "runs/search", map[string]any{"experiment_ids": []any{0}}, &sr)
	if len(sr.Runs) != 2 {
		t.Fatalf("runs of experiment 0: %+v", sr.Runs)
	}
	py.ok("POST", "experiments/set-experiment-tag", map[string]any{"experiment_id": "0", "key": "k", "value": "v"}, nil)

	// Deleting an experiment: its runs show deleted and refuse writes (also
	// through Maestro's API) until it is restored.
	dx := struct {
		ExperimentID string `json:"experiment_id"`
	}{}
	py.ok("POST", "experiments/create", map[string]any{"name": "doomed"}, &dx)
	var dr struct{ Run api.MLflowRun }
	py.ok("POST", "runs/create", map[string]any{"experiment_id": dx.ExperimentID}, &dr)
	drid := dr.Run.Info.RunID
	py.ok("POST", "experiments/delete", map[string]any{"experiment_id": dx.ExperimentID}, nil)
	py.ok("POST", "experiments/delete", map[string]any{"experiment_id": dx.ExperimentID}, nil)
	py.ok("GET", "runs/get", url.Values{"run_id": {drid}}, &dr)
	if dr.Run.Info.LifecycleStage != "deleted" {
		t.Fatalf("a run of a deleted experiment: %+v", dr.Run.Info)
	}
	py.fail(400, "INVALID_PARAMETER_VALUE", "POST", "runs/log-parameter", map[string]any{"run_id": drid, "key": "a", "value": "1"})
	py.fail(400, "INVALID_PARAMETER_VALUE", "POST", "runs/log-metric", map[string]any{"run_id": drid, "key": "a", "value": 1, "timestamp": start})
	py.fail(400, "INVALID_PARAMETER_VALUE", "POST", "runs/log-batch", map[string]any{"run_id": drid, "tags": []map[string]string{{"key": "a", "value": "1"}}})
	py.fail(400, "INVALID_PARAMETER_VALUE", "POST", "runs/update", map[string]any{"run_id": drid, "status": "KILLED"})
	py.fail(400, "INVALID_PARAMETER_VALUE", "POST", "runs/restore", map[string]any{"run_id": drid})
	py.fail(400, "INVALID_PARAMETER_VALUE", "POST", "runs/create", map[string]any{"experiment_id": dx.ExperimentID})
	py.fail(400, "INVALID_PARAMETER_VALUE", "POST", "experiments/update", map[string]any{"experiment_id": dx.ExperimentID, "new_name": "x"})
	pp := projectsPath + "/" + proj.Slug
	callProblem(t, e, 409, "experiment-deleted", "PATCH", pp+"/runs/"+drid, ana.Token, map[string]any{"status": "KILLED"})
	callProblem(t, e, 409, "experiment-deleted", "POST", pp+"/runs/"+drid+"/metrics", ana.Token,
		map[string]any{"metrics": []map[string]any{{"key": "a", "value": 1, "timestamp": 1}}})
	py.ok("POST", "runs/delete", map[string]any{"run_id": drid}, nil) // deleting stays possible
	py.ok("POST", "experiments/restore", map[string]any{"experiment_id": dx.ExperimentID}, nil)
	py.ok("POST", "runs/restore", map[string]any{"run_id": drid}, nil)
	py.ok("POST", "runs/log-parameter", map[string]any{"run_id": drid, "key": "a", "value": "1"}, nil)
	py.ok("GET", "runs/get", url.Values{"run_id": {drid}}, &dr)
	if dr.Run.Info.LifecycleStage != "active" {
		t.Fatalf("a restored run: %+v", dr.Run.Info)
	}
	py.fail(404, "RESOURCE_DOES_NOT_EXIST", "POST", "experiments/delete", map[string]any{"experiment_id": "123"})

	// Rename, list (1.x), tags.
	py.ok("POST", "experiments/update", map[string]any{"experiment_id": dx.ExperimentID, "new_name": "saved"}, nil)
	py.fail(400, "RESOURCE_ALREADY_EXISTS", "POST", "experiments/update", map[string]any{"experiment_id": dx.ExperimentID, "new_name": "demo"})
	py.fail(400, "INVALID_PARAMETER_VALUE", "POST", "experiments/update", map[string]any{"experiment_id": dx.ExperimentID})
	var list struct {
		Experiments []api.MLflowExperiment `json:"experiments"`
	}
	py.ok("GET", "experiments/list", url.Values{"view_type": {"ALL"}}, &list)
	names := map[string]bool{}
	for _, x := range list.Experiments {
		names[x.Name] = true
	}
	if !names["demo"] || !names["saved"] || !names["bare"] || !names["Default"] || len(names) != 4 {
		t.Fatalf("experiments/list: %+v", list.Experiments)
	}
	py.ok("POST", "experiments/delete-experiment-tag", map[string]any{"experiment_id": xid, "key": "goal"}, nil)
	py.fail(404, "RESOURCE_DOES_NOT_EXIST", "POST", "experiments/delete-experiment-tag", map[string]any{"experiment_id": xid, "key": "goal"})
	py.ok("POST", "runs/delete", map[string]any{"run_id": second.Run.Info.RunID}, nil)
	sr.Runs = nil
	py.ok("POST", "runs/search", map[string]any{"experiment_ids": []string{xid}, "run_view_type": "DELETED_ONLY"}, &sr)
	if len(sr.Runs) != 1 || sr.Runs[0].Info.LifecycleStage != "deleted" {
		t.Fatalf("deleted runs: %+v", sr.Runs)
	}

	// Read back through Maestro's own API.
	mr := asJSON[projections.Run](t, call(t, e, 200, "GET", pp+"/runs/"+rid, ana.Token, nil))
	if mr.Params["lr"] != "0.1" || mr.Params["epochs"] != "10" || mr.Tags["team"] != "ml" || mr.Status != "FINISHED" || mr.Name != "renamed" ||
		mr.Tags["mlflow.runName"] != "renamed" || mr.Metrics["loss"].Value != 0.25 || mr.ExperimentID != xid ||
		len(mr.Inputs) != 1 || mr.Inputs[0].Digest != "a1b2c3" || mr.Inputs[0].Source != `{"uri": "/data/iris.csv"}` {
		t.Fatalf("the run through Maestro's API: %+v", mr)
	}
	h := asJSON[api.MetricHistory](t, call(t, e, 200, "GET", pp+"/runs/"+rid+"/metrics/loss", ana.Token, nil))
	if len(h.Points) != 5 || !math.IsNaN(float64(h.Points[1].Value)) || !math.IsInf(float64(h.Points[2].Value), 1) {
		t.Fatalf("loss through Maestro's API: %+v", h.Points)
	}
}

// wantNumbers fails t unless each field of the object at path (dotted;
// numbers index arrays) is a JSON number: MLflow's int64 fields.
func wantNumbers(t *testing.T, body []byte, path string, fields ...string) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatal(err)
	}
	for _, p := range strings.Split(path, ".") {
		switch c := v.(type) {
		case map[string]any:
			v = c[p]
		case []any:
			i, _ := strconv.Atoi(p)
			v = c[i]
		}
	}
	obj, _ := v.(map[string]any)
	for _, f := range fields {
		if _, ok := obj[f].(json.Number); !ok {
			t.Errorf("%s.%s = %#v in %s, want a JSON number", path, f, obj[f], body)
		}
	}
}
