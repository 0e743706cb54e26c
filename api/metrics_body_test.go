package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/maestro-ml/maestro/handlers/tracking"
)

// metricsBodySeeds are request bodies around the fast path's edges: what
// it takes, and what it must leave to the strict decoder.
var metricsBodySeeds = []string{
	`{"metrics":[{"key":"loss","value":0.5,"step":1,"timestamp":1700000000000}]}`,
	` { "metrics" : [ { "timestamp" : 2 , "step" : -0 , "value" : "NaN" , "key" : "a/b c" } ,
	  {"value":"Infinity"}, {"value":"-Infinity","key":"x"} ] } `,
	"{\"metrics\":[{\"key\":\"k\",\"value\":1e-7,\"step\":9223372036854775807,\"timestamp\":-9223372036854775808}]}\n",
	`{"metrics":[]}`, `{"metrics":null}`, `{}`, `{"Metrics":[{"key":"k","value":1}]}`, `{"metrics":[{"KEY":"k","value":1}]}`,
	`{"metrics":[{"key":"k","value":1}],"metrics":[]}`, `{"metrics":[{"key":"k","value":1,"value":2}]}`,
	`{"metrics":[{"key":"k"}]}`, `{"metrics":[{"key":"k","value":null}]}`, `{"metrics":[{"key":null,"value":1}]}`,
	`{"metrics":[{"key":"k","value":"1.5"}]}`, `{"metrics":[{"key":"k","value":"nan"}]}`, `{"metrics":[{"key":"k","value":1e400}]}`,
	`{"metrics":[{"key":"k","value":01}]}`, `{"metrics":[{"key":"k","value":1.}]}`, `{"metrics":[{"key":"k","value":-}]}`,
	`{"metrics":[{"key":"k","value":1,"step":1.0}]}`, `{"metrics":[{"key":"k","value":1,"step":1e2}]}`,
	`{"metrics":[{"key":"k","value":1,"step":9223372036854775808}]}`, `{"metrics":[{"key":"k","value":1,"step":"1"}]}`,
	`{"metrics":[{"key":"k\u002f","value":1}]}`, `{"metrics":[{"key":"kä","value":1}]}`, "{\"metrics\":[{\"key\":\"k\xff\",\"value\":1}]}",
	`{"metrics":[{"key":"k","value":1},]}`, `{"metrics":[{"key":"k","value":1}]}x`, `{"metrics":[{"key":"k","value":1}]} {}`,
	`{"metrics":[{"key":"k","value":1,"extra":1}]}`, `{"metrics":[{"key":"k","value":1}],"x":1}`, `{"metrics":[{"key":"k","value":1}`,
	"\ufeff{\"metrics\":[]}", `{"metrics":[{"key":"k","value":Infinity}]}`, `{"metrics":[{"key":"k","value":true}]}`, ``, `[]`,
}

// FuzzMetricsBody: whatever the body, the fast path either leaves it to
// the strict decoder or accepts exactly what the strict decoder accepts,
// with the same points.
func FuzzMetricsBody(f *testing.F) {
	for _, s := range metricsBodySeeds {
		f.Add([]byte(s))
	}
	f.Add(metricsBody(50, 3))
	f.Fuzz(func(t *testing.T, body []byte) {
		fast, ok := parseMetricsBody(body)
		strict, err := decodeMetricsStrict(body)
		if !ok {
			return
		}
		if err != nil {
			t.Fatalf("the fast path accepted %q, which the strict decoder refuses: %v", body, err)
		}
		if !samePoints(fast, strict.Metrics) || len(strict.Params) > 0 || len(strict.Tags) > 0 {
			t.Fatalf("%q: fast path %+v, strict %+v", body, fast, strict)
		}
	})
}

func samePoints(a, b []tracking.Metric) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Key != b[i].Key || a[i].Step != b[i].Step || a[i].Timestamp != b[i].Timestamp ||
			math.Float64bits(float64(a[i].Value)) != math.Float64bits(float64(b[i].Value)) {
			return false
		}
	}
	return true
}

// The shapes clients send take the fast path (else it would only be
// correct, not fast), and the route's decoder gives the strict decoder's
// answer either way.
func TestMetricsBodyFastPath(t *testing.T) {
	for i, body := range [][]byte{
		[]byte(metricsBodySeeds[0]), []byte(metricsBodySeeds[1]), []byte(metricsBodySeeds[2]), []byte(metricsBodySeeds[3]),
		metricsBody(10_000, 10), mustJSON(t, map[string]any{"metrics": []map[string]any{{"key": "train/acc", "value": 0.25, "step": 3, "timestamp": 7}}}),
	} {
		fast, ok := parseMetricsBody(body)
		strict, err := decodeMetricsStrict(body)
		if !ok || err != nil || !samePoints(fast, strict.Metrics) {
			t.Errorf("body %d: fast path ok=%v, strict err=%v, same=%v", i, ok, err, samePoints(fast, strict.Metrics))
		}
	}
	for _, s := range metricsBodySeeds {
		r := httptest.NewRequest("POST", "/x", strings.NewReader(s))
		r.Header.Set("Content-Type", "application/json")
		got, err := decodeMetricsBody(r)
		want, werr := decodeMetricsStrict([]byte(s))
		if fmt.Sprint(err) != fmt.Sprint(werr) || !samePoints(got.Metrics, want.Metrics) {
			t.Errorf("%q: route decoder %v, %v; strict %v, %v", s, got, err, want, werr)
		}
	}
	// The body limit and the media type hold as for every route.
	w := httptest.NewRecorder()
	r := httptest.NewRequest("POST", "/x", bytes.NewReader(metricsBody(1000, 1)))
	r.Header.Set("Content-Type", "application/json")
	r.Body = http.MaxBytesReader(w, r.Body, 1000)
	if _, err := decodeMetricsBody(r); err == nil || !strings.Contains(err.Error(), "too large") {
		t.Errorf("over the limit: %v", err)
	}
	r = httptest.NewRequest("POST", "/x", strings.NewReader(metricsBodySeeds[0]))
	r.Header.Set("Content-Type", "text/plain")
	if _, err := decodeMetricsBody(r); err == nil {
		t.Error("text/plain accepted")
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// metricsBody is a request of n points over keys series, as a client
// logging a training loop sends it.
func metricsBody(n, keys int) []byte {
	b := []byte(`{"metrics":[`)
	for i := range n {
		if i > 0 {
			b = append(b, ',')
		}
		step := i / keys
		b = fmt.Appendf(b, `{"key":"train/metric_%d","value":`, i%keys)
		b = strconv.AppendFloat(b, 1/(1+float64(step)*0.001), 'g', -1, 64)
		b = fmt.Appendf(b, `,"step":%d,"timestamp":%d}`, step, 1_700_000_000_000+step)
	}
	return append(b, "]}"...)
}

// The request decoding of a 10,000-point body: the fast path against the
// strict decoder it replaces on the common shape.
func BenchmarkMetricsBody10000(b *testing.B) {
	body := metricsBody(10_000, 10)
	b.Run("fast", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		for b.Loop() {
			r := httptest.NewRequest("POST", "/x", bytes.NewReader(body))
			r.Header.Set("Content-Type", "application/json")
			if p, err := decodeMetricsBody(r); err != nil || len(p.Metrics) != 10_000 {
				b.Fatal(len(p.Metrics), err)
			}
		}
	})
	b.Run("strict", func(b *testing.B) { // the route's decoding before the fast path
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		for b.Loop() {
			r := httptest.NewRequest("POST", "/x", bytes.NewReader(body))
			r.Header.Set("Content-Type", "application/json")
			var req logMetricsRequest
			if err := decodeJSON(r, &req); err != nil {
				b.Fatal(err)
			}
			points := make([]tracking.Metric, len(req.Metrics))
			for i, m := range req.Metrics {
				points[i] = tracking.Metric{Key: m.Key, Value: *m.Value, Step: m.Step, Timestamp: m.Timestamp}
			}
		}
	})
}
