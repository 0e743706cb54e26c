package projections

import (
	"cmp"
	"container/heap"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/maestro-ml/maestro/events"
)

// Metrics is the read model of metric points. Unlike the other projections
// it follows MAESTRO_METRICS, whose sequences are its own: it is started on
// the metrics store (Telemetry), its checkpoint counts metrics-stream
// sequences, and the event stream's waits and lag do not include it.
//
// Points are stored as chunks (metric_chunks, migration 00013): one row per
// series (run, key) and request, its points packed in one bytea (24 bytes
// each), sorted by (step, timestamp), ties in the order logged. A row per
// point cost Postgres about 4–5 µs of CPU per point (the row, its index
// entry); a chunk costs about
// 0.3 µs per point, which is what lets ingest go past 100,000 points/s on
// two cores. Requests of one batch with few points of a series merge into
// one chunk (up to maxChunkPoints), so a client logging one point per
// request does not leave a row per point behind when the projection is
// busy. A series is read back by merging its chunks in order of their first
// points (seriesReader): sequential for the usual series, whose chunks do
// not overlap.
type Metrics struct{}

// Telemetry is the projections of the metrics stream.
func Telemetry() []Projection { return []Projection{Metrics{}} }

// Name implements Projection.
func (Metrics) Name() string { return "metrics" }

// Tables implements Projection.
func (Metrics) Tables() []string { return []string{"metric_chunks", "latest_metrics"} }

// Aggregates implements Projection: every subject of its stream.
func (Metrics) Aggregates() []string { return nil }

// Handles implements Projection.
func (Metrics) Handles(t string) bool { return t == events.MetricsLogged }

// BatchBytes implements Weighty: 8 MiB of requests (about 200,000
// points) a transaction, and read ahead.
func (Metrics) BatchBytes() int { return 8 << 20 }

// maxChunkPoints bounds the chunk that requests of one batch merge into (a
// request's points of one key, at most 10,000, are never split).
const maxChunkPoints = 10_000

// chunk is the points of one series that one row of metric_chunks holds:
// the series' points of one request or of several, in stream order.
type chunk struct {
	run, key string
	seq      int64 // of its first request
	parts    [][]events.MetricPoint
	n        int
}

type seriesID struct{ run, key string }

// Queue implements Projection: one INSERT per chunk and one upsert of the
// latest point of every series the batch touches.
func (Metrics) Queue(b *Batch, evs []events.Envelope) error {
	var chunks []*chunk
	filling := map[seriesID]*chunk{}
	latest := map[seriesID]events.MetricPoint{}
	var touched []seriesID // in first-touched order: the same statement for the same batch
	for _, e := range evs {
		if e.Type != events.MetricsLogged {
			continue
		}
		d, err := events.DecodeMetricsLogged(e.Data)
		if err != nil {
			return fmt.Errorf("%w: %s data (seq %d): %v", ErrUndecodable, e.Type, e.Sequence, err)
		}
		// The run id in its canonical form: Postgres reads "ABC…" and
		// "abc…" as one uuid, so two spellings in one batch would be two
		// series here and one row of the latest_metrics upsert, which
		// Postgres refuses (21000) — not a data error, retried for ever.
		id, err := uuid.Parse(d.RunID)
		if err != nil {
			return fmt.Errorf("%w: %s data (seq %d): run_id: %v", ErrUndecodable, e.Type, e.Sequence, err)
		}
		d.RunID = id.String()
		for _, key := range slices.Sorted(maps.Keys(d.Metrics)) {
			points := d.Metrics[key]
			if len(points) == 0 {
				continue
			}
			s := seriesID{d.RunID, key}
			c := filling[s]
			if c == nil || c.n+len(points) > maxChunkPoints {
				c = &chunk{run: d.RunID, key: key, seq: int64(e.Sequence)}
				filling[s] = c
				chunks = append(chunks, c)
			}
			c.parts, c.n = append(c.parts, points), c.n+len(points)
			l, seen := latest[s]
			if !seen {
				touched = append(touched, s)
				l = points[0]
			}
			for _, p := range points {
				if events.LaterPoint(p, l) {
					l = p
				}
			}
			latest[s] = l
		}
	}
	// Series order: (step, timestamp), ties in the order logged (a stable
	// sort of points in stream order).
	byPosition := func(a, b events.MetricPoint) int {
		return cmp.Or(cmp.Compare(a.Step, b.Step), cmp.Compare(a.Timestamp, b.Timestamp))
	}
	for _, c := range chunks {
		points := c.parts[0] // decoded for this batch: ours to sort
		if len(c.parts) > 1 {
			points = slices.Concat(c.parts...)
		}
		if !slices.IsSortedFunc(points, byPosition) {
			slices.SortStableFunc(points, byPosition)
		}
		first, last := points[0], points[len(points)-1]
		b.Queue(`INSERT INTO metric_chunks (run_id, key, first_step, first_ts, seq, last_step, last_ts, n, points)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
			c.run, c.key, first.Step, first.Timestamp, c.seq, last.Step, last.Timestamp, int32(len(points)), packPoints(points))
	}
	if len(touched) == 0 {
		return nil
	}
	runs, keys := make([]string, len(touched)), make([]string, len(touched))
	steps, tss, vals := make([]int64, len(touched)), make([]int64, len(touched)), make([]float64, len(touched))
	for i, s := range touched {
		l := latest[s]
		runs[i], keys[i], steps[i], tss[i], vals[i] = s.run, s.key, l.Step, l.Timestamp, float64(l.Value)
	}
	// The latest point wins by step, then timestamp, then value (NaN
	// above every number, as Postgres orders float8).
	b.Queue(`INSERT INTO latest_metrics (run_id, key, step, ts, value)
		SELECT r::uuid, k, s, t, v FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::float8[]) AS p(r, k, s, t, v)
		ON CONFLICT (run_id, key) DO UPDATE SET step = EXCLUDED.step, ts = EXCLUDED.ts, value = EXCLUDED.value
		WHERE (EXCLUDED.step, EXCLUDED.ts, EXCLUDED.value) > (latest_metrics.step, latest_metrics.ts, latest_metrics.value)`,
		runs, keys, steps, tss, vals)
	return nil
}

// pointSize is a point's bytes in metric_chunks.points: step, timestamp
// and value, big-endian int64, int64 and float64 bits.
const pointSize = 24

func packPoints(points []events.MetricPoint) []byte {
	b := make([]byte, 0, pointSize*len(points))
	for _, p := range points {
		b = binary.BigEndian.AppendUint64(b, uint64(p.Step))
		b = binary.BigEndian.AppendUint64(b, uint64(p.Timestamp))
		b = binary.BigEndian.AppendUint64(b, math.Float64bits(float64(p.Value)))
	}
	return b
}

// MetricPoint is one point of a history as the API shows it.
type MetricPoint struct {
	Key       string             `json:"key"`
	Value     events.MetricValue `json:"value"`
	Step      int64              `json:"step"`
	Timestamp int64              `json:"timestamp"`
}

// MaxHistory bounds MetricHistory and a MetricHistoryPage; EachMetricPoint
// reads a series of any length.
const MaxHistory = 100_000

// EachMetricPoint calls fn with every point of a run's series of key, in
// series order (step, timestamp, then the order logged), from one snapshot
// of the read model, in bounded memory whatever the series' length: chunks
// are read 64k points at a time and merged as they come. An error from fn
// stops the read and is returned.
func (q *Queries) EachMetricPoint(ctx context.Context, runID, key string, fn func(MetricPoint) error) error {
	return q.readSeries(ctx, func(tx pgx.Tx) error {
		return eachPoint(ctx, tx, runID, key, beforeSeries, func(p MetricPoint, _ seriesPos) (bool, error) {
			return true, fn(p)
		})
	})
}

// MetricHistory returns a run's series of key in series order (at most
// MaxHistory points; truncated reports more).
func (q *Queries) MetricHistory(ctx context.Context, runID, key string) (points []MetricPoint, truncated bool, err error) {
	points = []MetricPoint{}
	err = q.readSeries(ctx, func(tx pgx.Tx) error {
		return eachPoint(ctx, tx, runID, key, beforeSeries, func(p MetricPoint, _ seriesPos) (bool, error) {
			if len(points) == MaxHistory {
				truncated = true
				return false, nil
			}
			points = append(points, p)
			return true, nil
		})
	})
	return points, truncated, err
}

// MetricHistorySampled returns a run's series of key downsampled to at most
// maxPoints points for a chart: the series is cut into maxPoints/4 buckets
// of consecutive points, and each bucket keeps its first, last, lowest and
// highest point (the first of equals; NaN counts as the highest, as
// Postgres orders float8), in series order. A series of at most maxPoints
// points comes back whole. One pass over the series, in Go: the window
// functions this replaced took about 10 s over a million points.
func (q *Queries) MetricHistorySampled(ctx context.Context, runID, key string, maxPoints int) ([]MetricPoint, error) {
	points := []MetricPoint{}
	err := q.EachMetricPointSampled(ctx, runID, key, maxPoints, func(p MetricPoint) error {
		points = append(points, p)
		return nil
	})
	return points, err
}

// EachMetricPointSampled is MetricHistorySampled calling fn with each
// point kept, in series order.
func (q *Queries) EachMetricPointSampled(ctx context.Context, runID, key string, maxPoints int, fn func(MetricPoint) error) error {
	buckets := int64(max(maxPoints/4, 1))
	return q.readSeries(ctx, func(tx pgx.Tx) error {
		var n int64
		if err := tx.QueryRow(ctx, `SELECT coalesce(sum(n), 0) FROM metric_chunks WHERE run_id = $1 AND key = $2`, runID, key).Scan(&n); err != nil {
			return err
		}
		if n <= int64(maxPoints) {
			return eachPoint(ctx, tx, runID, key, beforeSeries, func(p MetricPoint, _ seriesPos) (bool, error) { return true, fn(p) })
		}
		type kept struct {
			i int64
			p MetricPoint
		}
		var first, last, low, high kept
		bucket, i := int64(-1), int64(0)
		flush := func() error {
			if bucket < 0 {
				return nil
			}
			picked := []kept{first, last, low, high}
			slices.SortFunc(picked, func(a, b kept) int { return cmp.Compare(a.i, b.i) })
			for j, k := range picked {
				if j > 0 && k.i == picked[j-1].i {
					continue
				}
				if err := fn(k.p); err != nil {
					return err
				}
			}
			return nil
		}
		err := eachPoint(ctx, tx, runID, key, beforeSeries, func(p MetricPoint, _ seriesPos) (bool, error) {
			if i >= n {
				return false, nil // cannot happen in one snapshot; never more than maxPoints
			}
			cur := kept{i, p}
			if b := i * buckets / n; b != bucket {
				if err := flush(); err != nil {
					return false, err
				}
				bucket, first, last, low, high = b, cur, cur, cur, cur
			} else {
				last = cur
				if events.CompareFloat8(float64(p.Value), float64(low.p.Value)) < 0 {
					low = cur
				}
				if events.CompareFloat8(float64(p.Value), float64(high.p.Value)) > 0 {
					high = cur
				}
			}
			i++
			return true, nil
		})
		if err != nil {
			return err
		}
		return flush()
	})
}

// readSeries runs read in a read-only repeatable-read transaction: a
// series read in several round trips sees one snapshot of it.
func (q *Queries) readSeries(ctx context.Context, read func(pgx.Tx) error) error {
	return pgx.BeginTxFunc(ctx, q.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, read)
}

// seriesPos is a point's place in its series: step, timestamp, then the
// order logged — its chunk's sequence and its index in the chunk. It is
// unique, so it is also where a page of a history ends.
type seriesPos struct {
	Step, TS, Seq int64
	Idx           int
}

func (a seriesPos) compare(b seriesPos) int {
	return cmp.Or(cmp.Compare(a.Step, b.Step), cmp.Compare(a.TS, b.TS), cmp.Compare(a.Seq, b.Seq), cmp.Compare(a.Idx, b.Idx))
}

// beforeSeries is a position before every point.
var beforeSeries = seriesPos{math.MinInt64, math.MinInt64, math.MinInt64, -1}

// Reading a series: chunkFetchPoints bounds the arrays one round trip
// brings (64k points, 1.5 MiB); chunkMetaFetch the chunk headers (first
// point, sequence, size) read ahead to plan them. maxOpenPoints bounds the
// points of chunks that overlap each other in the merge: a series logged
// with its steps out of order beyond that is sorted by Postgres instead
// (disk-backed), from where the merge got to.
const (
	chunkFetchPoints = 1 << 16
	chunkMetaFetch   = 1024
	maxOpenPoints    = 1 << 20
)

// eachPoint calls fn with the points of the series after position after,
// in series order, until fn returns false or an error.
func eachPoint(ctx context.Context, tx pgx.Tx, runID, key string, after seriesPos, fn func(MetricPoint, seriesPos) (bool, error)) error {
	return eachPointMerged(ctx, tx, runID, key, after, maxOpenPoints, fn)
}

// eachPointMerged is eachPoint with the bound on overlapping points (the
// tests lower it).
func eachPointMerged(ctx context.Context, tx pgx.Tx, runID, key string, after seriesPos, maxOpen int, fn func(MetricPoint, seriesPos) (bool, error)) error {
	r := &seriesReader{tx: tx, run: runID, key: key, metaAfter: after, maxOpen: maxOpen}
	if after != beforeSeries {
		if err := r.straddling(ctx, after); err != nil {
			return err
		}
	}
	last := after
	for {
		c, err := r.next(ctx)
		if errors.Is(err, errOverlapping) {
			return sortedPoints(ctx, tx, runID, key, last, fn)
		}
		if err != nil || c == nil {
			return err
		}
		// c's points go out in a run, without the heap, up to the next
		// start of another chunk: all of c, for chunks that do not overlap.
		bound, bounded := r.bound()
		for {
			last = c.pos()
			more, err := fn(MetricPoint{Key: key, Value: c.value(c.i), Step: last.Step, Timestamp: last.TS}, last)
			if err != nil || !more {
				return err
			}
			c.i++
			r.openN--
			if c.i == c.n {
				heap.Pop(&r.open)
				break
			}
			if bounded && c.pos().compare(bound) > 0 {
				heap.Fix(&r.open, 0)
				break
			}
		}
	}
}

// bound is the smallest position of a point not in the heap's top chunk:
// the next point of another open chunk, or the start of the next chunk to
// open (next loads one when there is any).
func (r *seriesReader) bound() (seriesPos, bool) {
	var b seriesPos
	ok := false
	consider := func(p seriesPos) {
		if !ok || p.compare(b) < 0 {
			b, ok = p, true
		}
	}
	for _, i := range []int{1, 2} { // the top's children hold the next smallest
		if i < len(r.open) {
			consider(r.open[i].pos())
		}
	}
	if len(r.loaded) > 0 {
		c := r.loaded[0]
		consider(seriesPos{c.step(0), c.ts(0), c.seq, 0})
	}
	return b, ok
}

var errOverlapping = errors.New("metric series: too many overlapping chunks")

// sortedPoints is eachPoint by Postgres's sort (on disk beyond work_mem),
// for a series whose chunks overlap too much to merge in memory. It is
// slow — every point is cut out of its chunk in SQL — and meant for series
// logged in no order at all.
func sortedPoints(ctx context.Context, tx pgx.Tx, runID, key string, after seriesPos, fn func(MetricPoint, seriesPos) (bool, error)) error {
	rows, err := tx.Query(ctx, `SELECT p.s, p.t, c.seq, i, substr(c.points, i * 24 + 17, 8)
		FROM metric_chunks c, generate_series(0, c.n - 1) AS i,
			LATERAL (SELECT ('x' || encode(substr(c.points, i * 24 + 1, 8), 'hex'))::bit(64)::bigint AS s,
				('x' || encode(substr(c.points, i * 24 + 9, 8), 'hex'))::bit(64)::bigint AS t) AS p
		WHERE c.run_id = $1 AND c.key = $2 AND (p.s, p.t, c.seq, i) > ($3, $4, $5, $6)
		ORDER BY p.s, p.t, c.seq, i`, runID, key, after.Step, after.TS, after.Seq, int32(after.Idx))
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var pos seriesPos
		var idx int32
		var v []byte
		if err := rows.Scan(&pos.Step, &pos.TS, &pos.Seq, &idx, &v); err != nil {
			return err
		}
		if len(v) != 8 {
			return fmt.Errorf("metric chunk %s/%s seq %d: a value of %d bytes", runID, key, pos.Seq, len(v))
		}
		pos.Idx = int(idx)
		value := events.MetricValue(math.Float64frombits(binary.BigEndian.Uint64(v)))
		more, err := fn(MetricPoint{Key: key, Value: value, Step: pos.Step, Timestamp: pos.TS}, pos)
		if err != nil || !more {
			return err
		}
	}
	return rows.Err()
}

// chunkCursor is a chunk being merged: its points (packed) and the next.
type chunkCursor struct {
	seq    int64
	points []byte
	n, i   int
}

func (c *chunkCursor) step(i int) int64 {
	return int64(binary.BigEndian.Uint64(c.points[i*pointSize:]))
}
func (c *chunkCursor) ts(i int) int64 {
	return int64(binary.BigEndian.Uint64(c.points[i*pointSize+8:]))
}
func (c *chunkCursor) value(i int) events.MetricValue {
	return events.MetricValue(math.Float64frombits(binary.BigEndian.Uint64(c.points[i*pointSize+16:])))
}
func (c *chunkCursor) pos() seriesPos { return seriesPos{c.step(c.i), c.ts(c.i), c.seq, c.i} }

// chunkHeap orders open chunks by their next point.
type chunkHeap []*chunkCursor

func (h chunkHeap) Len() int           { return len(h) }
func (h chunkHeap) Less(i, j int) bool { return h[i].pos().compare(h[j].pos()) < 0 }
func (h chunkHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *chunkHeap) Push(x any)        { *h = append(*h, x.(*chunkCursor)) }
func (h *chunkHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	*h = old[:len(old)-1]
	return c
}

// chunkMeta is a chunk's header: where it starts and how many points.
type chunkMeta struct {
	step, ts, seq int64
	n             int
}

// seriesReader merges a series' chunks: headers are read ahead in order of
// the chunks' first points, arrays a bounded number of points at a time,
// and a chunk is opened (put on the heap) once its first point is the
// smallest not yet given out.
type seriesReader struct {
	tx        pgx.Tx
	run, key  string
	metas     []chunkMeta // headers read, arrays not yet
	metaAfter seriesPos   // headers are read after this chunk start
	metaDone  bool
	loaded    []*chunkCursor // arrays read, not yet opened, in order
	open      chunkHeap
	openN     int // points left in open chunks
	maxOpen   int
}

// next returns the chunk whose next point is the series' next point (nil
// at the end).
func (r *seriesReader) next(ctx context.Context) (*chunkCursor, error) {
	for {
		if len(r.loaded) == 0 {
			if err := r.load(ctx); err != nil {
				return nil, err
			}
		}
		if len(r.loaded) > 0 {
			c := r.loaded[0]
			start := seriesPos{c.step(0), c.ts(0), c.seq, 0}
			if len(r.open) == 0 || start.compare(r.open[0].pos()) < 0 {
				r.loaded = r.loaded[1:]
				heap.Push(&r.open, c)
				r.openN += c.n - c.i
				if len(r.open) > 1 && r.openN > r.maxOpen {
					return nil, errOverlapping
				}
				continue
			}
		}
		if len(r.open) == 0 {
			return nil, nil
		}
		return r.open[0], nil
	}
}

// load reads the arrays of the next chunks, up to chunkFetchPoints points
// (at least one chunk), reading headers ahead first when it has none.
func (r *seriesReader) load(ctx context.Context) error {
	if len(r.metas) == 0 && !r.metaDone {
		rows, err := r.tx.Query(ctx, `SELECT first_step, first_ts, seq, n FROM metric_chunks
			WHERE run_id = $1 AND key = $2 AND (first_step, first_ts, seq) > ($3, $4, $5)
			ORDER BY first_step, first_ts, seq LIMIT $6`, r.run, r.key, r.metaAfter.Step, r.metaAfter.TS, r.metaAfter.Seq, chunkMetaFetch)
		if err != nil {
			return err
		}
		r.metas, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (chunkMeta, error) {
			var m chunkMeta
			return m, row.Scan(&m.step, &m.ts, &m.seq, &m.n)
		})
		if err != nil {
			return err
		}
		if len(r.metas) < chunkMetaFetch {
			r.metaDone = true
		}
		if len(r.metas) > 0 {
			m := r.metas[len(r.metas)-1]
			r.metaAfter = seriesPos{Step: m.step, TS: m.ts, Seq: m.seq}
		}
	}
	if len(r.metas) == 0 {
		return nil
	}
	k, points := 1, r.metas[0].n
	for k < len(r.metas) && points+r.metas[k].n <= chunkFetchPoints {
		points += r.metas[k].n
		k++
	}
	from, to := r.metas[0], r.metas[k-1]
	r.metas = r.metas[k:]
	rows, err := r.tx.Query(ctx, `SELECT seq, points FROM metric_chunks
		WHERE run_id = $1 AND key = $2 AND (first_step, first_ts, seq) >= ($3, $4, $5) AND (first_step, first_ts, seq) <= ($6, $7, $8)
		ORDER BY first_step, first_ts, seq`, r.run, r.key, from.step, from.ts, from.seq, to.step, to.ts, to.seq)
	if err != nil {
		return err
	}
	return r.collect(rows, nil)
}

// straddling opens the chunks that start at or before after and may hold
// points beyond it (a page that ended inside them), past after.
func (r *seriesReader) straddling(ctx context.Context, after seriesPos) error {
	rows, err := r.tx.Query(ctx, `SELECT seq, points FROM metric_chunks
		WHERE run_id = $1 AND key = $2 AND (first_step, first_ts, seq) <= ($3, $4, $5) AND (last_step, last_ts) >= ($3, $4)
		ORDER BY first_step, first_ts, seq`, r.run, r.key, after.Step, after.TS, after.Seq)
	if err != nil {
		return err
	}
	var straddle []*chunkCursor
	if err := r.collect(rows, &straddle); err != nil {
		return err
	}
	for _, c := range straddle {
		for c.i < c.n && c.pos().compare(after) <= 0 {
			c.i++
		}
		if c.i < c.n {
			heap.Push(&r.open, c)
			r.openN += c.n - c.i
		}
	}
	return nil
}

// collect reads chunk rows into r.loaded (or into, when set).
func (r *seriesReader) collect(rows pgx.Rows, into *[]*chunkCursor) error {
	defer rows.Close()
	for rows.Next() {
		c := &chunkCursor{}
		if err := rows.Scan(&c.seq, &c.points); err != nil {
			return err
		}
		if c.n = len(c.points) / pointSize; c.n == 0 || len(c.points)%pointSize != 0 {
			return fmt.Errorf("metric chunk %s/%s seq %d: %d bytes of points", r.run, r.key, c.seq, len(c.points))
		}
		if into != nil {
			*into = append(*into, c)
		} else {
			r.loaded = append(r.loaded, c)
		}
	}
	return rows.Err()
}
