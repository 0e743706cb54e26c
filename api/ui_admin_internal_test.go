package api

import (
	"context"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/projections"
)

// requestFamily is maestro_http_requests_total with the given counts by
// route, method and code.
func requestFamily(counts map[[3]string]float64) []*dtoFamily {
	mf := &dto.MetricFamily{Name: ptr("maestro_http_requests_total"), Type: dto.MetricType_COUNTER.Enum()}
	for k, v := range counts {
		mf.Metric = append(mf.Metric, &dto.Metric{
			Label:   []*dto.LabelPair{{Name: ptr("route"), Value: ptr(k[0])}, {Name: ptr("method"), Value: ptr(k[1])}, {Name: ptr("code"), Value: ptr(k[2])}},
			Counter: &dto.Counter{Value: ptr(v)},
		})
	}
	return []*dtoFamily{mf}
}

// The dashboard's request counts: since the process started at the first
// view, then against the oldest sample while none is a minute old, then
// against the newest sample at least a minute old; codes summed, 5xx
// counted apart, routes without requests in the window left out.
func TestUIAdminRequestRatesWindow(t *testing.T) {
	s := &Server{}
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	get, post := [3]string{"/api/v1/projects", "GET", "200"}, [3]string{"/api/v1/projects", "POST", "201"}
	fail := [3]string{"/api/v1/projects", "POST", "503"}

	first := s.requestRates(requestFamily(map[[3]string]float64{get: 10, post: 2}), t0)
	if !first.Available || first.Since || len(first.Rows) != 2 || first.Rows[0].Route != "GET /api/v1/projects" || first.Rows[0].Requests != 10 {
		t.Fatalf("first view %+v", first)
	}
	second := s.requestRates(requestFamily(map[[3]string]float64{get: 40, post: 2, fail: 1}), t0.Add(30*time.Second))
	if !second.Since || second.Window != 30*time.Second || len(second.Rows) != 2 {
		t.Fatalf("second view %+v", second)
	}
	if r := second.Rows[0]; r.Route != "GET /api/v1/projects" || r.Requests != 30 || r.PerMin != "60.0" || r.Errors != 0 {
		t.Errorf("GET row %+v", r)
	}
	if r := second.Rows[1]; r.Route != "POST /api/v1/projects" || r.Requests != 1 || r.Errors != 1 {
		t.Errorf("POST row %+v", r)
	}
	third := s.requestRates(requestFamily(map[[3]string]float64{get: 100, post: 2, fail: 1}), t0.Add(90*time.Second))
	if third.Window != time.Minute || len(third.Rows) != 1 || third.Rows[0].Requests != 60 || third.Rows[0].PerMin != "60.0" {
		t.Fatalf("third view %+v", third)
	}
	// A sample within a few seconds of the last is not kept; without the
	// counter nothing is claimed.
	if n := len(s.admin.samples); n != 3 {
		t.Errorf("%d samples kept, want 3", n)
	}
	s.requestRates(requestFamily(nil), t0.Add(91*time.Second))
	if n := len(s.admin.samples); n != 3 {
		t.Errorf("%d samples after a view 1 s later, want 3", n)
	}
	if r := s.requestRates(nil, t0.Add(200*time.Second)); r.Available {
		t.Errorf("no counter, yet %+v", r)
	}
}

// Verify now runs one verification at a time in the background: a second
// request while one runs starts none, and the outcome is kept for the
// audit page; a non-admin starts nothing.
func TestUIAdminVerifyOneAtATime(t *testing.T) {
	release := make(chan struct{})
	var runs atomic.Int32
	s := &Server{deps: Deps{VerifyAudit: func(ctx context.Context) (*projections.AuditVerifyResult, error) {
		runs.Add(1)
		<-release
		return &projections.AuditVerifyResult{Through: 42, Entries: 41, Events: 42, Checkpoints: 3}, nil
	}}}
	post := func(who authz.Principal) (int, string, error) {
		r := httptest.NewRequest("POST", "/admin/audit/verify", nil)
		r = r.WithContext(context.WithValue(r.Context(), ctxPrincipal, who))
		w := httptest.NewRecorder()
		err := s.uiAdminVerifyAudit(w, r)
		return w.Code, w.Header().Get("Location"), err
	}
	admin := authz.Principal{UserID: "a", SessionID: "s", Email: "root@example.com", Role: authz.RoleAdmin}
	if _, _, err := post(authz.Principal{UserID: "m", SessionID: "s2", Role: authz.RoleMember}); err == nil {
		t.Fatal("a member started a verification")
	}
	if code, loc, err := post(admin); err != nil || code != 303 || loc != "/admin/audit?done=verify-started" {
		t.Fatalf("first: %d %q %v", code, loc, err)
	}
	if code, loc, err := post(admin); err != nil || code != 303 || loc != "/admin/audit?done=verify-running" {
		t.Fatalf("second while running: %d %q %v", code, loc, err)
	}
	close(release)
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.admin.mu.Lock()
		out, running := s.admin.verified, s.admin.verifying
		s.admin.mu.Unlock()
		if out != nil && !running {
			if !out.OK || out.Through != 42 || out.Checkpoints != 3 || out.By != "root@example.com" || out.Finished.Before(out.Started) {
				t.Errorf("outcome %+v", out)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the verification never finished")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := runs.Load(); n != 1 {
		t.Errorf("%d verifications ran, want 1", n)
	}
}
