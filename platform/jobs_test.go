package platform_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/maestro-ml/maestro/internal/testenv"
	"github.com/maestro-ml/maestro/platform"
)

// The training jobs of issue 9, end to end on a real platform (embedded
// JetStream, real Postgres, the in-process runner with the local executor)
// through real HTTP: a real training program (runner/testdata/train, linear
// regression by gradient descent) runs as a job and logs into its own run
// through the MLflow REST API with only the variables the runner injects.

// trainProgram builds the training fixture into the test's temp dir (the
// build cache makes every build after the first quick).
func trainProgram(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../runner/testdata/train")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "train")
	cmd := exec.Command("go", "build", "-o", out, ".")
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the training fixture: %v\n%s", err, b)
	}
	return out
}

type jobEnv struct {
	*testenv.Env
	token   string // an editor's access token
	editor  string // the editor's user id
	project string
}

// startJobs starts a platform whose runner has a short lease and grace, an
// admin, a project and an editor of it.
func startJobs(t *testing.T) *jobEnv {
	t.Helper()
	return startJobsWith(t, nil)
}

// startJobsWith is startJobs with the configuration changed by mod.
func startJobsWith(t testing.TB, mod func(*platform.Config)) *jobEnv {
	t.Helper()
	cfg := testenv.Config(t)
	cfg.Jobs.Lease = 2 * time.Second
	cfg.Jobs.Grace = 500 * time.Millisecond
	if mod != nil {
		mod(&cfg)
	}
	e := testenv.Start(t, cfg)
	admin := e.Admin("admin@example.com")
	r := e.Do("POST", "/api/v1/projects", admin.AccessToken, map[string]any{"name": "Jobs " + t.Name()})
	if r.Status != http.StatusCreated {
		t.Fatalf("create project: %d %s", r.Status, r.Body)
	}
	var proj struct{ ID, Slug string }
	r.JSON(t, &proj)
	ed, edTok := e.UserWithRole(admin.AccessToken, "editor@example.com", "member")
	if r := e.Do("PUT", "/api/v1/projects/"+proj.ID+"/members/"+ed.ID, admin.AccessToken, map[string]any{"role": "editor"}); r.Status/100 != 2 {
		t.Fatalf("add editor: %d %s", r.Status, r.Body)
	}
	return &jobEnv{Env: e, token: edTok.AccessToken, editor: ed.ID, project: proj.ID}
}

type jobView struct {
	ID       string `json:"id"`
	RunID    string `json:"run_id"`
	State    string `json:"state"`
	Reason   string `json:"reason"`
	ExitCode *int   `json:"exit_code"`
	Attempts []struct {
		Number   int    `json:"number"`
		RunnerID string `json:"runner_id"`
		Outcome  string `json:"outcome"`
		Reason   string `json:"reason"`
	} `json:"attempts"`
}

func (e *jobEnv) path(rest string) string { return "/api/v1/projects/" + e.project + rest }

func (e *jobEnv) submit(t *testing.T, body map[string]any) jobView {
	t.Helper()
	r := e.Do("POST", e.path("/jobs"), e.token, body)
	if r.Status != http.StatusCreated {
		t.Fatalf("submit: %d %s", r.Status, r.Body)
	}
	var out struct {
		Job jobView `json:"job"`
	}
	r.JSON(t, &out)
	return out.Job
}

func (e *jobEnv) job(t *testing.T, id string) jobView {
	t.Helper()
	r := e.Do("GET", e.path("/jobs/"+id), e.token, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("get job: %d %s", r.Status, r.Body)
	}
	var j jobView
	r.JSON(t, &j)
	return j
}

// await polls the job until cond holds (or fails the test at the deadline).
func (e *jobEnv) await(t *testing.T, id string, within time.Duration, cond func(jobView) bool) jobView {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		j := e.job(t, id)
		if cond(j) {
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s: condition not met within %s; last %+v", id, within, j)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func ended(j jobView) bool {
	switch j.State {
	case "succeeded", "failed", "cancelled", "timed_out":
		return true
	}
	return false
}

func (e *jobEnv) runStatus(t *testing.T, runID string, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := e.Do("GET", e.path("/runs/"+runID), e.token, nil)
		var run struct {
			Status string `json:"status"`
		}
		r.JSON(t, &run)
		if run.Status == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %s: status %q, want %q", runID, run.Status, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestJobTrainsEndToEnd(t *testing.T) {
	train := trainProgram(t)
	e := startJobs(t)
	j := e.submit(t, map[string]any{"experiment": "linreg", "command": []string{train}, "params": map[string]any{"epochs": 8, "lr": 0.1},
		"timeout": "60s"})
	if j.State != "queued" {
		t.Fatalf("a new job is %q, want queued", j.State)
	}
	done := e.await(t, j.ID, 60*time.Second, ended)
	if done.State != "succeeded" || done.ExitCode == nil || *done.ExitCode != 0 || len(done.Attempts) != 1 {
		t.Fatalf("job ended %+v, want succeeded with exit code 0 in one attempt", done)
	}
	e.runStatus(t, j.RunID, "FINISHED")
	// Its metrics, logged by the program through the MLflow REST API, are
	// searchable; its params were logged by the platform.
	r := e.Do("POST", e.path("/runs:search"), e.token, map[string]any{"filter": "metrics.final_loss < 1 and params.epochs = '8'"})
	if r.Status != http.StatusOK || !strings.Contains(string(r.Body), j.RunID) {
		t.Fatalf("search by the run's metric: %d %s", r.Status, r.Body)
	}
	r = e.Do("GET", e.path("/runs/"+j.RunID+"/metrics/loss"), e.token, nil)
	if r.Status != http.StatusOK || strings.Count(string(r.Body), `"step"`) != 8 {
		t.Fatalf("loss history: %d %s", r.Status, r.Body)
	}
	// Its log is a run artifact.
	r = e.Do("GET", e.path("/runs/"+j.RunID+"/artifacts/logs/attempt-1.log"), e.token, nil)
	if r.Status != http.StatusOK || !strings.Contains(string(r.Body), "epoch 8 loss=") || !strings.Contains(string(r.Body), "training on 200 samples") {
		t.Fatalf("log artifact: %d %s", r.Status, r.Body)
	}
	// And the logs route has it too.
	r = e.Do("GET", e.path("/jobs/"+j.ID+"/logs"), e.token, nil)
	if r.Status != http.StatusOK || !strings.Contains(string(r.Body), "epoch 8 loss=") {
		t.Fatalf("job logs: %d %s", r.Status, r.Body)
	}
}

func TestJobFailureTimeoutCancel(t *testing.T) {
	train := trainProgram(t)
	e := startJobs(t)
	failing := e.submit(t, map[string]any{"experiment": "x", "command": []string{train}, "params": map[string]any{"epochs": 2, "exit_code": 3}})
	slow := e.submit(t, map[string]any{"experiment": "x", "command": []string{train}, "params": map[string]any{"epochs": 1000, "sleep": 0.2}, "timeout": "2s"})
	stubborn := e.submit(t, map[string]any{"experiment": "x", "command": []string{train},
		"params": map[string]any{"epochs": 1000, "sleep": 0.2, "trap_term": "ignore"}})

	j := e.await(t, failing.ID, 60*time.Second, ended)
	if j.State != "failed" || j.ExitCode == nil || *j.ExitCode != 3 || j.Reason != "exit code 3" {
		t.Fatalf("exit 3: %+v", j)
	}
	e.runStatus(t, failing.RunID, "FAILED")

	j = e.await(t, slow.ID, 60*time.Second, ended)
	if j.State != "timed_out" || !strings.Contains(j.Reason, "timeout") {
		t.Fatalf("timeout: %+v", j)
	}
	e.runStatus(t, slow.RunID, "FAILED")

	e.await(t, stubborn.ID, 60*time.Second, func(j jobView) bool { return j.State == "running" })
	start := time.Now()
	if r := e.Do("POST", e.path("/jobs/"+stubborn.ID+":cancel"), e.token, nil); r.Status != http.StatusOK {
		t.Fatalf("cancel: %d %s", r.Status, r.Body)
	}
	j = e.await(t, stubborn.ID, 15*time.Second, ended)
	if j.State != "cancelled" {
		t.Fatalf("cancel: %+v", j)
	}
	t.Logf("a program ignoring SIGTERM was cancelled in %s", time.Since(start).Round(time.Millisecond))
	e.runStatus(t, stubborn.RunID, "KILLED")
}

func TestJobLogFollow(t *testing.T) {
	train := trainProgram(t)
	e := startJobs(t)
	j := e.submit(t, map[string]any{"experiment": "x", "command": []string{train}, "params": map[string]any{"epochs": 6, "sleep": 0.2}})
	req, _ := http.NewRequest("GET", e.URL+e.path("/jobs/"+j.ID+"/logs?follow=true"), nil)
	req.Header.Set("Authorization", "Bearer "+e.token)
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("follow: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var epochs int
	var endData string
	sc := bufio.NewScanner(resp.Body)
	event := ""
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: ") && event == "line":
			var l struct {
				Text string `json:"text"`
			}
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &l); err != nil {
				t.Fatalf("line event %q: %v", line, err)
			}
			if strings.HasPrefix(l.Text, "epoch ") {
				epochs++
			}
		case strings.HasPrefix(line, "data: ") && event == "end":
			endData = strings.TrimPrefix(line, "data: ")
		}
	}
	if epochs != 6 || !strings.Contains(endData, "succeeded") {
		t.Fatalf("followed %d epoch lines and end %q, want 6 and succeeded", epochs, endData)
	}
}

// runnerOnly is the configuration of a process that is only a runner, on
// the NATS, Postgres and artifact directory of the platform of e (which
// must listen for NATS clients).
func runnerOnly(t *testing.T, e *jobEnv, id string) platform.Config {
	t.Helper()
	pw, err := os.ReadFile(filepath.Join(e.Config.DataDir, "nats.password"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := testenv.Config(t)
	cfg.DatabaseURL = e.Config.DatabaseURL
	cfg.NATSURL, cfg.NATSUser, cfg.NATSPassword, cfg.NATSReplicas = e.P.NATSClientURL(), "maestro", strings.TrimSpace(string(pw)), 1
	cfg.ArtifactDir = filepath.Join(e.Config.DataDir, "artifacts")
	cfg.API, cfg.Worker, cfg.Runner = false, false, true
	cfg.Jobs = e.Config.Jobs
	cfg.Jobs.RunnerID, cfg.Jobs.PublicURL = id, e.URL
	return cfg
}

// startJobsListening is startJobs with NATS open to other processes.
func startJobsListening(t *testing.T, mod func(*platform.Config)) *jobEnv {
	t.Helper()
	return startJobsWith(t, func(c *platform.Config) {
		c.NATSListen = "127.0.0.1:0"
		if mod != nil {
			mod(c)
		}
	})
}

// Two runners compete for 20 jobs: each job runs exactly once (one
// attempt), and both runners take part.
func TestTwoRunnersShareTwentyJobs(t *testing.T) {
	e := startJobsListening(t, func(c *platform.Config) { c.Jobs.RunnerID = "runner-a" })
	second := testenv.Start(t, runnerOnly(t, e, "runner-b"))
	_ = second
	var ids []string
	for i := range 20 {
		j := e.submit(t, map[string]any{"experiment": "fleet", "name": fmt.Sprintf("job-%d", i),
			"command": []string{"sh", "-c", "sleep 0.3; echo ran $MAESTRO_JOB_ID"}})
		ids = append(ids, j.ID)
	}
	byRunner := map[string]int{}
	for _, id := range ids {
		j := e.await(t, id, 90*time.Second, ended)
		if j.State != "succeeded" || len(j.Attempts) != 1 {
			t.Fatalf("job %s: %+v, want succeeded in exactly one attempt", id, j)
		}
		byRunner[j.Attempts[0].RunnerID]++
	}
	if byRunner["runner-a"] == 0 || byRunner["runner-b"] == 0 || byRunner["runner-a"]+byRunner["runner-b"] != 20 {
		t.Fatalf("jobs per runner: %v, want both runners to run some of the 20", byRunner)
	}
	t.Logf("jobs per runner: %v", byRunner)
}

// A runner killed with SIGKILL loses its lease within a bounded time; the
// attempt is recorded as lost and the job retried on another runner; the
// killed runner's child does not keep running (parent-death signal).
func TestKilledRunnerJobRetried(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts the maestro binary")
	}
	bin := filepath.Join(t.TempDir(), "maestro")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/maestro").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	// The platform runs no runner of its own until the doomed one has the job.
	e := startJobsListening(t, func(c *platform.Config) { c.Runner = false })
	doomedCfg := runnerOnly(t, e, "doomed")
	runner := exec.Command(bin, "runner")
	runner.Env = append(os.Environ(),
		"MAESTRO_NATS_URL="+doomedCfg.NATSURL, "MAESTRO_NATS_USER=maestro", "MAESTRO_NATS_PASSWORD="+doomedCfg.NATSPassword,
		"MAESTRO_NATS_REPLICAS=1", "MAESTRO_DATABASE_URL="+doomedCfg.DatabaseURL, "MAESTRO_ARTIFACT_DIR="+doomedCfg.ArtifactDir,
		"MAESTRO_PUBLIC_URL="+e.URL, "MAESTRO_RUNNER_ID=doomed", "MAESTRO_JOB_LEASE=2s", "MAESTRO_DATA_DIR="+t.TempDir(),
		"MAESTRO_LOG_LEVEL=warn")
	runner.Stdout, runner.Stderr = os.Stderr, os.Stderr
	if err := runner.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = runner.Process.Kill(); _ = runner.Wait() })
	pidFile := filepath.Join(t.TempDir(), "pid")
	j := e.submit(t, map[string]any{"experiment": "x", "max_retries": 1, "params": map[string]any{"pidfile": pidFile},
		"command": []string{"sh", "-c", `echo $$ > "$MAESTRO_PARAM_PIDFILE"; if [ "$MAESTRO_ATTEMPT" = 1 ]; then exec sleep 1000; fi; echo second attempt`}})
	e.await(t, j.ID, 60*time.Second, func(j jobView) bool { return j.State == "running" && j.Attempts[0].RunnerID == "doomed" })
	var pid int
	deadline := time.Now().Add(10 * time.Second)
	for pid == 0 {
		if b, err := os.ReadFile(pidFile); err == nil {
			pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		}
		if time.Now().After(deadline) {
			t.Fatal("the first attempt never wrote its pid")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := runner.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = runner.Wait()
	killed := time.Now()
	// The orphan dies with its runner.
	for syscall.Kill(pid, 0) == nil {
		if time.Since(killed) > 5*time.Second {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("the killed runner's child %d is still running", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Another runner takes the job once the lease is lost.
	testenv.Start(t, runnerOnly(t, e, "rescuer"))
	done := e.await(t, j.ID, 60*time.Second, ended)
	if done.State != "succeeded" || len(done.Attempts) != 2 || done.Attempts[0].Outcome != "lost" ||
		!strings.Contains(done.Attempts[0].Reason, "no heartbeat") || done.Attempts[1].RunnerID != "rescuer" {
		t.Fatalf("after the kill: %+v, want attempt 1 lost and attempt 2 succeeded on the rescuer", done)
	}
	t.Logf("job finished %s after the runner was killed", time.Since(killed).Round(time.Millisecond))
}

// The job's MLFLOW_TRACKING_TOKEN works in its project only (404
// elsewhere) and is refused (401) within seconds of the job's end.
func TestJobTokenScopedAndRevoked(t *testing.T) {
	e := startJobs(t)
	admin := e.Login("admin@example.com", testenv.Password)
	r := e.Do("POST", "/api/v1/projects", admin.AccessToken, map[string]any{"name": "Elsewhere"})
	var other struct{ ID string }
	r.JSON(t, &other)
	tokenFile := filepath.Join(t.TempDir(), "token")
	release := filepath.Join(t.TempDir(), "release")
	j := e.submit(t, map[string]any{"experiment": "x", "params": map[string]any{"out": tokenFile, "release": release},
		"command": []string{"sh", "-c", `printf %s "$MLFLOW_TRACKING_TOKEN" > "$MAESTRO_PARAM_OUT"; while [ ! -e "$MAESTRO_PARAM_RELEASE" ]; do sleep 0.05; done`}})
	var token string
	deadline := time.Now().Add(30 * time.Second)
	for token == "" {
		if b, err := os.ReadFile(tokenFile); err == nil {
			token = string(b)
		}
		if time.Now().After(deadline) {
			t.Fatal("the job never wrote its token")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.HasPrefix(token, "mae_") {
		t.Fatalf("MLFLOW_TRACKING_TOKEN is not an API token")
	}
	if r := e.Do("GET", e.path("/runs/"+j.RunID), token, nil); r.Status != http.StatusOK {
		t.Fatalf("the job's token on its own run: %d %s", r.Status, r.Body)
	}
	if r := e.Do("GET", "/api/v1/projects/"+other.ID, token, nil); r.Status != http.StatusNotFound {
		t.Fatalf("the job's token on another project: %d %s, want 404", r.Status, r.Body)
	}
	if err := os.WriteFile(release, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	e.await(t, j.ID, 30*time.Second, ended)
	endedAt := time.Now()
	for {
		r := e.Do("GET", e.path("/runs/"+j.RunID), token, nil)
		if r.Status == http.StatusUnauthorized {
			break
		}
		if time.Since(endedAt) > 5*time.Second {
			t.Fatalf("the job's token still answers %d %s after the job ended", r.Status, r.Body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("the job's token was refused %s after the job was seen ended", time.Since(endedAt).Round(time.Millisecond))
}

// A job's secret://NAME is resolved from its own project's secrets on the
// runner, never stored in clear, and redacted from its log; another
// project's secret is out of its reach.
func TestJobSecrets(t *testing.T) {
	secrets := t.TempDir()
	e := startJobsWith(t, func(c *platform.Config) { c.Jobs.SecretsDir = secrets })
	const value = "s3cr3t-hunter2-value"
	if err := os.MkdirAll(filepath.Join(secrets, e.project), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(secrets, e.project, "db.password"), []byte(value+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	j := e.submit(t, map[string]any{"experiment": "x", "env": map[string]any{"DB_PASSWORD": "secret://db.password"},
		"command": []string{"sh", "-c", fmt.Sprintf(`test ${#DB_PASSWORD} -eq %d && echo "connecting with $DB_PASSWORD"`, len(value))}})
	done := e.await(t, j.ID, 30*time.Second, ended)
	if done.State != "succeeded" {
		t.Fatalf("the secret did not reach the job: %+v", done)
	}
	r := e.Do("GET", e.path("/jobs/"+j.ID+"/logs?format=text"), e.token, nil)
	if !strings.Contains(string(r.Body), "connecting with [REDACTED]") || strings.Contains(string(r.Body), value) {
		t.Fatalf("log: %s", r.Body)
	}
	r = e.Do("GET", e.path("/jobs/"+j.ID), e.token, nil)
	if strings.Contains(string(r.Body), value) || !strings.Contains(string(r.Body), "secret://db.password") {
		t.Fatalf("job: %s", r.Body)
	}
	admin := e.Login("admin@example.com", testenv.Password)
	r = e.Do("GET", "/api/v1/audit?max_results=200", admin.AccessToken, nil)
	if r.Status != http.StatusOK || strings.Contains(string(r.Body), value) {
		t.Fatalf("audit trail: %d (holds the secret: %v)", r.Status, strings.Contains(string(r.Body), value))
	}
	// Another project's job names the same secret: not its to have.
	r = e.Do("POST", "/api/v1/projects", admin.AccessToken, map[string]any{"name": "Other"})
	var other struct{ ID string }
	r.JSON(t, &other)
	r = e.Do("POST", "/api/v1/projects/"+other.ID+"/jobs", admin.AccessToken, map[string]any{"experiment": "x",
		"env": map[string]any{"DB_PASSWORD": "secret://db.password"}, "command": []string{"true"}})
	if r.Status != http.StatusCreated {
		t.Fatalf("submit in the other project: %d %s", r.Status, r.Body)
	}
	var out struct{ Job jobView }
	r.JSON(t, &out)
	o := &jobEnv{Env: e.Env, token: admin.AccessToken, project: other.ID}
	if done := o.await(t, out.Job.ID, 30*time.Second, ended); done.State != "failed" || !strings.Contains(done.Reason, "not available") {
		t.Fatalf("another project's secret: %+v", done)
	}
}
