package api_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/maestro-ml/maestro/api"
	"github.com/maestro-ml/maestro/internal/testenv"
)

// scrape reads /metrics over HTTP with the scrape token and parses it.
type scrape map[string]*dto.MetricFamily

func scrapeMetrics(t *testing.T, e *testenv.Env, token string) scrape {
	t.Helper()
	r := e.Do("GET", "/metrics", token, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", r.Status, r.Body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(r.Body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// value is the series' value (a histogram's sample count), and whether it
// exists. labels are name, value pairs, and must all match.
func (s scrape) value(name string, labels ...string) (float64, bool) {
	f, ok := s[name]
	if !ok {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

// The metrics move with real requests: a failed login, throttled logins, a
// command and its idempotent replay, an artifact upload and download, a
// request for no route. Each assertion is on the change between two
// scrapes, through a real HTTP client.
func TestMetricsCountRequests(t *testing.T) {
	t.Parallel()
	const token = "scrape-3a9c1e7f5b2d4c68"
	cfg := testenv.Config(t)
	cfg.MetricsToken = token
	cfg.Runner = false
	e := testenv.Start(t, cfg)
	admin := e.Admin("root@prom.test").AccessToken
	victim := e.Register("victim@prom.test")

	before := scrapeMetrics(t, e, token)

	// A failed login, then failures until the account's budget throttles.
	login := "/api/v1/auth/login"
	callProblem(t, e, 401, "invalid-credentials", "POST", login, "", map[string]string{"email": victim.Email, "password": "not the password!"})
	failures, throttled := 1, false
	for i := 0; i < 20 && !throttled; i++ {
		r := e.Do("POST", login, "", map[string]string{"email": victim.Email, "password": "not the password!"})
		switch r.Status {
		case http.StatusUnauthorized:
			failures++
		case http.StatusTooManyRequests:
			throttled = true
		default:
			t.Fatalf("failed login answered %d %s", r.Status, r.Body)
		}
	}
	if !throttled {
		t.Fatal("repeated failed logins were never throttled")
	}

	// A command, and the same command retried with its Idempotency-Key.
	key := []string{"Idempotency-Key", "prom-project-1"}
	proj := asJSON[api.ProjectResponse](t, call(t, e, 201, "POST", projectsPath, admin, map[string]any{"name": "Prom"}, key...))
	if r := call(t, e, 201, "POST", projectsPath, admin, map[string]any{"name": "Prom"}, key...); r.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("the retry was not replayed: %v", r.Header)
	}
	// A refused command: the name is taken.
	callProblem(t, e, 409, "project-exists", "POST", projectsPath, admin, map[string]any{"name": "Prom"})

	// An artifact up and down.
	pp := projectsPath + "/" + proj.Slug
	call(t, e, 201, "POST", pp+"/models", admin, map[string]any{"name": "weights"})
	call(t, e, 201, "POST", pp+"/models/weights/versions", admin, map[string]any{})
	art := pp + "/models/weights/versions/1/artifacts/model.bin"
	data := randomBytes(7, 100_000)
	call(t, e, 201, "PUT", art, admin, data, octets()...)
	if got := call(t, e, 200, "GET", art, admin, nil); !bytes.Equal(got.Body, data) {
		t.Fatalf("downloaded %d bytes, want the %d uploaded", len(got.Body), len(data))
	}
	// A ranged download sends only the range.
	call(t, e, 206, "GET", art, admin, nil, "Range", "bytes=0-999")

	// No such route.
	callProblem(t, e, 404, "not-found", "GET", "/no/such/route/"+proj.ID, "", nil)

	after := scrapeMetrics(t, e, token)
	delta := func(name string, labels ...string) float64 {
		t.Helper()
		a, ok := after.value(name, labels...)
		if !ok {
			t.Errorf("no series %s%v after the requests", name, labels)
		}
		b, _ := before.value(name, labels...)
		return a - b
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"maestro_login_failures_total", nil, float64(failures)},
		{"maestro_throttled_total", []string{"scope", "login"}, 1},
		{"maestro_commands_total", []string{"command", "POST " + login, "outcome", "unauthenticated"}, float64(failures)},
		{"maestro_commands_total", []string{"command", "POST " + login, "outcome", "throttled"}, 1},
		// The replay is not a second run of the command.
		{"maestro_commands_total", []string{"command", "POST /api/v1/projects", "outcome", "ok"}, 1},
		{"maestro_commands_total", []string{"command", "POST /api/v1/projects", "outcome", "conflict"}, 1},
		{"maestro_idempotency_replays_total", nil, 1},
		{"maestro_http_requests_total", []string{"route", "/api/v1/projects", "method", "POST", "code", "201"}, 2},
		{"maestro_http_requests_total", []string{"route", "/api/v1/projects", "method", "POST", "code", "409"}, 1},
		{"maestro_http_request_duration_seconds", []string{"route", "/api/v1/projects", "method", "POST"}, 3},
		{"maestro_http_requests_total", []string{"route", "unmatched", "method", "GET", "code", "404"}, 1},
		{"maestro_artifact_bytes_total", []string{"direction", "in"}, float64(len(data))},
		{"maestro_artifact_bytes_total", []string{"direction", "out"}, float64(len(data) + 1000)},
	} {
		if got := delta(c.name, c.labels...); got != c.want {
			t.Errorf("%s%v went up by %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if d := delta("maestro_event_append_duration_seconds"); d < 5 {
		t.Errorf("maestro_event_append_duration_seconds counted %v appends, want at least the 5 commands'", d)
	}
	for _, name := range []string{"maestro_event_append_conflicts_total", "maestro_command_retries_total"} {
		if _, ok := after.value(name); !ok {
			t.Errorf("no series %s", name)
		}
	}
	if _, ok := after.value("maestro_projection_lag_events", "projection", "models", "stream", "events"); !ok {
		t.Error("no maestro_projection_lag_events for models")
	}
	if _, ok := after.value("maestro_projection_quarantined_events", "projection", "models"); !ok {
		t.Error("no maestro_projection_quarantined_events for models")
	}

	// No label carries an id: the project's, the users', or a raw path.
	for name, f := range after {
		if !strings.HasPrefix(name, "maestro_") {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				v := lp.GetValue()
				if strings.Contains(v, proj.ID) || strings.Contains(v, proj.Slug+"/") || strings.Contains(v, victim.ID) || strings.Contains(v, "/no/such") {
					t.Errorf("%s has label %s=%q, which names an instance", name, lp.GetName(), v)
				}
			}
		}
	}
}
