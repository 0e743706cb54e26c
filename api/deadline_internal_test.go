package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// Every request's context carries a deadline: the default for ordinary
// routes, the route's own for artifact transfers; a handler that outlives
// it answers a retryable 503, not a 500.
func TestRequestDeadline(t *testing.T) {
	s := New(Deps{RequestTimeout: 30 * time.Second})
	deadlineOf := func(rt Route) time.Duration {
		t.Helper()
		var left time.Duration
		rt.Public = true
		rt.handle = func(w http.ResponseWriter, r *http.Request) error {
			d, ok := r.Context().Deadline()
			if !ok {
				t.Fatal("request context has no deadline")
			}
			left = time.Until(d)
			w.WriteHeader(http.StatusNoContent)
			return nil
		}
		s.endpoint(rt).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/x", nil))
		return left
	}
	if left := deadlineOf(Route{}); left <= 25*time.Second || left > 30*time.Second {
		t.Errorf("ordinary route: deadline in %v, want about 30s", left)
	}
	if left := deadlineOf(Route{Timeout: artifactTransferTimeout}); left <= artifactTransferTimeout-time.Minute || left > artifactTransferTimeout {
		t.Errorf("transfer route: deadline in %v, want about %v", left, artifactTransferTimeout)
	}

	// The artifact transfer routes, and only they, carry the long deadline
	// (and the job log, which a client may follow for a day).
	for _, rt := range s.Routes() {
		if strings.HasSuffix(rt.Pattern, "/jobs/{job}/logs") {
			if rt.Timeout != logFollowTimeout {
				t.Errorf("%s %s: Timeout %v, want %v", rt.Method, rt.Pattern, rt.Timeout, logFollowTimeout)
			}
			continue
		}
		if rt.Pattern == "/api/v1/audit/export" { // a whole trail of JSON Lines
			if rt.Timeout != auditExportTimeout {
				t.Errorf("%s %s: Timeout %v, want %v", rt.Method, rt.Pattern, rt.Timeout, auditExportTimeout)
			}
			continue
		}
		long := strings.HasSuffix(rt.Pattern, "/*") // the artifact transfers, of every family
		if long != (rt.Timeout == artifactTransferTimeout) || (!long && rt.Timeout != 0) {
			t.Errorf("%s %s: Timeout %v", rt.Method, rt.Pattern, rt.Timeout)
		}
	}

	slow := New(Deps{RequestTimeout: 50 * time.Millisecond})
	h := slow.endpoint(Route{Public: true, handle: func(w http.ResponseWriter, r *http.Request) error {
		<-r.Context().Done() // e.g. a pool Acquire while every connection is busy
		return r.Context().Err()
	}})
	rec := httptest.NewRecorder()
	done := make(chan struct{})
	go func() { h.ServeHTTP(rec, httptest.NewRequest("GET", "/x", nil)); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("a blocked handler was not cut off by the request deadline")
	}
	var p struct {
		Type string `json:"type"`
	}
	_ = json.Unmarshal(rec.Body.Bytes(), &p)
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" || p.Type != ProblemTypePrefix+"unavailable" {
		t.Fatalf("deadline exceeded: %d %s, want 503 with Retry-After", rec.Code, rec.Body)
	}
}
