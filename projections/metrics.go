package projections

import (
	"cmp"
	"context"
	"maps"
	"math"
	"slices"

	"github.com/maestro-ml/maestro/events"
)

// Metrics is the read model of metric points. Unlike the other projections
// it follows MAESTRO_METRICS, whose sequences are its own: it is started on
// the metrics store (Telemetry), its checkpoint counts metrics-stream
// sequences, and the event stream's waits and lag do not include it.
type Metrics struct{}

// Telemetry is the projections of the metrics stream.
func Telemetry() []Projection { return []Projection{Metrics{}} }

// Name implements Projection.
func (Metrics) Name() string { return "metrics" }

// Tables implements Projection.
func (Metrics) Tables() []string { return []string{"metrics", "latest_metrics"} }

// Aggregates implements Projection: every subject of its stream.
func (Metrics) Aggregates() []string { return nil }

// Handles implements Projection.
func (Metrics) Handles(t string) bool { return t == events.MetricsLogged }

// Queue implements Projection: one INSERT of every point of a request (from
// arrays, one round trip) and one upsert of the latest point per key.
func (Metrics) Queue(b *Batch, evs []events.Envelope) error {
	for _, e := range evs {
		if e.Type != events.MetricsLogged {
			continue
		}
		var d events.MetricsLoggedData
		if err := e.Decode(&d); err != nil {
			return err
		}
		var keys []string
		var steps, tss []int64
		var values []float64
		var lkeys []string
		var lsteps, ltss []int64
		var lvalues []float64
		for _, key := range slices.Sorted(maps.Keys(d.Metrics)) {
			points := d.Metrics[key]
			latest := points[0]
			for _, p := range points {
				keys, steps, tss, values = append(keys, key), append(steps, p.Step), append(tss, p.Timestamp), append(values, float64(p.Value))
				if laterPoint(p, latest) {
					latest = p
				}
			}
			lkeys, lsteps, ltss, lvalues = append(lkeys, key), append(lsteps, latest.Step), append(ltss, latest.Timestamp), append(lvalues, float64(latest.Value))
		}
		if len(keys) == 0 {
			continue
		}
		b.Queue(`INSERT INTO metrics (run_id, key, step, ts, value, seq)
			SELECT $1, k, s, t, v, $6 FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::float8[]) AS p(k, s, t, v)`,
			d.RunID, keys, steps, tss, values, int64(e.Sequence))
		// The latest point wins by step, then timestamp, then value (NaN
		// above every number, as Postgres orders float8).
		b.Queue(`INSERT INTO latest_metrics (run_id, key, step, ts, value)
			SELECT $1, k, s, t, v FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::float8[]) AS p(k, s, t, v)
			ON CONFLICT (run_id, key) DO UPDATE SET step = EXCLUDED.step, ts = EXCLUDED.ts, value = EXCLUDED.value
			WHERE (EXCLUDED.step, EXCLUDED.ts, EXCLUDED.value) > (latest_metrics.step, latest_metrics.ts, latest_metrics.value)`,
			d.RunID, lkeys, lsteps, ltss, lvalues)
	}
	return nil
}

// laterPoint orders points as latest_metrics does: step, timestamp, value,
// with NaN above every number (Postgres's float8 order).
func laterPoint(a, b events.MetricPoint) bool {
	if c := cmp.Compare(a.Step, b.Step); c != 0 {
		return c > 0
	}
	if c := cmp.Compare(a.Timestamp, b.Timestamp); c != 0 {
		return c > 0
	}
	av, bv := float64(a.Value), float64(b.Value)
	switch {
	case math.IsNaN(av):
		return !math.IsNaN(bv)
	case math.IsNaN(bv):
		return false
	}
	return av > bv
}

// MetricPoint is one point of a history as the API shows it.
type MetricPoint struct {
	Key       string             `json:"key"`
	Value     events.MetricValue `json:"value"`
	Step      int64              `json:"step"`
	Timestamp int64              `json:"timestamp"`
}

// MaxHistory bounds one history answer (a chart asks for downsampling).
const MaxHistory = 100_000

// MetricHistory returns a run's series of key in step, timestamp order (at
// most MaxHistory points; truncated reports more).
func (q *Queries) MetricHistory(ctx context.Context, runID, key string) (points []MetricPoint, truncated bool, err error) {
	rows, err := q.pool.Query(ctx, `SELECT step, ts, value FROM metrics WHERE run_id = $1 AND key = $2
		ORDER BY step, ts, seq LIMIT $3`, runID, key, MaxHistory+1)
	if err != nil {
		return nil, false, err
	}
	defer rows.Close()
	points = []MetricPoint{}
	for rows.Next() {
		p := MetricPoint{Key: key}
		var v float64
		if err := rows.Scan(&p.Step, &p.Timestamp, &v); err != nil {
			return nil, false, err
		}
		p.Value = events.MetricValue(v)
		if len(points) == MaxHistory {
			return points, true, nil
		}
		points = append(points, p)
	}
	return points, false, rows.Err()
}

// MetricHistorySampled returns a run's series of key downsampled to at most
// maxPoints points for a chart: the series is cut into maxPoints/4 buckets
// of consecutive points, and each bucket keeps its first, last, lowest and
// highest point (NaN counts as the highest, as Postgres orders float8), in
// series order. A series of at most maxPoints points comes back whole.
func (q *Queries) MetricHistorySampled(ctx context.Context, runID, key string, maxPoints int) ([]MetricPoint, error) {
	buckets := max(maxPoints/4, 1)
	rows, err := q.pool.Query(ctx, `WITH s AS (
			SELECT step, ts, value, row_number() OVER (ORDER BY step, ts, seq) - 1 AS i, count(*) OVER () AS n
			FROM metrics WHERE run_id = $1 AND key = $2),
		b AS (SELECT step, ts, value, i, n, CASE WHEN n <= $3 THEN i ELSE i * $4 / n END AS bucket FROM s),
		r AS (SELECT step, ts, value, i,
				row_number() OVER (PARTITION BY bucket ORDER BY i) AS first,
				row_number() OVER (PARTITION BY bucket ORDER BY i DESC) AS last,
				row_number() OVER (PARTITION BY bucket ORDER BY value, i) AS low,
				row_number() OVER (PARTITION BY bucket ORDER BY value DESC, i) AS high
			FROM b)
		SELECT step, ts, value FROM r WHERE first = 1 OR last = 1 OR low = 1 OR high = 1 ORDER BY i`,
		runID, key, int64(maxPoints), int64(buckets))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	points := []MetricPoint{}
	for rows.Next() {
		p := MetricPoint{Key: key}
		var v float64
		if err := rows.Scan(&p.Step, &p.Timestamp, &v); err != nil {
			return nil, err
		}
		p.Value = events.MetricValue(v)
		points = append(points, p)
	}
	return points, rows.Err()
}
