package api

import (
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
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
