package projections

import (
	"math"
	"testing"

	"github.com/google/uuid"

	"github.com/maestro-ml/maestro/events"
)

// The metrics projection follows MAESTRO_METRICS (its own sequences): full
// history, the latest point per key by step, timestamp, value (NaN above
// every number), and a rebuild gives the same tables.
func TestMetricsProjection(t *testing.T) {
	t.Parallel()
	f, ms, run, log := metricsFixture(t)
	ctx := testCtx(t)
	log(map[string][]events.MetricPoint{"loss": {{Value: 1, Step: 1, Timestamp: 1}, {Value: 0.5, Step: 2, Timestamp: 2}},
		"acc": {{Value: 0.1, Step: 1, Timestamp: 1}}})
	last := log(map[string][]events.MetricPoint{"loss": {{Value: events.MetricValue(math.NaN()), Step: 2, Timestamp: 2},
		{Value: 0.2, Step: 1, Timestamp: 5}}, "acc": {{Value: events.MetricValue(math.Inf(-1)), Step: 0, Timestamp: 9}}})
	start(t, NewRunner(f.pool, ms, Metrics{}, testRunnerConfig()))
	waitCaughtUp(t, f.pool, last, "metrics")

	latest := func(key string) (int64, float64) {
		t.Helper()
		var step int64
		var v float64
		if err := f.pool.QueryRow(ctx, "SELECT step, value FROM latest_metrics WHERE run_id = $1 AND key = $2", run, key).Scan(&step, &v); err != nil {
			t.Fatal(err)
		}
		return step, v
	}
	if step, v := latest("loss"); step != 2 || !math.IsNaN(v) {
		t.Fatalf("latest loss = step %d, %v; want NaN at step 2 (NaN ranks above 0.5 at the same step and time)", step, v)
	}
	if step, v := latest("acc"); step != 1 || v != 0.1 {
		t.Fatalf("latest acc = step %d, %v; want 0.1 at step 1 (a lower step never wins)", step, v)
	}
	q := NewQueries(f.pool)
	hist, truncated, err := q.MetricHistory(ctx, run, "loss")
	if err != nil || truncated || len(hist) != 4 || hist[0].Step != 1 || hist[0].Value != 1 || hist[1].Value != 0.2 {
		t.Fatalf("history = %+v, %v, %v", hist, truncated, err)
	}

	dumpMetrics := func() map[string][]string {
		return map[string][]string{
			"metrics":        dumpOrdered(t, f.pool, "metrics", "run_id, key, seq, step, ts, value"),
			"latest_metrics": dumpOrdered(t, f.pool, "latest_metrics", "run_id, key"),
		}
	}
	before := dumpMetrics()
	if err := Reset(ctx, f.pool); err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, f.pool, last, "metrics")
	sameDump(t, dumpMetrics(), before)
}

// Downsampling keeps each bucket's first, last, lowest and highest point,
// in series order, and never more than max_points.
func TestMetricHistorySampled(t *testing.T) {
	t.Parallel()
	f, ms, run, log := metricsFixture(t)
	ctx := testCtx(t)
	var points []events.MetricPoint
	for i := range 1000 {
		v := math.Sin(float64(i) / 50)
		if i == 500 {
			v = 42 // a spike a chart must not lose
		}
		points = append(points, events.MetricPoint{Value: events.MetricValue(v), Step: int64(i), Timestamp: int64(i)})
	}
	last := log(map[string][]events.MetricPoint{"wave": points})
	start(t, NewRunner(f.pool, ms, Metrics{}, testRunnerConfig()))
	waitCaughtUp(t, f.pool, last, "metrics")
	q := NewQueries(f.pool)

	got, err := q.MetricHistorySampled(ctx, run, "wave", 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) > 100 || len(got) < 50 {
		t.Fatalf("%d points for max_points 100", len(got))
	}
	if got[0].Step != 0 || got[len(got)-1].Step != 999 {
		t.Fatalf("first and last of the series lost: %d … %d", got[0].Step, got[len(got)-1].Step)
	}
	spike := false
	for i, p := range got {
		if i > 0 && p.Step <= got[i-1].Step {
			t.Fatalf("out of order at %d: %d after %d", i, p.Step, got[i-1].Step)
		}
		spike = spike || p.Value == 42
	}
	if !spike {
		t.Fatal("the spike was lost")
	}
	whole, err := q.MetricHistorySampled(ctx, run, "wave", 5000)
	if err != nil || len(whole) != 1000 {
		t.Fatalf("a series under max_points came back with %d points, %v", len(whole), err)
	}
}

// metricsFixture is a fixture with MAESTRO_METRICS, a run id, and log,
// which appends one request's points for that run and returns its sequence.
func metricsFixture(t *testing.T) (*fixture, *events.Store, string, func(map[string][]events.MetricPoint) uint64) {
	t.Helper()
	f := newFixture(t)
	ctx := testCtx(t)
	ms, err := events.OpenMetricsStore(ctx, f.store.Conn(), events.MetricsConfig{})
	if err != nil {
		t.Fatal(err)
	}
	run := uuid.NewString()
	log := func(points map[string][]events.MetricPoint) uint64 {
		t.Helper()
		e, err := events.New(events.Meta{Actor: events.SystemActor, Time: base}, events.MetricsSubject(run), events.MetricsLogged, 0,
			events.MetricsLoggedData{RunID: run, Metrics: points})
		if err != nil {
			t.Fatal(err)
		}
		seq, err := ms.Append(ctx, events.Append{Event: e, Expect: events.Any})
		if err != nil {
			t.Fatal(err)
		}
		return seq
	}
	return f, ms, run, log
}
