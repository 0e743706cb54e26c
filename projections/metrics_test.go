package projections

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/google/uuid"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/internal/testpg"
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

	// A rebuild may cut the series into other chunks (batches differ);
	// the series read back are the same.
	dumpMetrics := func() map[string][]string {
		dump := map[string][]string{"latest_metrics": dumpOrdered(t, f.pool, "latest_metrics", "run_id, key")}
		for _, key := range []string{"loss", "acc"} {
			if err := q.EachMetricPoint(ctx, run, key, func(p MetricPoint) error {
				dump[key] = append(dump[key], fmt.Sprintf("%d %d %v", p.Step, p.Timestamp, p.Value))
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		}
		return dump
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

// The series read back from chunks is the points in (step, timestamp)
// order, ties in the order logged, however they were logged: in order,
// out of order, overlapping earlier requests, with duplicates, in requests
// the runner merges into one chunk or not. Pages of any size cut it
// anywhere (inside a chunk, inside a run of equal positions) and add up to
// it; a series too overlapping to merge in memory is sorted by Postgres
// from where the merge got to, to the same result.
func TestMetricSeriesOrder(t *testing.T) {
	t.Parallel()
	f, ms, run, log := metricsFixture(t)
	ctx := testCtx(t)
	rng := rand.New(rand.NewPCG(8, 8))
	var logged []events.MetricPoint // in the order logged
	var last uint64
	for req := range 40 {
		if req == 20 {
			// The first half may merge into few chunks (one batch); the
			// rest is applied request by request, a chunk each.
			start(t, NewRunner(f.pool, ms, Metrics{}, testRunnerConfig()))
		}
		if req > 20 {
			waitCaughtUp(t, f.pool, last, "metrics")
		}
		var points []events.MetricPoint
		n := 1 + rng.IntN(60)
		if req%10 == 0 {
			n = 1500 // a chunk of its own
		}
		for i := range n {
			var p events.MetricPoint
			switch req % 4 {
			case 0: // in order, after everything before
				p = events.MetricPoint{Step: int64(req*2000 + i), Timestamp: int64(i)}
			case 1: // anywhere, few distinct positions: ties; negative steps
				p = events.MetricPoint{Step: rng.Int64N(20) - 10, Timestamp: rng.Int64N(3)}
			case 2: // descending
				p = events.MetricPoint{Step: int64(100_000 - i), Timestamp: 5}
			default:
				p = events.MetricPoint{Step: rng.Int64N(100_000), Timestamp: rng.Int64N(1000)}
			}
			p.Value = events.MetricValue(float64(req*10_000 + i)) // identifies the point
			points = append(points, p)
		}
		logged = append(logged, points...)
		last = log(map[string][]events.MetricPoint{"s": points, "other": points[:1]})
	}
	want := slices.Clone(logged)
	slices.SortStableFunc(want, func(a, b events.MetricPoint) int {
		if c := cmpInt(a.Step, b.Step); c != 0 {
			return c
		}
		return cmpInt(a.Timestamp, b.Timestamp)
	})
	waitCaughtUp(t, f.pool, last, "metrics")
	q := NewQueries(f.pool)

	same := func(what string, got []MetricPoint) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %d points, want %d", what, len(got), len(want))
		}
		for i := range want {
			if got[i].Step != want[i].Step || got[i].Timestamp != want[i].Timestamp || got[i].Value != want[i].Value || got[i].Key != "s" {
				t.Fatalf("%s: point %d = %+v, want %+v", what, i, got[i], want[i])
			}
		}
	}
	var all []MetricPoint
	if err := q.EachMetricPoint(ctx, run, "s", func(p MetricPoint) error { all = append(all, p); return nil }); err != nil {
		t.Fatal(err)
	}
	same("EachMetricPoint", all)
	hist, truncated, err := q.MetricHistory(ctx, run, "s")
	if err != nil || truncated {
		t.Fatal(truncated, err)
	}
	same("MetricHistory", hist)
	for _, size := range []int{1, 7, 1000, MaxHistory} {
		var paged []MetricPoint
		token := ""
		for i := range len(want) + 1 {
			n := size
			if i >= 150 && size < 100 {
				n = 997 // the rest of the series in bigger pages: pages of any size resume a token
			}
			page, err := q.MetricHistoryPage(ctx, run, "s", token, n)
			if err != nil {
				t.Fatal(err)
			}
			paged = append(paged, page.Items...)
			if token = page.NextPageToken; token == "" {
				break
			}
		}
		same(fmt.Sprintf("pages of %d", size), paged)
	}
	if _, err := q.MetricHistoryPage(ctx, run, "other", mustPageToken(t, q, run, "s"), 10); err != ErrBadPageToken {
		t.Fatalf("another series' token: %v", err)
	}
	for _, maxOpen := range []int{1, 50, 2000} {
		var sorted []MetricPoint
		if err := q.readSeries(ctx, func(tx pgx.Tx) error {
			return eachPointMerged(ctx, tx, run, "s", beforeSeries, maxOpen, func(p MetricPoint, _ seriesPos) (bool, error) {
				sorted = append(sorted, p)
				return true, nil
			})
		}); err != nil {
			t.Fatal(err)
		}
		same(fmt.Sprintf("merge bounded to %d open points", maxOpen), sorted)
	}
	var chunks int
	if err := f.pool.QueryRow(ctx, "SELECT count(*) FROM metric_chunks WHERE run_id = $1 AND key = 's'", run).Scan(&chunks); err != nil || chunks < 20 {
		t.Fatalf("%d chunks for 40 requests, %v", chunks, err)
	}
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func mustPageToken(t *testing.T, q *Queries, run, key string) string {
	t.Helper()
	page, err := q.MetricHistoryPage(context.Background(), run, key, "", 1)
	if err != nil || page.NextPageToken == "" {
		t.Fatalf("first page of %s: %+v, %v", key, page, err)
	}
	return page.NextPageToken
}

// Downsampling in one pass keeps what the SQL window functions kept: per
// bucket the first, last, lowest and highest point (the first of equal
// values; NaN above every number), in series order.
func TestMetricHistorySampledReference(t *testing.T) {
	t.Parallel()
	f, ms, run, log := metricsFixture(t)
	ctx := testCtx(t)
	rng := rand.New(rand.NewPCG(4, 4))
	var points []events.MetricPoint
	for i := range 3000 {
		v := float64(rng.IntN(7)) // many equal values
		switch rng.IntN(50) {
		case 0:
			v = math.NaN()
		case 1:
			v = math.Inf(-1)
		case 2:
			v = math.Copysign(0, -1)
		}
		points = append(points, events.MetricPoint{Value: events.MetricValue(v), Step: int64(i), Timestamp: int64(i)})
	}
	last := log(map[string][]events.MetricPoint{"r": points})
	start(t, NewRunner(f.pool, ms, Metrics{}, testRunnerConfig()))
	waitCaughtUp(t, f.pool, last, "metrics")
	q := NewQueries(f.pool)
	for _, maxPoints := range []int{4, 10, 100, 1001, 2999, 3000} {
		got, err := q.MetricHistorySampled(ctx, run, "r", maxPoints)
		if err != nil {
			t.Fatal(err)
		}
		// The reference: the SQL this replaced, by brute force.
		n, buckets := len(points), max(maxPoints/4, 1)
		var want []int
		if n <= maxPoints {
			for i := range n {
				want = append(want, i)
			}
		}
		for b := 0; n > maxPoints && b < buckets; b++ {
			var idx []int
			for i := range n {
				if i*buckets/n == b {
					idx = append(idx, i)
				}
			}
			low, high := idx[0], idx[0]
			for _, i := range idx {
				if events.CompareFloat8(float64(points[i].Value), float64(points[low].Value)) < 0 {
					low = i
				}
				if events.CompareFloat8(float64(points[i].Value), float64(points[high].Value)) > 0 {
					high = i
				}
			}
			keep := []int{idx[0], idx[len(idx)-1], low, high}
			slices.Sort(keep)
			want = append(want, slices.Compact(keep)...)
		}
		if len(got) != len(want) || len(got) > maxPoints {
			t.Fatalf("max_points %d: %d points, want %d", maxPoints, len(got), len(want))
		}
		for j, i := range want {
			if got[j].Step != points[i].Step || math.Float64bits(float64(got[j].Value)) != math.Float64bits(float64(points[i].Value)) {
				t.Fatalf("max_points %d: point %d = %+v, want %+v", maxPoints, j, got[j], points[i])
			}
		}
	}
}

// Metric data the projection cannot use (a point of two numbers, a run id
// that is no uuid, values around good ones in the same batch) is
// quarantined, not retried for ever, and the good requests around it are
// applied.
func TestMetricsPoisonQuarantined(t *testing.T) {
	t.Parallel()
	f, ms, run, log := metricsFixture(t)
	ctx := testCtx(t)
	good1 := log(map[string][]events.MetricPoint{"k": {{Value: 1, Step: 1, Timestamp: 1}}})
	raw := func(data string) uint64 {
		e, err := events.New(events.Meta{Actor: events.SystemActor, Time: base}, events.MetricsSubject(run), events.MetricsLogged, 0, json.RawMessage(data))
		if err != nil {
			t.Fatal(err)
		}
		seq, err := ms.Append(ctx, events.Append{Event: e, Expect: events.Any})
		if err != nil {
			t.Fatal(err)
		}
		return seq
	}
	bad1 := raw(`{"run_id":"` + run + `","metrics":{"k":[[1,2]]}}`)
	bad2 := raw(`{"run_id":"not-a-uuid","metrics":{"k":[[1,2,3]]}}`)
	last := log(map[string][]events.MetricPoint{"k": {{Value: 2, Step: 2, Timestamp: 2}}})
	start(t, NewRunner(f.pool, ms, Metrics{}, testRunnerConfig()))
	waitCaughtUp(t, f.pool, last, "metrics")
	rows, err := f.pool.Query(ctx, "SELECT seq FROM projection_quarantine WHERE projection = 'metrics' ORDER BY seq")
	if err != nil {
		t.Fatal(err)
	}
	seqs, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil || !slices.Equal(seqs, []int64{int64(bad1), int64(bad2)}) {
		t.Fatalf("quarantined %v (%v), want %d and %d", seqs, err, bad1, bad2)
	}
	hist, _, err := NewQueries(f.pool).MetricHistory(ctx, run, "k")
	if err != nil || len(hist) != 2 || hist[0].Value != 1 || hist[1].Value != 2 {
		t.Fatalf("history around the poison (%d, %d): %+v, %v", good1, last, hist, err)
	}
}

// Two spellings of one run id in one batch (Postgres reads both as the
// same uuid) are one series: the latest_metrics upsert must not meet its
// row twice (SQLSTATE 21000, which is not a data error: the runner would
// retry the batch for ever), and a run id that is no uuid is undecodable.
func TestMetricsRunIDSpellings(t *testing.T) {
	t.Parallel()
	f, _, run, _ := metricsFixture(t)
	ctx := testCtx(t)
	env := func(seq uint64, runID string, p events.MetricPoint) events.Envelope {
		e, err := events.New(events.Meta{Actor: events.SystemActor, Time: base}, events.MetricsSubject(run), events.MetricsLogged, 0,
			events.MetricsLoggedData{RunID: runID, Metrics: map[string][]events.MetricPoint{"k": {p}}})
		if err != nil {
			t.Fatal(err)
		}
		e.Sequence = seq
		return e
	}
	b := &Batch{}
	if err := (Metrics{}).Queue(b, []events.Envelope{
		env(1, run, events.MetricPoint{Value: 1, Step: 1, Timestamp: 1}),
		env(2, strings.ToUpper(run), events.MetricPoint{Value: 2, Step: 2, Timestamp: 2}),
	}); err != nil {
		t.Fatal(err)
	}
	if err := f.pool.SendBatch(ctx, &b.Batch).Close(); err != nil {
		t.Fatalf("one batch with two spellings of a run id: %v", err)
	}
	var step int64
	var v float64
	if err := f.pool.QueryRow(ctx, "SELECT step, value FROM latest_metrics WHERE run_id = $1 AND key = 'k'", run).Scan(&step, &v); err != nil || step != 2 || v != 2 {
		t.Fatalf("latest = step %d, %v (%v); want 2 at step 2", step, v, err)
	}
	hist, _, err := NewQueries(f.pool).MetricHistory(ctx, run, "k")
	if err != nil || len(hist) != 2 {
		t.Fatalf("history: %+v, %v", hist, err)
	}
	if err := (Metrics{}).Queue(&Batch{}, []events.Envelope{env(3, "not-a-uuid", events.MetricPoint{})}); !errors.Is(err, ErrUndecodable) {
		t.Fatalf("a run id that is no uuid: %v, want ErrUndecodable", err)
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

// BenchmarkMetricsQueue10000 is the projection's CPU for one 10,000-point
// request over ten series: decoding it and building the chunk rows and the
// latest-point upsert (what the runner then sends in one round trip).
func BenchmarkMetricsQueue10000(b *testing.B) {
	byKey := map[string][]events.MetricPoint{}
	for i := range 10_000 {
		key := fmt.Sprint("train/metric_", i%10)
		byKey[key] = append(byKey[key], events.MetricPoint{Value: events.MetricValue(1 / (1 + float64(i)*0.001)), Step: int64(i / 10), Timestamp: 1_700_000_000_000 + int64(i/10)})
	}
	e, err := events.New(events.Meta{Actor: events.SystemActor, Time: base}, events.MetricsSubject("11111111-1111-4111-8111-111111111111"), events.MetricsLogged, 0,
		events.MetricsLoggedData{RunID: "11111111-1111-4111-8111-111111111111", Metrics: byKey})
	if err != nil {
		b.Fatal(err)
	}
	e.Sequence = 1
	b.SetBytes(int64(len(e.Data)))
	b.ReportAllocs()
	for b.Loop() {
		var batch Batch
		if err := (Metrics{}).Queue(&batch, []events.Envelope{e}); err != nil || batch.Len() != 11 {
			b.Fatal(batch.Len(), err)
		}
	}
}

// BenchmarkMetricHistory1M reads a series of 1,000,000 points (a hundred
// 10,000-point requests): whole, and downsampled to 1,000 points.
func BenchmarkMetricHistory1M(b *testing.B) {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, testpg.Database(b))
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	if err := Migrate(ctx, pool); err != nil {
		b.Fatal(err)
	}
	run := "22222222-2222-4222-8222-222222222222"
	for req := range 100 {
		points := make([]events.MetricPoint, 10_000)
		for i := range points {
			step := int64(req*10_000 + i)
			points[i] = events.MetricPoint{Value: events.MetricValue(math.Sin(float64(step) / 1000)), Step: step, Timestamp: 1_700_000_000_000 + step}
		}
		e, err := events.New(events.Meta{Actor: events.SystemActor, Time: base}, events.MetricsSubject(run), events.MetricsLogged, 0,
			events.MetricsLoggedData{RunID: run, Metrics: map[string][]events.MetricPoint{"loss": points}})
		if err != nil {
			b.Fatal(err)
		}
		e.Sequence = uint64(req + 1)
		var batch Batch
		if err := (Metrics{}).Queue(&batch, []events.Envelope{e}); err != nil {
			b.Fatal(err)
		}
		if err := pool.SendBatch(ctx, &batch.Batch).Close(); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := pool.Exec(ctx, "VACUUM ANALYZE metric_chunks"); err != nil {
		b.Fatal(err)
	}
	q := NewQueries(pool)
	b.Run("whole", func(b *testing.B) {
		for b.Loop() {
			n := 0
			if err := q.EachMetricPoint(ctx, run, "loss", func(MetricPoint) error { n++; return nil }); err != nil || n != 1_000_000 {
				b.Fatal(n, err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e6, "ns/point")
	})
	b.Run("max_points=1000", func(b *testing.B) {
		for b.Loop() {
			n := 0
			if err := q.EachMetricPointSampled(ctx, run, "loss", 1000, func(MetricPoint) error { n++; return nil }); err != nil || n > 1000 || n < 500 {
				b.Fatal(n, err)
			}
		}
	})
}

// A tampered page token is refused, an index that would wrap in the SQL
// sort's int32 comparison included.
func TestHistoryCursorTampered(t *testing.T) {
	t.Parallel()
	h := historyHash("r", "k")
	tok := func(c historyCursor) string {
		b, _ := json.Marshal(c)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	if _, err := decodeHistoryCursor(tok(historyCursor{Hash: h, Seq: 1, Idx: math.MaxInt32}), h); err != nil {
		t.Fatalf("a valid cursor: %v", err)
	}
	for _, c := range []historyCursor{{Hash: h, Seq: 1, Idx: math.MaxInt32 + 1}, {Hash: h, Seq: 1, Idx: -1}, {Hash: h, Seq: 0}, {Hash: "x", Seq: 1}} {
		if _, err := decodeHistoryCursor(tok(c), h); err != ErrBadPageToken {
			t.Errorf("%+v: %v, want ErrBadPageToken", c, err)
		}
	}
}
