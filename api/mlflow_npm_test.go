package api_test

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/maestro-ml/maestro/api"
	"github.com/maestro-ml/maestro/internal/testenv"
	"github.com/maestro-ml/maestro/projections"
)

// npmDir holds the npm mlflow client (package.json and package-lock.json;
// `make npm-deps` installs node_modules with npm ci) and script.js.
const npmDir = "testdata/mlflow-npm"

// The npm `mlflow` client (2.0.7) against a running Maestro: script.js
// drives experiment -> run -> params -> metrics -> batch -> history ->
// search -> finish through the project's tracking URI with an API token,
// writes what the client got back, and the data is read back through
// Maestro's own API. Without Node.js or the installed client the test
// fails (never skips): it is the proof that an unchanged MLflow client
// works.
func TestMLflowNpmClient(t *testing.T) {
	t.Parallel()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is not installed: this test runs the npm mlflow client on Node.js ≥ 18 " +
			"(apt-get install nodejs npm, then make npm-deps)")
	}
	if _, err := os.Stat(filepath.Join(npmDir, "node_modules", "mlflow", "package.json")); err != nil {
		t.Fatalf("the npm mlflow client is not installed in api/%s: run make npm-deps (npm ci --prefix api/%s): %v", npmDir, npmDir, err)
	}

	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@npm.test").AccessToken
	ana := regUser(e, admin, "ana@npm.test", "member")
	proj := asJSON[api.ProjectResponse](t, call(t, e, 201, "POST", projectsPath, ana.Token, map[string]any{"name": "Npm Client"}))
	tok := createToken(t, e, ana.Token, map[string]any{"name": "npm"}).Token

	result := filepath.Join(t.TempDir(), "result.json")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "script.js")
	cmd.Dir = npmDir
	cmd.Env = append(os.Environ(), "MLFLOW_ENDPOINT="+e.URL+"/mlflow/"+proj.Slug, "MLFLOW_TOKEN="+tok, "RESULT_FILE="+result)
	outb, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node script.js: %v\n%s", err, outb)
	}
	raw, err := os.ReadFile(result)
	if err != nil {
		t.Fatalf("script.js wrote no result: %v\n%s", err, outb)
	}
	var out struct {
		ExperimentID string               `json:"experiment_id"`
		Experiment   api.MLflowExperiment `json:"experiment"`
		Listed       []string             `json:"listed"`
		Renamed      api.MLflowExperiment `json:"renamed"`
		Duplicate    struct {
			Status int             `json:"status"`
			Data   api.MLflowError `json:"data"`
		} `json:"duplicate"`
		Created  api.MLflowRun     `json:"created"`
		History  []mlMetric        `json:"history"`
		Search   []api.MLflowRun   `json:"search"`
		Updated  api.MLflowRunInfo `json:"updated"`
		Run      api.MLflowRun     `json:"run"`
		Deleted  string            `json:"deleted"`
		Restored string            `json:"restored"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("result %s: %v", raw, err)
	}
	const start = 1_700_000_000_000
	xid := out.ExperimentID
	if out.Experiment.ExperimentID != xid || out.Experiment.Name != "npm-demo" || out.Experiment.LifecycleStage != "active" {
		t.Errorf("experiment: %+v", out.Experiment)
	}
	if len(out.Listed) != 1 || out.Listed[0] != "npm-demo" {
		t.Errorf("experiments/list: %v", out.Listed)
	}
	if out.Renamed.Name != "npm-demo-renamed" || kvs(out.Renamed.Tags)["team"] != "risk" {
		t.Errorf("renamed and tagged experiment: %+v", out.Renamed)
	}
	if out.Duplicate.Status != 400 || out.Duplicate.Data.ErrorCode != "RESOURCE_ALREADY_EXISTS" {
		t.Errorf("duplicate experiment: %+v", out.Duplicate)
	}
	rid := out.Created.Info.RunID
	if out.Created.Info.RunName != "first" || out.Created.Info.Status != "RUNNING" || out.Created.Info.StartTime != start ||
		out.Created.Info.ExperimentID != xid || out.Created.Info.RunUUID != rid {
		t.Errorf("created run: %+v", out.Created.Info)
	}
	wantHistory := []struct {
		value string
		step  int64
	}{{"0.5", 1}, {`"NaN"`, 2}, {"0.25", 3}}
	if len(out.History) != len(wantHistory) {
		t.Fatalf("loss history: %+v", out.History)
	}
	for i, w := range wantHistory {
		if h := out.History[i]; string(h.Value) != w.value || h.Step != w.step || h.Timestamp != start+w.step {
			t.Errorf("loss history point %d: %+v (%s), want %s at step %d", i, h, h.Value, w.value, w.step)
		}
	}
	if len(out.Search) != 1 || out.Search[0].Info.RunID != rid {
		t.Errorf("search: %+v", out.Search)
	}
	if out.Updated.Status != "FINISHED" || out.Updated.EndTime == nil || *out.Updated.EndTime != start+60_000 {
		t.Errorf("runs/update: %+v", out.Updated)
	}
	data := out.Run.Data
	params, tags := kvs(data.Params), kvs(data.Tags)
	if _, tmp := tags["tmp"]; params["lr"] != "0.1" || params["epochs"] != "10" || tags["stage"] != "eval" || tmp || out.Run.Info.Status != "FINISHED" {
		t.Errorf("run: %+v", out.Run)
	}
	latest := latestValues(t, out.Run)
	if latest["loss"] != "0.25" || latest["acc"] != "0.9" {
		t.Errorf("latest metrics: %v", latest)
	}
	if out.Deleted != "deleted" || out.Restored != "active" {
		t.Errorf("delete and restore: %q, %q", out.Deleted, out.Restored)
	}

	// What the client logged, through Maestro's own API.
	pp := projectsPath + "/" + proj.Slug
	x := asJSON[projections.Experiment](t, call(t, e, 200, "GET", pp+"/experiments/"+xid, ana.Token, nil))
	if x.Name != "npm-demo-renamed" || x.Tags["team"] != "risk" {
		t.Errorf("experiment through Maestro's API: %+v", x)
	}
	run := asJSON[projections.Run](t, call(t, e, 200, "GET", pp+"/runs/"+rid, ana.Token, nil))
	if run.Name != "first" || run.Status != "FINISHED" || run.Params["lr"] != "0.1" || run.Tags["stage"] != "eval" ||
		run.Metrics["loss"].Value != 0.25 || run.UserID != ana.ID {
		t.Errorf("run through Maestro's API: %+v", run)
	}
	h := asJSON[api.MetricHistory](t, call(t, e, 200, "GET", pp+"/runs/"+rid+"/metrics/loss", ana.Token, nil))
	if len(h.Points) != 3 || !math.IsNaN(float64(h.Points[1].Value)) {
		t.Errorf("loss through Maestro's API: %+v", h.Points)
	}
}
