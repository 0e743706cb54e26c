package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/maestro-ml/maestro/api"
	"github.com/maestro-ml/maestro/internal/testenv"
	"github.com/maestro-ml/maestro/projections"
	"github.com/maestro-ml/maestro/runner"
)

// Training jobs through the API: submission (the job queued, its run
// SCHEDULED with the params, the experiment found or made), validation,
// the list, cancellation, the log (read once, as text, followed as
// Server-Sent Events) and who may do what. The platforms here run no
// runner (cfg.Runner = false), so a submitted job stays queued until it is
// cancelled; the run's status follows the job through reactions, which are
// tested with them, not here.

// jobsEnv starts a platform without a runner and a project with an editor
// and a viewer.
type jobsEnv struct {
	e              *testenv.Env
	admin          string
	editor, viewer regClient
	proj           api.ProjectResponse
	pp             string // the project's path
}

func startJobs(t *testing.T, prefix string) *jobsEnv {
	t.Helper()
	cfg := testenv.Config(t)
	cfg.Runner = false
	e := testenv.Start(t, cfg)
	j := &jobsEnv{e: e, admin: e.Admin("root@" + prefix + ".test").AccessToken}
	j.editor = regUser(e, j.admin, "editor@"+prefix+".test", "viewer")
	j.viewer = regUser(e, j.admin, "viewer@"+prefix+".test", "viewer")
	j.proj = asJSON[api.ProjectResponse](t, call(t, e, 201, "POST", projectsPath, j.admin, map[string]any{"name": "Jobs " + prefix}))
	j.pp = projectsPath + "/" + j.proj.Slug
	call(t, e, 200, "PUT", j.pp+"/members/"+j.editor.ID, j.admin, map[string]any{"role": "editor"})
	call(t, e, 200, "PUT", j.pp+"/members/"+j.viewer.ID, j.admin, map[string]any{"role": "viewer"})
	return j
}

// submit submits body as the editor and fails unless it got 201.
func (j *jobsEnv) submit(t *testing.T, body any) api.JobSubmission {
	t.Helper()
	r := call(t, j.e, 201, "POST", j.pp+"/jobs", j.editor.Token, body)
	s := asJSON[api.JobSubmission](t, r)
	if want := projectsPath + "/" + j.proj.ID + "/jobs/" + s.Job.ID; r.Header.Get("Location") != want {
		t.Fatalf("Location %q, want %q", r.Header.Get("Location"), want)
	}
	return s
}

// writeLog publishes lines as attempt's log of a job, as a runner does.
func writeLog(t *testing.T, e *testenv.Env, jobID string, attempt int, lines ...runner.Line) {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), fmt.Sprintf("attempt-%d.log", attempt)))
	if err != nil {
		t.Fatal(err)
	}
	w := runner.NewLogWriter(e.P.Store.JetStream(), jobID, attempt, 1<<20, nil, f)
	for _, l := range lines {
		w.Sink(l)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestJobSubmitListGetCancel(t *testing.T) {
	t.Parallel()
	j := startJobs(t, "jobs")
	e, pp := j.e, j.pp

	// By name: the experiment is created.
	// Params as ML code writes them: numbers and booleans, kept as written.
	first := j.submit(t, []byte(`{"experiment": "churn", "name": "baseline", "command": ["python", "train.py", "--epochs", "10"],
		"params": {"lr": 0.1, "epochs": 10, "shuffle": true, "optimizer": "adam", "decay": 1e-3},
		"env": {"PYTHONUNBUFFERED": "1", "API_TOKEN": "secret://churn-api"},
		"timeout": "1h30m", "max_retries": 2, "retry_on_failure": true, "working_dir": "src/./train",
		"resources": {"cpu": "500m", "memory": "2Gi"}}`))
	job, run := first.Job, first.Run
	wantParams := map[string]string{"lr": "0.1", "epochs": "10", "shuffle": "true", "optimizer": "adam", "decay": "1e-3"}
	switch {
	case job.State != "queued" || job.Name != "baseline" || job.ProjectID != j.proj.ID || job.RunID != run.ID || job.ExperimentID != run.ExperimentID:
		t.Fatalf("submitted job: %+v (run %+v)", job, run)
	case !slices.Equal(job.Command, []string{"python", "train.py", "--epochs", "10"}) || fmt.Sprint(job.Params) != fmt.Sprint(wantParams):
		t.Fatalf("job command/params: %q %v", job.Command, job.Params)
	case job.Env["API_TOKEN"] != "secret://churn-api" || job.Env["PYTHONUNBUFFERED"] != "1" || job.WorkingDir != "src/train":
		t.Fatalf("job env/working_dir: %v %q", job.Env, job.WorkingDir)
	case job.TimeoutSeconds != 5400 || job.MaxRetries != 2 || !job.RetryOnFailure || job.Resources.CPU != "500m" || job.Resources.Memory != "2Gi":
		t.Fatalf("job limits: %+v", job)
	case job.SubmittedBy != j.editor.ID || job.SubmittedAt.IsZero() || job.StartedAt != nil || job.EndedAt != nil || len(job.Attempts) != 0 || job.CancelRequested:
		t.Fatalf("job lifecycle: %+v", job)
	}
	if run.Status != "SCHEDULED" || run.Tags["maestro.job_id"] != job.ID || run.Name != "baseline" || fmt.Sprint(run.Params) != fmt.Sprint(wantParams) {
		t.Fatalf("job's run: %+v", run)
	}
	xs := asJSON[api.ExperimentPage](t, call(t, e, 200, "GET", pp+"/experiments?name=churn", j.viewer.Token, nil))
	if len(xs.Items) != 1 || xs.Items[0].ID != job.ExperimentID {
		t.Fatalf("experiment churn: %+v, want %s", xs.Items, job.ExperimentID)
	}
	// The run as the tracking API reads it back.
	got := asJSON[projections.Run](t, call(t, e, 200, "GET", pp+"/runs/"+run.ID, j.viewer.Token, nil))
	if got.Status != "SCHEDULED" || got.Tags["maestro.job_id"] != job.ID || fmt.Sprint(got.Params) != fmt.Sprint(wantParams) {
		t.Fatalf("run read back: %+v", got)
	}

	// By name again (the experiment is reused), by id, and the defaults.
	second := j.submit(t, map[string]any{"experiment": "churn", "command": []string{"/usr/bin/python3", "-c", "print(1)"}, "timeout": 3600})
	third := j.submit(t, map[string]any{"experiment": job.ExperimentID, "command": []string{"true"}})
	other := j.submit(t, map[string]any{"experiment": "other", "command": []string{"true"}, "timeout": 90.5})
	if second.Job.ExperimentID != job.ExperimentID || third.Job.ExperimentID != job.ExperimentID || other.Job.ExperimentID == job.ExperimentID {
		t.Fatalf("experiments: %s %s %s %s", job.ExperimentID, second.Job.ExperimentID, third.Job.ExperimentID, other.Job.ExperimentID)
	}
	if second.Job.Name != "python3" || second.Job.TimeoutSeconds != 3600 || third.Job.TimeoutSeconds != 86400 || other.Job.TimeoutSeconds != 90.5 {
		t.Fatalf("defaults: name %q, timeouts %v %v %v", second.Job.Name, second.Job.TimeoutSeconds, third.Job.TimeoutSeconds, other.Job.TimeoutSeconds)
	}
	if len(second.Job.Params) != 0 || len(second.Run.Params) != 0 || second.Job.Env == nil {
		t.Fatalf("a job without params: %+v / %+v", second.Job, second.Run)
	}
	xs = asJSON[api.ExperimentPage](t, call(t, e, 200, "GET", pp+"/experiments?name=churn", j.viewer.Token, nil))
	if len(xs.Items) != 1 {
		t.Fatalf("experiment churn made twice: %+v", xs.Items)
	}

	// Get: the read model shows what the submission answered.
	read := asJSON[projections.Job](t, call(t, e, 200, "GET", pp+"/jobs/"+job.ID, j.viewer.Token, nil))
	if read.ID != job.ID || read.State != "queued" || !read.SubmittedAt.Equal(job.SubmittedAt) || !read.UpdatedAt.Equal(job.UpdatedAt) ||
		fmt.Sprint(read.Params, read.Env, read.Command, read.Resources) != fmt.Sprint(job.Params, job.Env, job.Command, job.Resources) {
		t.Fatalf("job read back:\n%+v\nsubmitted:\n%+v", read, job)
	}
	callProblem(t, e, 404, "not-found", "GET", pp+"/jobs/"+uuid.NewString(), j.viewer.Token, nil)
	callProblem(t, e, 404, "not-found", "GET", pp+"/jobs/not-a-uuid", j.viewer.Token, nil)
	// Another project's job is not found here.
	elsewhere := asJSON[api.ProjectResponse](t, call(t, e, 201, "POST", projectsPath, j.admin, map[string]any{"name": "Elsewhere"}))
	callProblem(t, e, 404, "not-found", "GET", projectsPath+"/"+elsewhere.Slug+"/jobs/"+job.ID, j.admin, nil)
	callProblem(t, e, 404, "not-found", "POST", projectsPath+"/"+elsewhere.Slug+"/jobs/"+job.ID+":cancel", j.admin, nil)

	// List: newest first, paged, filtered.
	all := []string{other.Job.ID, third.Job.ID, second.Job.ID, job.ID}
	var listed []string
	token := ""
	for pages := 0; ; pages++ {
		q := "?max_results=3"
		if token != "" {
			q += "&page_token=" + url.QueryEscape(token)
		}
		pg := asJSON[api.JobPage](t, call(t, e, 200, "GET", pp+"/jobs"+q, j.viewer.Token, nil))
		for _, it := range pg.Items {
			listed = append(listed, it.ID)
		}
		if token = pg.NextPageToken; token == "" || pages > 3 {
			break
		}
	}
	if !slices.Equal(listed, all) {
		t.Fatalf("listed %q, want newest first %q", listed, all)
	}
	ids := func(q string) []string {
		t.Helper()
		var out []string
		for _, it := range asJSON[api.JobPage](t, call(t, e, 200, "GET", pp+"/jobs"+q, j.viewer.Token, nil)).Items {
			out = append(out, it.ID)
		}
		return out
	}
	if got := ids("?state=queued&experiment=" + job.ExperimentID); !slices.Equal(got, []string{third.Job.ID, second.Job.ID, job.ID}) {
		t.Fatalf("queued jobs of churn: %q", got)
	}
	if got := ids("?state=running"); len(got) != 0 {
		t.Fatalf("running jobs: %q", got)
	}
	for _, q := range []string{"?state=done", "?state=QUEUED", "?experiment=churn", "?max_results=0", "?max_results=201"} {
		callProblem(t, e, 400, "validation-failed", "GET", pp+"/jobs"+q, j.viewer.Token, nil)
	}
	callProblem(t, e, 400, "invalid-page-token", "GET", pp+"/jobs?page_token=nope", j.viewer.Token, nil)

	// Cancel a queued job: it ends at once. Cancelling it again is refused
	// by the decider (job-ended).
	r := call(t, e, 200, "POST", pp+"/jobs/"+second.Job.ID+":cancel", j.editor.Token, nil)
	cancelled := asJSON[projections.Job](t, r)
	if cancelled.State != "cancelled" || !cancelled.CancelRequested || cancelled.EndedAt == nil || cancelled.Reason == "" || r.Header.Get("Maestro-Sequence") == "" {
		t.Fatalf("cancelled job: %s", r.Body)
	}
	if got := asJSON[projections.Job](t, call(t, e, 200, "GET", pp+"/jobs/"+second.Job.ID, j.viewer.Token, nil)); got.State != "cancelled" || got.EndedAt == nil || !got.EndedAt.Equal(*cancelled.EndedAt) {
		t.Fatalf("cancelled job read back: %+v", got)
	}
	p := callProblemBody(t, e, 409, "job-ended", "POST", pp+"/jobs/"+second.Job.ID+":cancel", j.editor.Token, nil)
	if !strings.Contains(p.Detail, "cancelled") {
		t.Fatalf("second cancel: %+v", p)
	}
	if got := ids("?state=cancelled"); !slices.Equal(got, []string{second.Job.ID}) {
		t.Fatalf("cancelled jobs: %q", got)
	}
	if got := ids("?state=queued"); !slices.Equal(got, []string{other.Job.ID, third.Job.ID, job.ID}) {
		t.Fatalf("queued jobs after a cancel: %q", got)
	}
	callProblem(t, e, 404, "not-found", "POST", pp+"/jobs/"+uuid.NewString()+":cancel", j.editor.Token, nil)
}

// A refused submission creates nothing: no job, no run, no experiment.
func TestJobSubmitValidation(t *testing.T) {
	t.Parallel()
	j := startJobs(t, "jobcheck")
	e, pp := j.e, j.pp
	cmd := []string{"python", "train.py"}
	with := func(kv ...any) map[string]any {
		b := map[string]any{"experiment": "refused", "command": cmd}
		for i := 0; i+1 < len(kv); i += 2 {
			b[kv[i].(string)] = kv[i+1]
		}
		return b
	}
	for _, c := range []struct {
		name   string
		body   any
		code   string
		detail string
	}{
		{"no command", map[string]any{"experiment": "refused"}, "validation-failed", "command"},
		{"empty command", with("command", []string{}), "validation-failed", "command"},
		{"empty program", with("command", []string{"", "x"}), "validation-failed", "command[0]"},
		{"no experiment", map[string]any{"command": cmd}, "validation-failed", "experiment"},
		{"blank experiment", with("experiment", "  "), "validation-failed", "experiment"},
		{"timeout not a duration", with("timeout", "abc"), "validation-failed", "timeout"},
		{"timeout without a unit", with("timeout", "90"), "validation-failed", "timeout"},
		{"timeout under a second", with("timeout", 0.5), "validation-failed", "timeout must be between 1s"},
		{"timeout under a second as a duration", with("timeout", "500ms"), "validation-failed", "timeout must be between 1s"},
		{"timeout over the maximum", with("timeout", "169h"), "validation-failed", "timeout must be between 1s"},
		{"negative timeout", with("timeout", -5), "validation-failed", "timeout"},
		{"timeout as a boolean", with("timeout", true), "validation-failed", "timeout"},
		{"too many retries", with("max_retries", 11), "validation-failed", "max_retries"},
		{"negative retries", with("max_retries", -1), "validation-failed", "max_retries"},
		{"fractional retries", with("max_retries", 1.5), "malformed-json", "max_retries"},
		{"secret in clear", with("env", map[string]string{"API_TOKEN": "x"}), "validation-failed", "secret://"},
		{"password in clear", with("env", map[string]string{"db_password": "hunter2"}), "validation-failed", "secret://"},
		{"bad secret reference", with("env", map[string]string{"API_TOKEN": "secret://a b"}), "validation-failed", "secret://NAME"},
		{"reserved env", with("env", map[string]string{"MAESTRO_RUN": "1"}), "validation-failed", "set by Maestro"},
		{"MLflow env", with("env", map[string]string{"MLFLOW_RUN_ID": "x"}), "validation-failed", "set by Maestro"},
		{"bad env name", with("env", map[string]string{"1X": "1"}), "validation-failed", "env"},
		{"bad cpu", with("resources", map[string]string{"cpu": "lots"}), "validation-failed", "resources.cpu"},
		{"bad memory", with("resources", map[string]string{"memory": "2 GB"}), "validation-failed", "resources.memory"},
		{"unknown resource", with("resources", map[string]string{"gpu": "1"}), "malformed-json", "gpu"},
		{"param as an object", with("params", map[string]any{"lr": map[string]any{"v": 1}}), "validation-failed", `params."lr"`},
		{"param as null", with("params", map[string]any{"lr": nil}), "validation-failed", `params."lr"`},
		{"param key", with("params", map[string]any{"bad*key": 1}), "validation-failed", "bad*key"},
		{"working dir above", with("working_dir", "../elsewhere"), "validation-failed", "working_dir"},
		{"artifact not an archive", with("artifact", map[string]string{"run_id": uuid.NewString(), "path": "model.bin"}), "validation-failed", "artifact.path"},
		{"unknown field", with("priority", 1), "malformed-json", "priority"},
		{"trailing data", []byte(`{"experiment":"refused","command":["x"]} {}`), "malformed-json", "after"},
	} {
		r := e.Do("POST", pp+"/jobs", j.editor.Token, c.body)
		p, err := checkProblem(r, 400, c.code)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if !strings.Contains(p.Detail, c.detail) {
			t.Errorf("%s: detail %q does not mention %q", c.name, p.Detail, c.detail)
		}
	}
	callProblem(t, e, 404, "not-found", "POST", pp+"/jobs", j.editor.Token,
		with("artifact", map[string]string{"run_id": uuid.NewString(), "path": "code.tar.gz"}))
	callProblem(t, e, 413, "payload-too-large", "POST", pp+"/jobs", j.editor.Token, huge)
	if pg := asJSON[api.JobPage](t, call(t, e, 200, "GET", pp+"/jobs", j.admin, nil)); len(pg.Items) != 0 {
		t.Fatalf("refused submissions made jobs: %+v", pg.Items)
	}
	if pg := asJSON[api.ExperimentPage](t, call(t, e, 200, "GET", pp+"/experiments?view=all", j.admin, nil)); len(pg.Items) != 0 {
		t.Fatalf("refused submissions made experiments: %+v", pg.Items)
	}

	// A secret-looking variable is accepted as a reference, and an empty one.
	s := j.submit(t, with("env", map[string]string{"API_TOKEN": "secret://x", "HF_TOKEN": ""}))
	if s.Job.Env["API_TOKEN"] != "secret://x" {
		t.Fatalf("env: %v", s.Job.Env)
	}
	// The limits themselves are allowed.
	j.submit(t, with("experiment", "limits", "timeout", "168h", "max_retries", 10))
}

// sseEvent is one Server-Sent Event.
type sseEvent struct{ name, data string }

// readSSE sends the events of an event stream to out until it ends, then
// closes out; comments (keep-alives) are skipped.
func readSSE(body *bufio.Reader, out chan<- sseEvent) {
	defer close(out)
	var ev sseEvent
	for {
		line, err := body.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if ev.name != "" || ev.data != "" {
				out <- ev
			}
			ev = sseEvent{}
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "event: "):
			ev.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			ev.data += strings.TrimPrefix(line, "data: ")
		}
	}
}

// parseSSE is readSSE of a whole answer.
func parseSSE(body []byte) []sseEvent {
	ch := make(chan sseEvent, 1024)
	readSSE(bufio.NewReader(strings.NewReader(string(body))), ch)
	var out []sseEvent
	for ev := range ch {
		out = append(out, ev)
	}
	return out
}

// follow opens a follow of a job's log and returns its events.
func follow(t *testing.T, ctx context.Context, e *testenv.Env, path, token string) (*http.Response, <-chan sseEvent) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, "GET", e.URL+path+"?follow=true", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" || resp.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("follow %s: %d %v", path, resp.StatusCode, resp.Header)
	}
	ch := make(chan sseEvent, 1024)
	go readSSE(bufio.NewReader(resp.Body), ch)
	return resp, ch
}

// nextEvent waits (bounded) for the next event of a follow.
func nextEvent(t *testing.T, ch <-chan sseEvent) (sseEvent, bool) {
	t.Helper()
	select {
	case ev, ok := <-ch:
		return ev, ok
	case <-time.After(20 * time.Second):
		t.Fatal("no event from the follow within 20s")
		return sseEvent{}, false
	}
}

func TestJobLogs(t *testing.T) {
	t.Parallel()
	j := startJobs(t, "joblogs")
	e, pp := j.e, j.pp
	outsider := regUser(e, j.admin, "outsider@joblogs.test", "member")
	job := j.submit(t, map[string]any{"experiment": "logs", "command": []string{"python", "train.py"}}).Job
	logs := pp + "/jobs/" + job.ID + "/logs"

	// No line yet: an empty list, an empty text.
	r := call(t, e, 200, "GET", logs, j.viewer.Token, nil)
	if strings.TrimSpace(string(r.Body)) != `{"lines":[]}` || r.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("empty log: %s %v", r.Body, r.Header)
	}
	r = call(t, e, 200, "GET", logs+"?format=text", j.viewer.Token, nil)
	if len(r.Body) != 0 || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("empty text log: %q %v", r.Body, r.Header)
	}
	callProblem(t, e, 404, "not-found", "GET", logs, outsider.Token, nil)
	callProblem(t, e, 404, "not-found", "GET", pp+"/jobs/"+uuid.NewString()+"/logs", j.viewer.Token, nil)
	callProblem(t, e, 400, "validation-failed", "GET", logs+"?format=xml", j.viewer.Token, nil)
	callProblem(t, e, 400, "validation-failed", "GET", logs+"?follow=maybe", j.viewer.Token, nil)
	call(t, e, 401, "GET", logs, "", nil)

	// Two attempts' lines, read back in order.
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)
	writeLog(t, e, job.ID, 1, runner.Line{Time: t0, Stream: runner.Stdout, Text: "epoch 1 loss 0.5"},
		runner.Line{Time: t0.Add(time.Second), Stream: runner.Stderr, Text: "warning: \"slow\"\tdisk"})
	writeLog(t, e, job.ID, 2, runner.Line{Time: t0.Add(time.Minute), Stream: runner.Stdout, Text: "epoch 1 loss 0.4"})
	want := []api.JobLogLine{
		{Attempt: 1, Time: t0, Stream: "stdout", Text: "epoch 1 loss 0.5"},
		{Attempt: 1, Time: t0.Add(time.Second), Stream: "stderr", Text: "warning: \"slow\"\tdisk"},
		{Attempt: 2, Time: t0.Add(time.Minute), Stream: "stdout", Text: "epoch 1 loss 0.4"},
	}
	got := asJSON[api.JobLogs](t, call(t, e, 200, "GET", logs, j.viewer.Token, nil)).Lines
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("log lines:\n%+v\nwant\n%+v", got, want)
	}
	r = call(t, e, 200, "GET", logs+"?format=text", j.viewer.Token, nil)
	wantText := "2026-01-02T03:04:05.123456789Z stdout epoch 1 loss 0.5\n" +
		"2026-01-02T03:04:06.123456789Z stderr warning: \"slow\"\tdisk\n" +
		"2026-01-02T03:05:05.123456789Z stdout epoch 1 loss 0.4\n"
	if string(r.Body) != wantText {
		t.Fatalf("text log:\n%s\nwant\n%s", r.Body, wantText)
	}

	// A live follow: the stored lines, then new ones as they come, then the
	// job's end.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, events := follow(t, ctx, e, logs, j.viewer.Token)
	for i := range want {
		ev, ok := nextEvent(t, events)
		var l api.JobLogLine
		if !ok || ev.name != "line" || json.Unmarshal([]byte(ev.data), &l) != nil || fmt.Sprint(l) != fmt.Sprint(want[i]) {
			t.Fatalf("event %d: %+v (ok %v), want line %+v", i, ev, ok, want[i])
		}
	}
	writeLog(t, e, job.ID, 3, runner.Line{Time: t0.Add(time.Hour), Stream: runner.Stdout, Text: "live"})
	if ev, ok := nextEvent(t, events); !ok || ev.name != "line" || !strings.Contains(ev.data, `"text":"live"`) || !strings.Contains(ev.data, `"attempt":3`) {
		t.Fatalf("live line: %+v (ok %v)", ev, ok)
	}
	call(t, e, 200, "POST", pp+"/jobs/"+job.ID+":cancel", j.editor.Token, nil)
	ev, ok := nextEvent(t, events)
	var end api.JobLogEnd
	if !ok || ev.name != "end" || json.Unmarshal([]byte(ev.data), &end) != nil || end.State != "cancelled" || end.Reason == "" {
		t.Fatalf("end event: %+v (ok %v)", ev, ok)
	}
	if ev, ok := nextEvent(t, events); ok {
		t.Fatalf("an event after the end: %+v", ev)
	}

	// Following an ended job answers what is stored and the end at once.
	r = call(t, e, 200, "GET", logs+"?follow=true", j.viewer.Token, nil)
	evs := parseSSE(r.Body)
	if len(evs) != 5 || evs[3].name != "line" || evs[4].name != "end" || !strings.Contains(evs[4].data, `"state":"cancelled"`) {
		t.Fatalf("follow of an ended job: %q", r.Body)
	}
	r = call(t, e, 200, "GET", logs+"?follow=true&format=text", j.viewer.Token, nil)
	if !strings.HasPrefix(string(r.Body), wantText) || !strings.HasSuffix(string(r.Body), " stdout live\n") {
		t.Fatalf("text follow of an ended job: %q", r.Body)
	}

	// The server's shutdown ends a follow (without an end event: the job
	// has not ended), and any follow after it.
	other := j.submit(t, map[string]any{"experiment": "logs", "command": []string{"true"}}).Job
	_, events = follow(t, ctx, e, pp+"/jobs/"+other.ID+"/logs", j.viewer.Token)
	e.P.API.EndStreams()
	if ev, ok := nextEvent(t, events); ok {
		t.Fatalf("after EndStreams: %+v", ev)
	}
}

// openFollow opens a follow of a job's log as token and returns it once
// its headers are in (the follow is then open on the server; the caller
// keeps or closes its body), or the status and body of a refusal.
func openFollow(ctx context.Context, e *testenv.Env, path, token string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", e.URL+path+"?follow=true", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("follow: %d %s", resp.StatusCode, b)
	}
	return resp, nil
}

// Follows are bounded: 16 open at once per user (their sessions and API
// tokens share the budget), and a bound for the whole process; beyond
// either a follow is refused with 429 too-many-streams, and a follow that
// ends frees its place. Reads without follow are not counted.
func TestJobLogFollowLimits(t *testing.T) {
	t.Parallel()
	j := startJobs(t, "joblimits")
	e := j.e
	job := j.submit(t, map[string]any{"experiment": "limits", "command": []string{"true"}}).Job // stays queued: no runner
	logs := j.pp + "/jobs/" + job.ID + "/logs"
	viewerAPI := asJSON[api.APITokenResponse](t, call(t, e, 201, "POST", "/api/v1/tokens", j.viewer.Token, map[string]any{"name": "follows"})).Token
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	mustFollow := func(token string) *http.Response {
		t.Helper()
		resp, err := openFollow(ctx, e, logs, token)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}

	// The viewer's 16: 12 with the session, 4 with an API token.
	var mine []*http.Response
	for i := range 16 {
		tok := j.viewer.Token
		if i >= 12 {
			tok = viewerAPI
		}
		mine = append(mine, mustFollow(tok))
	}
	// The 17th is refused, whichever credential asks; a read once is not.
	callProblem(t, e, 429, "too-many-streams", "GET", logs+"?follow=true", j.viewer.Token, nil)
	callProblem(t, e, 429, "too-many-streams", "GET", logs+"?follow=true&format=text", viewerAPI, nil)
	call(t, e, 200, "GET", logs, j.viewer.Token, nil)
	// Another user still follows.
	mustFollow(j.editor.Token)

	// A follow that ends frees its place (once the server has noticed the
	// client went away).
	mine[0].Body.Close()
	eventually(t, 20*time.Second, "a follow after closing one", func() error {
		resp, err := openFollow(ctx, e, logs, j.viewer.Token)
		if err != nil {
			return err
		}
		t.Cleanup(func() { resp.Body.Close() })
		return nil
	})
	callProblem(t, e, 429, "too-many-streams", "GET", logs+"?follow=true", j.viewer.Token, nil)
}

// ---- authorization ----

// jobCells are the job routes' cells of the registry's authorization
// matrix (matrixCells): submitting and cancelling are job:run (editors and
// up, mxModelWrite's rank), reading is any member's. The fixture jobs run
// `sleep 600`, so that a job cancelled in a cell has not ended first even
// where a runner claims it.
func jobCells() map[string]mxCell {
	const jobs = mxProj + "/jobs"
	job := func(m *matrix, p *mxProject) mxReq {
		return mxReq{params: map[string]string{"job": m.job(p, false)}}
	}
	return map[string]mxCell{
		"POST " + jobs: {action: mxModelWrite, build: func(m *matrix, _ *mxProject) mxReq {
			return mxReq{body: map[string]any{"experiment": "x", "name": m.unique("mx job"), "command": []string{"true"}}}
		}},
		"GET " + jobs:                 {action: mxRead, build: func(*matrix, *mxProject) mxReq { return mxReq{} }},
		"GET " + jobs + "/{job}":      {action: mxRead, build: job},
		"GET " + jobs + "/{job}/logs": {action: mxRead, build: job},
		"POST " + jobs + "/{job}:cancel": {action: mxModelWrite, build: func(m *matrix, p *mxProject) mxReq {
			return mxReq{params: map[string]string{"job": m.job(p, true)}}
		}},
	}
}

// mxJobs holds a fixture job per matrix and project (the read cells share
// it; a cancel cell gets a fresh one).
var mxJobs sync.Map

// job returns the id of a job in p submitted by the admin: the shared one,
// or a fresh one.
func (m *matrix) job(p *mxProject, fresh bool) string {
	m.t.Helper()
	key := fmt.Sprintf("%p/%s", m, p.id)
	if !fresh {
		if id, ok := mxJobs.Load(key); ok {
			return id.(string)
		}
	}
	s := asJSON[api.JobSubmission](m.t, m.admin("POST", mxProjects+"/"+p.slug+"/jobs",
		map[string]any{"experiment": "x", "name": m.unique("fixture"), "command": []string{"sleep", "600"}}))
	if !fresh {
		mxJobs.Store(key, s.Job.ID)
	}
	return s.Job.ID
}

// ---- OpenAPI walk ----

// walkJobs exercises every job route's (and GET /metrics') success and main
// errors and returns, per operation, the statuses it provoked
// (TestOpenAPIConformance checks them against the document; the Observe of e
// validates each exchange). Its jobs run `sleep 600`, so they are queued or
// running (whether or not e has a runner) until the walk cancels them.
func walkJobs(t *testing.T, e *testenv.Env, admin string) map[string][]int {
	t.Helper()
	want := map[string][]int{}
	add := func(op string, codes ...int) { want[op] = append(want[op], codes...) }
	async := []string{"Prefer", "respond-async"}
	const missingID = "00000000-0000-4000-8000-000000000000"

	editor := regUser(e, admin, "job-editor@example.com", "viewer")
	viewer := regUser(e, admin, "job-viewer@example.com", "viewer")
	outsider := regUser(e, admin, "job-outsider@example.com", "member")
	proj := asJSON[api.ProjectResponse](t, call(t, e, 201, "POST", projectsPath, admin, map[string]any{"name": "Jobs Walk"}))
	pp := projectsPath + "/" + proj.Slug
	call(t, e, 200, "PUT", pp+"/members/"+editor.ID, admin, map[string]any{"role": "editor"})
	call(t, e, 200, "PUT", pp+"/members/"+viewer.ID, admin, map[string]any{"role": "viewer"})
	js := pp + "/jobs"
	sleeper := func(name string) map[string]any {
		return map[string]any{"experiment": "walk", "name": name, "command": []string{"sleep", "600"}, "params": map[string]any{"lr": 0.01},
			"env": map[string]string{"WANDB_MODE": "offline"}, "timeout": "10m", "max_retries": 1, "resources": map[string]string{"cpu": "1"}}
	}

	// Submit.
	r := call(t, e, 201, "POST", js, editor.Token, sleeper("walk 1"))
	job := asJSON[api.JobSubmission](t, r).Job
	jp := js + "/" + job.ID
	keyed := call(t, e, 201, "POST", js, editor.Token, sleeper("keyed"), "Idempotency-Key", "job-sub-1")
	if again := call(t, e, 201, "POST", js, editor.Token, sleeper("keyed"), "Idempotency-Key", "job-sub-1"); again.Header.Get("Idempotent-Replayed") != "true" || string(again.Body) != string(keyed.Body) {
		t.Fatalf("replayed submission: %v %s", again.Header, again.Body)
	}
	asyncJob := asJSON[api.JobSubmission](t, call(t, e, 202, "POST", js, editor.Token, sleeper("walk async"), async...)).Job
	callProblem(t, e, 400, "validation-failed", "POST", js, editor.Token, map[string]any{"experiment": "walk", "command": []string{"x"}, "timeout": "soon"})
	callProblem(t, e, 400, "malformed-json", "POST", js, editor.Token, map[string]any{"experiment": "walk", "command": []string{"x"}, "queue": "gpu"})
	callProblem(t, e, 403, "forbidden", "POST", js, viewer.Token, sleeper("x"))
	callProblem(t, e, 404, "not-found", "POST", js, outsider.Token, sleeper("x"))
	gone := asJSON[projections.Experiment](t, call(t, e, 201, "POST", pp+"/experiments", editor.Token, map[string]any{"name": "gone"}))
	call(t, e, 204, "DELETE", pp+"/experiments/"+gone.ID, editor.Token, nil)
	callProblem(t, e, 409, "experiment-deleted", "POST", js, editor.Token, map[string]any{"experiment": gone.ID, "command": []string{"true"}})
	add("submitJob", 201, 202, 400, 403, 404, 409)
	add("submitJob", commandErrors(t, e, editor.Token, "POST", js, projectsPath+"/nope/jobs", sleeper("k"), "job-sub")...)

	// Read.
	pg := asJSON[api.JobPage](t, call(t, e, 200, "GET", js+"?max_results=1", viewer.Token, nil))
	if len(pg.Items) != 1 || pg.NextPageToken == "" {
		t.Fatalf("jobs page 1: %+v", pg)
	}
	call(t, e, 200, "GET", js+"?max_results=200&page_token="+url.QueryEscape(pg.NextPageToken), viewer.Token, nil)
	call(t, e, 200, "GET", js+"?state=queued&experiment="+job.ExperimentID, viewer.Token, nil)
	callProblem(t, e, 400, "validation-failed", "GET", js+"?state=stuck", viewer.Token, nil)
	callProblem(t, e, 400, "invalid-page-token", "GET", js+"?page_token=nope", viewer.Token, nil)
	callProblem(t, e, 401, "unauthenticated", "GET", js, "", nil)
	callProblem(t, e, 404, "not-found", "GET", js, outsider.Token, nil)
	add("listJobs", 200, 400, 401, 404)

	if got := asJSON[projections.Job](t, call(t, e, 200, "GET", jp, viewer.Token, nil)); got.ID != job.ID {
		t.Fatalf("get job: %+v", got)
	}
	call(t, e, 200, "GET", js+"/"+asyncJob.ID, viewer.Token, nil)
	callProblem(t, e, 400, "validation-failed", "GET", jp+"?min_sequence=x", viewer.Token, nil)
	callProblem(t, e, 401, "unauthenticated", "GET", jp, "", nil)
	callProblem(t, e, 404, "not-found", "GET", js+"/"+missingID, viewer.Token, nil)
	callProblem(t, e, 404, "not-found", "GET", jp, outsider.Token, nil)
	add("getJob", 200, 400, 401, 404)

	// Logs (none yet: a runner that claimed the job has printed nothing).
	call(t, e, 200, "GET", jp+"/logs", viewer.Token, nil)
	call(t, e, 200, "GET", jp+"/logs?format=text", viewer.Token, nil)
	callProblem(t, e, 400, "validation-failed", "GET", jp+"/logs?format=html", viewer.Token, nil)
	callProblem(t, e, 401, "unauthenticated", "GET", jp+"/logs", "", nil)
	callProblem(t, e, 404, "not-found", "GET", js+"/"+missingID+"/logs", viewer.Token, nil)
	callProblem(t, e, 404, "not-found", "GET", jp+"/logs", outsider.Token, nil)
	add("getJobLogs", 200, 400, 401, 404)

	// Cancel: queued or running, it is accepted; once it has ended, refused.
	if got := asJSON[projections.Job](t, call(t, e, 200, "POST", jp+":cancel", editor.Token, nil)); !got.CancelRequested {
		t.Fatalf("cancelled job: %+v", got)
	}
	call(t, e, 202, "POST", js+"/"+asyncJob.ID+":cancel", editor.Token, nil, async...)
	callProblem(t, e, 403, "forbidden", "POST", js+"/"+asyncJob.ID+":cancel", viewer.Token, nil)
	callProblem(t, e, 404, "not-found", "POST", js+"/"+missingID+":cancel", editor.Token, nil)
	callProblem(t, e, 404, "not-found", "POST", jp+":cancel", outsider.Token, nil)
	eventually(t, 30*time.Second, "the cancelled job ends", func() error {
		if got := asJSON[projections.Job](t, call(t, e, 200, "GET", jp, viewer.Token, nil)); got.State != "cancelled" {
			return fmt.Errorf("state %s", got.State)
		}
		return nil
	})
	call(t, e, 409, "POST", jp+":cancel", editor.Token, nil)
	add("cancelJob", 200, 202, 403, 404, 409)
	add("cancelJob", commandErrors(t, e, editor.Token, "POST", jp+":cancel", js+"/"+missingID+":cancel", nil, "job-cancel")...)
	// The log of an ended job, followed: the end at once.
	if evs := parseSSE(call(t, e, 200, "GET", jp+"/logs?follow=true", viewer.Token, nil).Body); len(evs) == 0 || evs[len(evs)-1].name != "end" {
		t.Fatalf("follow of an ended job: %+v", evs)
	}

	// Metrics: admins (and the scrape token, TestMetricsRoute) only. A
	// platform without metrics answers the admin 404.
	callProblem(t, e, 401, "unauthenticated", "GET", "/metrics", "", nil)
	callProblem(t, e, 403, "forbidden", "GET", "/metrics", viewer.Token, nil)
	switch r := e.Do("GET", "/metrics", admin, nil); r.Status {
	case 200, 404:
		add("getMetrics", r.Status)
	default:
		t.Fatalf("GET /metrics as admin: %d %s", r.Status, r.Body)
	}
	add("getMetrics", 401, 403)
	// Leave no sleeper queued or running.
	for _, it := range asJSON[api.JobPage](t, call(t, e, 200, "GET", js+"?max_results=200", admin, nil)).Items {
		if it.State != "queued" && it.State != "running" {
			continue
		}
		// The list is a read model: a job it shows running may have ended
		// since (the asynchronous cancel above), which the command refuses.
		if r := e.Do("POST", js+"/"+it.ID+":cancel", admin, nil); r.Status != 200 && !(r.Status == 409 && strings.Contains(string(r.Body), "job-ended")) {
			t.Fatalf("cancel %s in the clean-up: %d %s", it.ID, r.Status, r.Body)
		}
	}
	return want
}

// The job walk covers every job operation's statuses it names (and
// TestOpenAPIConformance runs it with the other walks), on a platform with
// a runner.
func TestJobsOpenAPIWalk(t *testing.T) {
	t.Parallel()
	x := &exercised{seen: map[string]bool{}}
	e := testenv.Start(t, testenv.Config(t))
	x.observe(e)
	want := walkJobs(t, e, e.Admin("root@example.com").AccessToken)
	doc := loadOpenAPI(t)
	for _, op := range []string{"submitJob", "listJobs", "getJob", "cancelJob", "getJobLogs", "getMetrics"} {
		codes, ok := want[op]
		if !ok {
			t.Errorf("the walk does not cover %s", op)
		}
		for _, c := range codes {
			if !x.seen[op+" "+fmt.Sprint(c)] {
				t.Errorf("%s %d was not exercised", op, c)
			}
		}
	}
	for _, o := range operations(doc) {
		if _, ok := want[o.op.OperationID]; !ok && (strings.Contains(o.path, "/jobs") || o.path == "/metrics") {
			t.Errorf("the walk does not cover %s (%s %s)", o.op.OperationID, o.method, o.path)
		}
	}
}
