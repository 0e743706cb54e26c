package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The "kill the server mid-sweep, restart, and it continues": a
// 12-trial sweep of the training fixture on `maestro serve`, SIGKILLed
// with trials running and started again on the same data dir, completes
// with exactly 12 trials, each run once as its own job, none beyond 12, and
// the params of the trials suggested before the kill unchanged.
func TestSweepSurvivesKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the binary and a managed PostgreSQL twice")
	}
	bin := buildBinary(t)
	train := filepath.Join(t.TempDir(), "train")
	if out, err := exec.Command("go", "build", "-o", train, "../../runner/testdata/train").CombinedOutput(); err != nil {
		t.Fatalf("build the training fixture: %v\n%s", err, out)
	}
	dataDir := serveDataDir(t)
	env := []string{"MAESTRO_BOOTSTRAP_ADMIN_EMAIL=root@example.com", "MAESTRO_BOOTSTRAP_ADMIN_PASSWORD=bootstrap password 1",
		"MAESTRO_JOB_LEASE=2s"}
	p := startServe(t, bin, dataDir, env...)
	c := &http.Client{Timeout: 30 * time.Second}
	do := func(method, url, token string, body any, into any) int {
		t.Helper()
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(method, url, rd)
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, url, err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		if into != nil && resp.StatusCode/100 == 2 {
			if err := json.Unmarshal(out, into); err != nil {
				t.Fatalf("%s %s: %v\n%s", method, url, err, out)
			}
		}
		if resp.StatusCode/100 != 2 {
			t.Logf("%s %s: %d %s", method, url, resp.StatusCode, out)
		}
		return resp.StatusCode
	}
	login := func(url string) string {
		var tok struct {
			AccessToken string `json:"access_token"`
		}
		if st := do("POST", url+"/api/v1/auth/login", "", map[string]string{"email": "root@example.com", "password": "bootstrap password 1"}, &tok); st != 200 {
			t.Fatalf("login: %d", st)
		}
		return tok.AccessToken
	}
	token := login(p.url)
	if st := do("POST", p.url+"/api/v1/projects", token, map[string]any{"name": "kill"}, nil); st != 201 {
		t.Fatalf("create project: %d", st)
	}
	var sweep struct {
		ID string `json:"id"`
	}
	body := map[string]any{"experiment": "lr", "name": "lr", "objective": map[string]any{"metric": "loss", "direction": "minimize"},
		"space":     map[string]any{"lr": map[string]any{"type": "log_uniform", "low": 1e-3, "high": 1}},
		"algorithm": "bayesian", "max_trials": 12, "parallelism": 3, "seed": 5,
		"trial": map[string]any{"command": []string{train}, "params": map[string]any{"epochs": 10, "sleep": 0.2, "explain": 0},
			"timeout": "2m", "max_retries": 3}}
	if st := do("POST", p.url+"/api/v1/projects/kill/sweeps", token, body, &sweep); st != 201 {
		t.Fatalf("create sweep: %d", st)
	}
	type detail struct {
		State  string `json:"state"`
		Trials []struct {
			Number int               `json:"number"`
			Params map[string]string `json:"params"`
			State  string            `json:"state"`
			JobID  string            `json:"job_id"`
		} `json:"trials"`
	}
	await := func(url, token string, within time.Duration, cond func(detail) bool) detail {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			var d detail
			do("GET", url+"/api/v1/projects/kill/sweeps/"+sweep.ID, token, nil, &d)
			if cond(d) {
				return d
			}
			if time.Now().After(deadline) {
				t.Fatalf("sweep: condition not met within %s: %+v", within, d)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	before := await(p.url, token, 2*time.Minute, func(d detail) bool {
		ended, running := 0, 0
		for _, tr := range d.Trials {
			switch tr.State {
			case "running", "suggested":
				running++
			default:
				ended++
			}
		}
		return ended >= 2 && running > 0
	})
	if err := p.cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	_ = p.cmd.Wait()

	p = startServe(t, bin, dataDir, env...)
	token = login(p.url)
	done := await(p.url, token, 4*time.Minute, func(d detail) bool { return d.State == "completed" || d.State == "stopped" })
	if done.State != "completed" || len(done.Trials) != 12 {
		t.Fatalf("after the kill: %s with %d trials, want completed with 12", done.State, len(done.Trials))
	}
	jobs := map[string]bool{}
	for i, tr := range done.Trials {
		if tr.Number != i+1 || tr.JobID == "" || jobs[tr.JobID] {
			t.Errorf("trial %d: number %d, job %q (missing or shared)", i+1, tr.Number, tr.JobID)
		}
		jobs[tr.JobID] = true
		if tr.State != "completed" && tr.State != "pruned" {
			t.Errorf("trial %d ended %s", tr.Number, tr.State)
		}
	}
	for _, tr := range before.Trials {
		if got := done.Trials[tr.Number-1].Params["lr"]; got != tr.Params["lr"] {
			t.Errorf("trial %d: lr %s after the kill, %s before", tr.Number, got, tr.Params["lr"])
		}
	}
	var list struct {
		Items []struct {
			Name string `json:"name"`
		} `json:"items"`
	}
	do("GET", p.url+"/api/v1/projects/kill/jobs?max_results=100", token, nil, &list)
	n := 0
	for _, j := range list.Items {
		if strings.HasPrefix(j.Name, "lr · trial ") {
			n++
		}
	}
	if n != 12 {
		t.Errorf("%d trial jobs, want 12 (none submitted twice)", n)
	}
	t.Logf("killed with %d trials suggested; after the restart: %s", len(before.Trials), fmt.Sprint(len(done.Trials), " trials"))
}
