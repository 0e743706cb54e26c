package platform_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/internal/testenv"
	"github.com/maestro-ml/maestro/platform"
)

// A scrape while PostgreSQL is unreachable still answers 200 with every
// series that does not need it; the projection series, which do, are
// left out rather than failing the scrape.
func TestScrapeWithoutPostgres(t *testing.T) {
	t.Parallel()
	const token = "scrape-5e0b7d1c3a9f2e64"
	cfg := testenv.Config(t)
	cfg.MetricsToken = token
	cfg.Runner = false
	e := testenv.Start(t, cfg)
	get := func() (int, string) { return scrape(t, e, e.URL+"/metrics", "Bearer "+token) }
	// An append whose expected version no longer holds is a conflict the
	// platform's observer counts.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	subject := events.Subject(events.AggUser, uuid.NewString())
	changed := func(to string) events.Append {
		ev, err := events.New(events.Meta{Actor: events.SystemActor}, subject, events.UserRoleChanged,
			0, events.UserRoleChangedData{UserID: "x", From: "viewer", To: to})
		if err != nil {
			t.Fatal(err)
		}
		return events.Append{Event: ev, Expect: 0}
	}
	if _, err := e.P.Store.Append(ctx, changed("member")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.P.Store.Append(ctx, changed("admin")); !errors.Is(err, events.ErrConflict) {
		t.Fatalf("stale append: %v, want a conflict", err)
	}

	status, body := get()
	if status != 200 || !strings.Contains(body, `maestro_projection_lag_events{projection="models",stream="events"}`) ||
		!strings.Contains(body, "\nmaestro_event_append_conflicts_total 1\n") {
		t.Fatalf("scrape with Postgres up: %d, want 200 with the projections' lag and one conflict:\n%.3000s", status, body)
	}

	e.P.Pool.Close()
	status, body = get()
	if status != 200 {
		t.Fatalf("scrape with Postgres down: %d %.500s", status, body)
	}
	for _, want := range []string{"maestro_http_requests_total{", "maestro_event_append_duration_seconds_count", "go_goroutines"} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape with Postgres down lacks %s", want)
		}
	}
	if strings.Contains(body, "maestro_projection_lag_events{") {
		t.Error("scrape with Postgres down reports projection lag it cannot have read")
	}
}

// A worker serves its metrics on MAESTRO_METRICS_ADDR to the scrape token
// only, and refuses to open that listener without one.
func TestWorkerMetricsAddr(t *testing.T) {
	t.Parallel()
	const token = "scrape-0c4f9a2e7d1b5e83"
	cfg := testenv.Config(t)
	cfg.API, cfg.Runner = false, false
	cfg.MetricsAddr = "127.0.0.1:0"

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if p, err := platform.Start(ctx, cfg); err == nil || !strings.Contains(err.Error(), "MAESTRO_METRICS_TOKEN") {
		if p != nil {
			p.Shutdown(ctx)
		}
		t.Fatalf("a metrics listener without a scrape token started (err %v)", err)
	}

	cfg.MetricsToken = token
	e := testenv.Start(t, cfg)
	base := e.P.MetricsURL()
	get := func(path, auth string) (int, string) { return scrape(t, e, base+path, auth) }
	if status, body := get("/metrics", "Bearer "+token); status != 200 ||
		!strings.Contains(body, `maestro_projection_lag_events{projection="models",stream="events"}`) ||
		!strings.Contains(body, "maestro_event_append_duration_seconds_count") {
		t.Fatalf("scrape with the token: %d\n%.2000s", status, body)
	}
	for _, auth := range []string{"", "Bearer wrong", "Bearer " + token + "x", "Basic " + token} {
		if status, _ := get("/metrics", auth); status != http.StatusUnauthorized {
			t.Errorf("scrape with %q: %d, want 401", auth, status)
		}
	}
	if status, _ := get("/debug/pprof/", "Bearer "+token); status != http.StatusNotFound {
		t.Errorf("another path: %d, want 404", status)
	}

	// The API role serves /metrics itself: the listener is refused there.
	apiCfg := testenv.Config(t)
	apiCfg.MetricsAddr, apiCfg.MetricsToken = "127.0.0.1:0", token
	if p, err := platform.Start(ctx, apiCfg); err == nil || !strings.Contains(err.Error(), "API role") {
		if p != nil {
			p.Shutdown(ctx)
		}
		t.Fatalf("MAESTRO_METRICS_ADDR with the API role: %v, want refused", err)
	}
}

// scrape GETs url with the Authorization header auth (none if empty) and
// returns the status and body.
func scrape(t *testing.T, e *testenv.Env, url, auth string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := e.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}
