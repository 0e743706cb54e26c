package api_test

import (
	"net/http"
	"slices"
	"strconv"
	"testing"

	"github.com/maestro-ml/maestro/api"
	"github.com/maestro-ml/maestro/internal/testenv"
	"github.com/maestro-ml/maestro/projections"
)

// A min_sequence beyond the stream's last sequence was never returned to
// anyone: 400 at once, instead of parking the request for the whole wait
// and answering 503. The last sequence itself (what the latest command
// answered) is fine.
func TestMinSequenceBeyondStream(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@example.com")
	r := send(t, e, "PATCH", "/api/v1/users/"+e.Register("ada@example.com").ID, admin.AccessToken, map[string]any{"role": "member"})
	wantStatus(t, r, http.StatusOK, "patch user")
	last, err := strconv.ParseUint(r.Header.Get("Maestro-Sequence"), 10, 64)
	if err != nil {
		t.Fatalf("Maestro-Sequence %q: %v", r.Header.Get("Maestro-Sequence"), err)
	}

	for _, tc := range []struct {
		name   string
		query  string
		header string
		status int
	}{
		{"2^63 as query", "?min_sequence=9223372036854775808", "", http.StatusBadRequest},
		{"max uint64 as header", "", "18446744073709551615", http.StatusBadRequest},
		{"last+1", "?min_sequence=" + strconv.FormatUint(last+1, 10), "", http.StatusBadRequest},
		{"last", "?min_sequence=" + strconv.FormatUint(last, 10), "", http.StatusOK},
		{"last as header", "", strconv.FormatUint(last, 10), http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var headers []string
			if tc.header != "" {
				headers = []string{"Maestro-Min-Sequence", tc.header}
			}
			r := send(t, e, "GET", "/api/v1/users"+tc.query, admin.AccessToken, nil, headers...)
			wantStatus(t, r, tc.status, tc.name)
		})
	}

	// The audit trail lingers (no command waits for it), but a read of it
	// with a minimum sequence waits for it: the change is there at once.
	r = send(t, e, "GET", "/api/v1/audit?min_sequence="+strconv.FormatUint(last, 10), admin.AccessToken, nil)
	wantStatus(t, r, http.StatusOK, "audit at the last sequence")
	var page api.AuditPage
	r.JSON(t, &page)
	if !slices.ContainsFunc(page.Items, func(a projections.AuditEntry) bool { return a.Sequence == last }) {
		t.Fatalf("the audit trail read with min_sequence=%d lacks that event: %+v", last, page.Items)
	}
}

// A sequence the stream has but the read models have not applied is a 503
// projection-lagging with Retry-After, as before: here no worker runs, so
// the projections never move.
func TestMinSequenceLagging(t *testing.T) {
	t.Parallel()
	cfg := testenv.Config(t)
	cfg.Worker = false
	e := testenv.Start(t, cfg)
	body := map[string]string{"email": "lag@example.com", "password": testenv.Password, "name": "Lag"}
	wantStatus(t, send(t, e, "POST", "/api/v1/auth/register", "", body, "Prefer", "respond-async"), http.StatusAccepted, "register")
	r := send(t, e, "POST", "/api/v1/auth/login", "", map[string]string{"email": "lag@example.com", "password": testenv.Password}, "Prefer", "respond-async")
	wantStatus(t, r, http.StatusAccepted, "login")
	var tok testenv.Tokens
	r.JSON(t, &tok)
	seq := r.Header.Get("Maestro-Sequence")
	lag := send(t, e, "GET", "/api/v1/auth/me", tok.AccessToken, nil, "Maestro-Min-Sequence", seq)
	wantProblem(t, lag, http.StatusServiceUnavailable, "projection-lagging")
	retryAfter(t, lag)
}

// min_metrics_sequence: a read waits until the metrics projection has
// applied a metric logging answer's Maestro-Metrics-Sequence, and a
// sequence beyond the metrics stream is refused at once.
func TestMinMetricsSequence(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@minmetrics.test").AccessToken
	proj := asJSON[api.ProjectResponse](t, call(t, e, 201, "POST", projectsPath, admin, map[string]any{"name": "Min Metrics"}))
	base := projectsPath + "/" + proj.Slug
	x := asJSON[projections.Experiment](t, call(t, e, 201, "POST", base+"/experiments", admin, map[string]any{"name": "x"}))
	run := asJSON[projections.Run](t, call(t, e, 201, "POST", base+"/experiments/"+x.ID+"/runs", admin, map[string]any{"name": "r"}))
	r := call(t, e, 202, "POST", base+"/runs/"+run.ID+"/metrics", admin, map[string]any{"metrics": []map[string]any{
		{"key": "loss", "value": 0.5, "step": 1, "timestamp": 1}}}, "Prefer", "respond-async")
	seq := r.Header.Get("Maestro-Metrics-Sequence")
	if seq == "" {
		t.Fatalf("no Maestro-Metrics-Sequence: %v", r.Header)
	}
	got := asJSON[projections.Run](t, call(t, e, 200, "GET", base+"/runs/"+run.ID+"?min_metrics_sequence="+seq, admin, nil))
	if m, ok := got.Metrics["loss"]; !ok || m.Value != 0.5 {
		t.Fatalf("run read at min_metrics_sequence %s: %+v", seq, got.Metrics)
	}
	wantProblem(t, e.Do("GET", base+"/runs/"+run.ID+"?min_metrics_sequence=999999", admin, nil), 400, "validation-failed")
	wantProblem(t, e.Do("GET", base+"/runs/"+run.ID, admin, nil, "Maestro-Min-Metrics-Sequence", "x"), 400, "validation-failed")
}
