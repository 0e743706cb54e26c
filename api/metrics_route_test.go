package api_test

import (
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/maestro-ml/maestro/api"
	"github.com/maestro-ml/maestro/internal/testenv"
)

// GET /metrics is denied by default: the scrape token and admins read it,
// every other caller gets 401 (no valid credential) or 403.
func TestMetricsRoute(t *testing.T) {
	t.Parallel()
	const scrape = "scrape-7d1f0c2b9a8e4f6d" // what MAESTRO_METRICS_TOKEN would hold
	cfg := testenv.Config(t)
	cfg.MetricsToken = scrape
	cfg.Runner = false
	e := testenv.Start(t, cfg)
	admin := e.Admin("root@metrics.test").AccessToken
	_, member := e.UserWithRole(admin, "member@metrics.test", "member")
	_, viewer := e.UserWithRole(admin, "viewer@metrics.test", "viewer")
	proj := asJSON[api.ProjectResponse](t, call(t, e, 201, "POST", projectsPath, admin, map[string]any{"name": "Metrics"}))
	mint := func(token string, body map[string]any) string {
		return asJSON[api.APITokenResponse](t, call(t, e, 201, "POST", "/api/v1/tokens", token, body)).Token
	}
	adminAPI := mint(admin, map[string]any{"name": "admin"})
	adminScoped := mint(admin, map[string]any{"name": "admin scoped", "project": proj.Slug})
	adminCapped := mint(admin, map[string]any{"name": "admin capped", "role": "owner"})

	served := func(what string, r testenv.Response) {
		t.Helper()
		if r.Status != http.StatusOK || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/plain") || !strings.Contains(string(r.Body), "# TYPE ") {
			t.Errorf("%s: %d %s %.200s, want the metrics", what, r.Status, r.Header.Get("Content-Type"), r.Body)
		}
	}
	served("scrape token", e.Do("GET", "/metrics", scrape, nil))
	served("admin session", e.Do("GET", "/metrics", admin, nil))
	served("admin's API token", e.Do("GET", "/metrics", adminAPI, nil))
	served("admin's API token as HTTP Basic", e.Do("GET", "/metrics", "", nil,
		"Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("prometheus:"+adminAPI))))

	for _, c := range []struct{ what, auth string }{
		{"no credential", ""},
		{"another token of the same length", "Bearer " + strings.Repeat("x", len(scrape))},
		{"the scrape token's prefix", "Bearer " + scrape[:len(scrape)-1]},
		{"the scrape token and more", "Bearer " + scrape + "0"},
		{"the scrape token in upper case", "Bearer " + strings.ToUpper(scrape)},
		{"the scrape token as HTTP Basic", "Basic " + base64.StdEncoding.EncodeToString([]byte("prometheus:"+scrape))},
		{"the scrape token with another scheme", "Token " + scrape},
	} {
		var hdr []string
		if c.auth != "" {
			hdr = []string{"Authorization", c.auth}
		}
		if _, err := checkProblem(e.Do("GET", "/metrics", "", nil, hdr...), http.StatusUnauthorized, "unauthenticated"); err != nil {
			t.Errorf("%s: %v", c.what, err)
		}
	}
	for _, c := range []struct{ what, token string }{
		{"member", member.AccessToken},
		{"viewer", viewer.AccessToken},
		{"admin's token scoped to a project", adminScoped},
		{"admin's token with a role ceiling", adminCapped},
	} {
		if _, err := checkProblem(e.Do("GET", "/metrics", c.token, nil), http.StatusForbidden, "forbidden"); err != nil {
			t.Errorf("%s: %v", c.what, err)
		}
	}
	// The route is at the root only.
	callProblem(t, e, 404, "not-found", "GET", "/api/v1/metrics", admin, nil)

	// Without a scrape token configured, the string is just a bad credential.
	cfg = testenv.Config(t)
	cfg.Runner = false
	plain := testenv.Start(t, cfg)
	if _, err := checkProblem(plain.Do("GET", "/metrics", scrape, nil), http.StatusUnauthorized, "unauthenticated"); err != nil {
		t.Errorf("scrape token on a platform without one: %v", err)
	}
	served("admin of a platform without a scrape token", plain.Do("GET", "/metrics", plain.Admin("root@plain.test").AccessToken, nil))
}

// A process that serves no metrics (Deps.Metrics nil) answers 404 to the
// callers that may read them, and still 401 to the others; one that does
// answers with its handler.
func TestMetricsRouteWithoutMetrics(t *testing.T) {
	t.Parallel()
	get := func(t *testing.T, srv *httptest.Server, auth string) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequest("GET", srv.URL+"/metrics", nil)
		if err != nil {
			t.Fatal(err)
		}
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if err := testenv.ValidateExchange(req, nil, resp.StatusCode, resp.Header, body); err != nil {
			t.Errorf("OpenAPI conformance: %v", err)
		}
		return resp, body
	}
	none := httptest.NewServer(api.New(api.Deps{MetricsToken: "scrape"}))
	defer none.Close()
	if resp, body := get(t, none, "Bearer scrape"); resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), "serves no metrics") {
		t.Errorf("no metrics, scrape token: %d %s", resp.StatusCode, body)
	}
	if resp, body := get(t, none, ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("no metrics, no credential: %d %s", resp.StatusCode, body)
	}

	calls := 0
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		_, _ = io.WriteString(w, "# HELP up Up.\n# TYPE up gauge\nup 1\n")
	})
	some := httptest.NewServer(api.New(api.Deps{Metrics: h, MetricsToken: "scrape"}))
	defer some.Close()
	if resp, body := get(t, some, "Bearer scrape"); resp.StatusCode != http.StatusOK || string(body) != "# HELP up Up.\n# TYPE up gauge\nup 1\n" || calls != 1 {
		t.Errorf("metrics, scrape token: %d %s (handler called %d times)", resp.StatusCode, body, calls)
	}
	if resp, _ := get(t, some, "Bearer mae_x"); resp.StatusCode != http.StatusUnauthorized || calls != 1 {
		t.Errorf("metrics, a malformed API token: %d (handler called %d times)", resp.StatusCode, calls)
	}
}
