package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/maestro-ml/maestro/api"
	"github.com/maestro-ml/maestro/internal/testenv"
)

// readyz asks GET /readyz and returns its status and checks: a
// ReadyStatus when 200, the ReadyProblem (problem+json, type unavailable,
// with a Retry-After) when 503.
func readyz(t *testing.T, e *testenv.Env, status int) (string, map[string]api.CheckResult, testenv.Response) {
	t.Helper()
	r := e.Do("GET", "/readyz", "", nil)
	if r.Status != status {
		t.Fatalf("GET /readyz: %d %s, want %d", r.Status, r.Body, status)
	}
	if status == http.StatusOK {
		var st api.ReadyStatus
		r.JSON(t, &st)
		return st.Status, st.Checks, r
	}
	var p api.ReadyProblem
	r.JSON(t, &p)
	if r.Header.Get("Content-Type") != "application/problem+json" || p.Type != api.ProblemTypePrefix+"unavailable" || r.Header.Get("Retry-After") == "" {
		t.Errorf("readyz 503: %s %s (Retry-After %q), want the unavailable problem with a Retry-After",
			r.Header.Get("Content-Type"), r.Body, r.Header.Get("Retry-After"))
	}
	return p.Detail, p.Checks, r
}

// readyzBecomes polls GET /readyz until it answers status (results are
// reused for up to a second, so a change shows within about that), then
// checks the answer as readyz does.
func readyzBecomes(t *testing.T, e *testenv.Env, status int) (string, map[string]api.CheckResult, testenv.Response) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for e.Do("GET", "/readyz", "", nil).Status != status && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	return readyz(t, e, status)
}

// wantChecks fails unless the named checks have these statuses.
func wantChecks(t *testing.T, checks map[string]api.CheckResult, want map[string]string) {
	t.Helper()
	for name, status := range want {
		if got := checks[name].Status; got != status {
			t.Errorf("check %s: %q, want %q (all: %+v)", name, got, status, checks)
		}
	}
}

// /readyz names each dependency; removing the artifact directory makes it
// 503 with the artifact store named, and nothing of the failure's cause.
func TestReadyzArtifactsGone(t *testing.T) {
	t.Parallel()
	cfg := testenv.Config(t)
	cfg.Runner = false
	e := testenv.Start(t, cfg)

	status, checks, _ := readyz(t, e, http.StatusOK)
	if status != "ready" {
		t.Errorf("status %q, want ready", status)
	}
	wantChecks(t, checks, map[string]string{"postgres": "ok", "nats": "ok", "artifacts": "ok", "projections": "ok"})
	if _, ok := checks["projections"].Lag["models"]; !ok {
		t.Errorf("projections check has no lag for models: %+v", checks["projections"])
	}

	if err := os.RemoveAll(filepath.Join(cfg.DataDir, "artifacts")); err != nil {
		t.Fatal(err)
	}
	detail, checks, r := readyzBecomes(t, e, http.StatusServiceUnavailable)
	if detail != "not ready: artifacts unreachable" {
		t.Errorf("detail %q, want the artifact store named", detail)
	}
	wantChecks(t, checks, map[string]string{"postgres": "ok", "nats": "ok", "artifacts": "unreachable", "projections": "ok"})
	if strings.Contains(string(r.Body), cfg.DataDir) || strings.Contains(string(r.Body), "no such file") {
		t.Errorf("readyz tells the cause: %s", r.Body)
	}
	// /healthz is liveness only: still 200.
	call(t, e, 200, "GET", "/healthz", "", nil)
}

// A closed NATS connection: 503 naming nats (and the projections, whose
// lag needs the stream heads), with Postgres still ok.
func TestReadyzNATSDown(t *testing.T) {
	t.Parallel()
	cfg := testenv.Config(t)
	cfg.Runner = false
	e := testenv.Start(t, cfg)
	readyz(t, e, http.StatusOK)
	e.P.Store.Conn().Close()
	detail, checks, _ := readyzBecomes(t, e, http.StatusServiceUnavailable)
	if detail != "not ready: nats unreachable, projections unreachable" {
		t.Errorf("detail %q, want nats and projections named", detail)
	}
	wantChecks(t, checks, map[string]string{"postgres": "ok", "nats": "unreachable", "artifacts": "ok", "projections": "unreachable"})
}

// A probe that never answers is reported as "timeout" within the probe
// bound, and the others still answer. Results are shared for a second,
// and a probe still hanging is not started again: a hung dependency costs
// one goroutine, not one per request.
func TestReadyzProbeTimeout(t *testing.T) {
	t.Parallel()
	block := make(chan struct{})
	defer close(block)
	var fine, stuck atomic.Int32
	srv := httptest.NewServer(api.New(api.Deps{Ready: []api.ReadyCheck{
		{Name: "fine", Probe: func(context.Context) api.CheckResult { fine.Add(1); return api.CheckResult{Status: "ok"} }},
		{Name: "stuck", Probe: func(context.Context) api.CheckResult { stuck.Add(1); <-block; return api.CheckResult{Status: "ok"} }},
	}}))
	defer srv.Close()
	get := func() {
		t.Helper()
		start := time.Now()
		resp, err := http.Get(srv.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var p api.ReadyProblem
		if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("readyz took %s with a stuck probe", took)
		}
		if resp.StatusCode != http.StatusServiceUnavailable || p.Detail != "not ready: stuck timeout" ||
			p.Checks["stuck"].Status != "timeout" || p.Checks["fine"].Status != "ok" {
			t.Errorf("readyz %d %+v, want 503 with stuck: timeout, fine: ok", resp.StatusCode, p)
		}
	}
	get()
	get() // within the second: the same result, no probe
	if fine.Load() != 1 || stuck.Load() != 1 {
		t.Errorf("probes: fine %d, stuck %d; want one each within a second", fine.Load(), stuck.Load())
	}
	time.Sleep(1100 * time.Millisecond) // past the result's age (a second)
	get()
	if fine.Load() != 2 || stuck.Load() != 1 {
		t.Errorf("probes: fine %d, stuck %d; want fine probed again and the hanging one not restarted", fine.Load(), stuck.Load())
	}
}
