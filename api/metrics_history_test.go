package api_test

import (
	"slices"
	"testing"

	"github.com/maestro-ml/maestro/api"
	"github.com/maestro-ml/maestro/internal/testenv"
	"github.com/maestro-ml/maestro/projections"
)

// A long series is answered whole (no 100,000-point cap, written as it is
// read, over many flushes), in step, timestamp, logging order across
// requests that overlap; max_points downsamples it.
func TestMetricHistoryStreamed(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@history.test").AccessToken
	ada := regUser(e, admin, "ada@history.test", "member")
	proj := asJSON[api.ProjectResponse](t, call(t, e, 201, "POST", "/api/v1/projects", ada.Token, map[string]any{"name": "History"}))
	base := "/api/v1/projects/" + proj.Slug
	x := asJSON[projections.Experiment](t, call(t, e, 201, "POST", base+"/experiments", ada.Token, map[string]any{"name": "h"}))
	run := asJSON[projections.Run](t, call(t, e, 201, "POST", base+"/experiments/"+x.ID+"/runs", ada.Token, map[string]any{}))
	path := base + "/runs/" + run.ID

	type point struct {
		step, ts int64
		value    float64
	}
	var logged []point
	for req := range 3 {
		var body []map[string]any
		for i := range 8000 {
			p := point{step: int64(i), ts: int64(req), value: float64(req*10_000 + i)}
			if req == 1 {
				p.step = int64(8000 - i) // descending, interleaved with the others
			}
			logged = append(logged, p)
			body = append(body, map[string]any{"key": "train/loss", "value": p.value, "step": p.step, "timestamp": p.ts})
		}
		call(t, e, 200, "POST", path+"/metrics", ada.Token, map[string]any{"metrics": body})
	}
	want := slices.Clone(logged)
	slices.SortStableFunc(want, func(a, b point) int {
		if a.step != b.step {
			return map[bool]int{true: -1, false: 1}[a.step < b.step]
		}
		return map[bool]int{true: -1, false: 1}[a.ts < b.ts]
	})

	r := call(t, e, 200, "GET", path+"/metrics/train%2Floss", ada.Token, nil)
	if ct := r.Header.Get("Content-Type"); ct != "application/json" || len(r.Body) < 3*64<<10 {
		t.Fatalf("answer of %d bytes, %s", len(r.Body), ct)
	}
	h := asJSON[api.MetricHistory](t, r)
	if h.Key != "train/loss" || h.Truncated || len(h.Points) != len(want) {
		t.Fatalf("history of %q: %d points, truncated %v; want %d", h.Key, len(h.Points), h.Truncated, len(want))
	}
	for i, p := range h.Points {
		if p.Key != "train/loss" || p.Step != want[i].step || p.Timestamp != want[i].ts || float64(p.Value) != want[i].value {
			t.Fatalf("point %d = %+v, want %+v", i, p, want[i])
		}
	}
	s := asJSON[api.MetricHistory](t, call(t, e, 200, "GET", path+"/metrics/train%2Floss?max_points=1000", ada.Token, nil))
	if len(s.Points) > 1000 || len(s.Points) < 500 || s.Points[0] != h.Points[0] || s.Points[len(s.Points)-1] != h.Points[len(h.Points)-1] {
		t.Fatalf("sampled: %d points, %+v … %+v", len(s.Points), s.Points[0], s.Points[len(s.Points)-1])
	}
	empty := call(t, e, 200, "GET", path+"/metrics/never", ada.Token, nil)
	if string(empty.Body) != "{\"key\":\"never\",\"points\":[],\"truncated\":false}\n" {
		t.Fatalf("empty history: %s", empty.Body)
	}
	callProblem(t, e, 404, "not-found", "GET", base+"/runs/00000000-0000-4000-8000-000000000000/metrics/x", ada.Token, nil)
}
