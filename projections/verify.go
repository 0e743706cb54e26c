package projections

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/maestro-ml/maestro/events"
)

// VerifyConfig configures Verify.
type VerifyConfig struct {
	// Events and Metrics are the streams the projections follow
	// (MAESTRO_EVENTS for All, MAESTRO_METRICS for Telemetry).
	Events, Metrics *events.Store
	// LagTimeout bounds how long Verify waits for a live projection that
	// is behind the scratch copy to catch up (default 1 minute).
	LagTimeout time.Duration
	// MaxShown bounds the rows whose differences are listed per table
	// (default 50); every differing row is counted.
	MaxShown int
	// KeepScratch leaves the scratch schema in place (debugging).
	KeepScratch bool
	// Progress, when set, is called as the scratch copy is rebuilt with
	// the messages applied so far summed over projections, and the total
	// to apply (each projection's stream head at the start).
	Progress func(done, total uint64)
}

// Difference is one way a live table differs from its rebuild: a column of
// a row (Column names it), or a row only one side has (Column is "(row)"
// and the missing side reads "(missing)").
type Difference struct {
	Projection, Table, Key, Column, Live, Rebuilt string
}

// TableDiff is one table's differences: how many rows differ, and the
// first MaxShown of them (in key order), column by column.
type TableDiff struct {
	Projection, Table string
	Rows              int64
	Shown             []Difference
}

// VerifyResult is what Verify compared and found.
type VerifyResult struct {
	Projections int
	Tables      int    // compared, the quarantine included once per projection
	Rows        int64  // live rows compared
	Messages    uint64 // applied to the scratch copy, summed over projections
	Scratch     string // the scratch schema (dropped unless KeepScratch)
	Diffs       []TableDiff
}

// Equal reports whether no difference was found.
func (v *VerifyResult) Equal() bool { return len(v.Diffs) == 0 }

// verifyBatch is the scratch runners' batch size: the live default.
const verifyBatch = 500

// Verify rebuilds every projection (All and Telemetry) from the streams
// into a scratch schema of live's database and compares it, table by table
// and row by row, with the live read models, while the platform runs and
// writes continue. Per projection it reads the live checkpoint L in a
// REPEATABLE READ snapshot, brings the scratch copy to exactly L (the
// snapshot stays fixed meanwhile) and compares the snapshot's rows with the
// scratch copy's, so a concurrent write can never show as a difference.
// See docs/ARCHITECTURE.md (Projections, Verify).
func Verify(ctx context.Context, live *pgxpool.Pool, cfg VerifyConfig) (res *VerifyResult, err error) {
	if cfg.LagTimeout <= 0 {
		cfg.LagTimeout = time.Minute
	}
	if cfg.MaxShown <= 0 {
		cfg.MaxShown = 50
	}
	var liveSchema string
	if err := live.QueryRow(ctx, "SELECT current_schema()").Scan(&liveSchema); err != nil {
		return nil, fmt.Errorf("live schema: %w", err)
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	res = &VerifyResult{Scratch: "maestro_verify_" + hex.EncodeToString(rnd[:])}
	if _, err := live.Exec(ctx, "CREATE SCHEMA "+ident(res.Scratch)); err != nil {
		return nil, fmt.Errorf("create scratch schema: %w", err)
	}
	if !cfg.KeepScratch {
		defer func() {
			// A fresh context: ctx may be cancelled (Ctrl-C) by now.
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			if _, derr := live.Exec(dctx, "DROP SCHEMA "+ident(res.Scratch)+" CASCADE"); derr != nil && err == nil {
				err = fmt.Errorf("drop scratch schema %s: %w", res.Scratch, derr)
			}
		}()
	}
	pcfg := live.Config()
	if pcfg.ConnConfig.RuntimeParams == nil {
		pcfg.ConnConfig.RuntimeParams = map[string]string{}
	}
	pcfg.ConnConfig.RuntimeParams["search_path"] = res.Scratch
	// A pooler in front of Postgres may drop a startup parameter: the
	// scratch runners would then write into the live schema. Every
	// connection proves it is in the scratch schema first.
	afterConnect := pcfg.AfterConnect
	pcfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		if afterConnect != nil {
			if err := afterConnect(ctx, c); err != nil {
				return err
			}
		}
		var schema string
		if err := c.QueryRow(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
			return fmt.Errorf("scratch connection: %w", err)
		}
		if schema != res.Scratch {
			return fmt.Errorf("scratch connection is in schema %q, not %q: verify needs session-level connections that keep search_path (not a transaction pooler)", schema, res.Scratch)
		}
		return nil
	}
	pcfg.MaxConns = 4
	scratch, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return res, fmt.Errorf("scratch pool: %w", err)
	}
	defer scratch.Close()
	if err := Migrate(ctx, scratch); err != nil {
		return res, fmt.Errorf("migrate scratch schema: %w", err)
	}
	streams := []*scratchStream{
		{name: "events", store: cfg.Events, projs: All()},
		{name: "metrics", store: cfg.Metrics, projs: Telemetry()},
	}
	var total uint64
	for _, s := range streams {
		if err := s.open(ctx, scratch); err != nil {
			return res, err
		}
		defer s.close()
		if s.head, err = s.store.LastSequence(ctx); err != nil {
			return res, fmt.Errorf("%s stream head: %w", s.name, err)
		}
		total += s.head * uint64(len(s.runners))
	}
	report := func() {
		if cfg.Progress == nil {
			return
		}
		var done uint64
		for _, s := range streams {
			done += s.pos * uint64(len(s.runners))
		}
		cfg.Progress(done, max(done, total))
	}
	// The bulk of the rebuild, to the heads seen at the start, holds no
	// snapshot of the live database.
	for _, s := range streams {
		s.progress = report
		if err := s.advanceTo(ctx, s.head); err != nil {
			return res, err
		}
	}
	report()
	for _, s := range streams {
		for _, r := range s.runners {
			if err := verifyProjection(ctx, live, liveSchema, res, s, r, cfg); err != nil {
				return res, err
			}
			res.Projections++
		}
		res.Messages += s.pos * uint64(len(s.runners))
	}
	return res, nil
}

// verifyProjection compares one projection with its scratch copy at the
// live checkpoint, in one snapshot of the live database.
func verifyProjection(ctx context.Context, live *pgxpool.Pool, liveSchema string, res *VerifyResult, s *scratchStream, r *Runner, cfg VerifyConfig) error {
	name := r.p.Name()
	deadline := time.Now().Add(cfg.LagTimeout)
	for {
		tx, err := live.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
		if err != nil {
			return fmt.Errorf("verify %s: begin snapshot: %w", name, err)
		}
		// The checkpoint commits with the rows it covers: in this snapshot
		// the tables hold exactly the events up to it.
		var cp int64
		err = tx.QueryRow(ctx, "SELECT COALESCE((SELECT last_seq FROM projection_checkpoints WHERE name = $1), 0)", name).Scan(&cp)
		if err != nil {
			tx.Rollback(ctx) //nolint:errcheck // read-only
			return fmt.Errorf("verify %s: live checkpoint: %w", name, err)
		}
		if uint64(cp) < s.pos {
			// The live projection lags the scratch copy, which cannot go
			// back: wait for it, then take a new snapshot.
			tx.Rollback(ctx) //nolint:errcheck // read-only
			if time.Now().After(deadline) {
				return fmt.Errorf("verify %s: the live projection stayed at %d, behind sequence %d, for %s; is a worker running?",
					name, cp, s.pos, cfg.LagTimeout)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		err = s.advanceTo(ctx, uint64(cp))
		if err == nil {
			err = compareProjection(ctx, tx, s.runners[0].pool, liveSchema, res, r.p, cfg.MaxShown)
		}
		tx.Rollback(ctx) //nolint:errcheck // read-only
		if err != nil {
			return fmt.Errorf("verify %s: %w", name, err)
		}
		return nil
	}
}

// scratchStream is the scratch runners of the projections of one stream,
// fed by one reader of the whole stream (in stream order; each projection
// takes the messages on its own subjects, as its live consumer would).
type scratchStream struct {
	name     string
	store    *events.Store
	projs    []Projection
	runners  []*Runner
	cps      []uint64            // each scratch runner's checkpoint row
	batches  [][]events.Envelope // waiting to be applied, per runner
	sizes    []int               // their data bytes
	head     uint64              // the stream's head at the start
	pos      uint64              // every message up to pos is applied
	held     jetstream.Msg       // the first message after pos, read ahead
	msgs     chan jetstream.Msg
	cancel   context.CancelFunc
	cc       jetstream.ConsumeContext
	progress func()
}

func (s *scratchStream) open(ctx context.Context, scratch *pgxpool.Pool) error {
	for _, p := range s.projs {
		r := NewRunner(scratch, s.store, p, RunnerConfig{BatchSize: verifyBatch, Silent: true})
		if _, err := scratch.Exec(ctx, "INSERT INTO projection_checkpoints (name) VALUES ($1) ON CONFLICT DO NOTHING", p.Name()); err != nil {
			return fmt.Errorf("scratch checkpoint %s: %w", p.Name(), err)
		}
		s.runners = append(s.runners, r)
	}
	s.cps = make([]uint64, len(s.runners))
	s.batches = make([][]events.Envelope, len(s.runners))
	s.sizes = make([]int, len(s.runners))
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	cons, err := s.store.Follow(cctx, 0, nil)
	if err != nil {
		return fmt.Errorf("read the %s stream: %w", s.name, err)
	}
	// Bounded read-ahead: metric requests are up to 1 MiB each.
	s.msgs = make(chan jetstream.Msg, 64)
	s.cc, err = cons.Consume(func(m jetstream.Msg) {
		select {
		case s.msgs <- m:
		case <-cctx.Done():
		}
	}, jetstream.PullMaxBytes(8<<20))
	if err != nil {
		return fmt.Errorf("read the %s stream: %w", s.name, err)
	}
	return nil
}

func (s *scratchStream) close() {
	if s.cc != nil {
		s.cc.Stop()
	}
	if s.cancel != nil {
		s.cancel()
	}
}

// advanceTo applies every message up to target, and none after it, to the
// scratch projections. Target never exceeds the stream's head (it is the
// head or a live checkpoint), so the reader is sure to deliver up to it.
func (s *scratchStream) advanceTo(ctx context.Context, target uint64) error {
	n := 0
	for s.pos < target {
		m := s.held
		s.held = nil
		if m == nil {
			select {
			case m = <-s.msgs:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		meta, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("%s stream message metadata: %w", s.name, err)
		}
		seq := meta.Sequence.Stream
		if seq > target {
			s.held = m
			break
		}
		for i, r := range s.runners {
			if !s.runners[i].ours(m.Subject()) {
				continue
			}
			b, err := r.appendMsg(s.batches[i], m)
			if err != nil {
				return err
			}
			// As the live runner, a batch only needs events that change
			// the read model (its checkpoint passes over the others).
			if e := b[len(b)-1]; !r.p.Handles(e.Type) {
				if _, bad := r.undecodable[e.Sequence]; !bad {
					continue
				}
			}
			s.batches[i] = b
			s.sizes[i] += len(m.Data())
			if len(b) >= verifyBatch || (r.batchBytes > 0 && s.sizes[i] >= r.batchBytes) {
				if err := s.flush(ctx, i); err != nil {
					return err
				}
			}
		}
		s.pos = seq
		if n++; n%1000 == 0 && s.progress != nil {
			s.progress()
		}
	}
	for i := range s.runners {
		if err := s.flush(ctx, i); err != nil {
			return err
		}
	}
	// Nothing between the last message and target is on the stream.
	s.pos = max(s.pos, target)
	if s.progress != nil {
		s.progress()
	}
	return nil
}

// flush applies runner i's waiting events through the live runner's own
// batch path (the same statements, the same quarantine).
func (s *scratchStream) flush(ctx context.Context, i int) error {
	if len(s.batches[i]) == 0 {
		return nil
	}
	cp, err := s.runners[i].applyBatch(ctx, s.cps[i], s.batches[i])
	if err != nil {
		return fmt.Errorf("rebuild %s in the scratch schema: %w", s.runners[i].p.Name(), err)
	}
	s.cps[i], s.batches[i], s.sizes[i] = cp, s.batches[i][:0], 0
	return nil
}

// excluded lists, per table, the columns Verify does not compare because
// they legitimately differ between a projection and its rebuild:
// quarantined_at is the wall-clock time Postgres set when the row was
// written (DEFAULT now()), not data from an event, and error is the
// wording of the failure, which a new pgx or a changed statement words
// otherwise for the same event (sqlstate, event id, type and subject still
// pin the row). Checkpoint rows are not compared at all: their last_seq is
// equal by construction (the scratch copy is brought to the live
// checkpoint) and updated_at is such a time.
var excluded = map[string][]string{
	"projection_quarantine": {"quarantined_at", "error"},
}

// compareProjection compares p's tables and quarantine rows in tx (a
// snapshot of the live database) with the scratch schema's.
func compareProjection(ctx context.Context, tx pgx.Tx, scratch *pgxpool.Pool, liveSchema string, res *VerifyResult, p Projection, maxShown int) error {
	tables := append(slices.Clone(p.Tables()), "projection_quarantine")
	for _, t := range tables {
		var d TableDiff
		var rows int64
		var err error
		switch t {
		case "metric_chunks":
			d, rows, err = compareMetricChunks(ctx, tx, scratch, liveSchema, res.Scratch, maxShown)
		case "projection_quarantine":
			d, rows, err = compareTable(ctx, tx, scratch, liveSchema, res.Scratch, t, "projection = "+literal(p.Name()), maxShown)
		default:
			d, rows, err = compareTable(ctx, tx, scratch, liveSchema, res.Scratch, t, "", maxShown)
		}
		if err != nil {
			return fmt.Errorf("compare %s: %w", t, err)
		}
		res.Tables++
		res.Rows += rows
		if d.Rows > 0 {
			d.Projection = p.Name()
			for i := range d.Shown {
				d.Shown[i].Projection = p.Name()
			}
			res.Diffs = append(res.Diffs, d)
		}
	}
	return nil
}

type column struct{ name, typ string }

// tableShape reads a table's columns (in order) and its primary key.
func tableShape(ctx context.Context, tx pgx.Tx, schema, table string) (cols []column, key []string, err error) {
	rel := pgx.Identifier{schema, table}.Sanitize()
	rows, err := tx.Query(ctx, `SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
		WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`, rel)
	if err != nil {
		return nil, nil, err
	}
	for rows.Next() {
		var c column
		if err := rows.Scan(&c.name, &c.typ); err != nil {
			return nil, nil, err
		}
		cols = append(cols, c)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	// The key columns only (indnkeyatts), not a covering index's INCLUDE.
	rows, err = tx.Query(ctx, `SELECT a.attname FROM pg_index i
		CROSS JOIN LATERAL generate_series(0, i.indnkeyatts - 1) AS k(n)
		JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[k.n]
		WHERE i.indrelid = $1::regclass AND i.indisprimary ORDER BY k.n`, rel)
	if err != nil {
		return nil, nil, err
	}
	key, err = pgx.CollectRows(rows, pgx.RowTo[string])
	return cols, key, err
}

// compareTable compares a table of the live schema with the scratch one,
// row by row on the primary key, every column but the excluded ones.
func compareTable(ctx context.Context, tx pgx.Tx, scratch *pgxpool.Pool, liveSchema, scratchSchema, table, where string, maxShown int) (TableDiff, int64, error) {
	cols, key, err := tableShape(ctx, tx, liveSchema, table)
	if err != nil {
		return TableDiff{Table: table}, 0, err
	}
	scols, _, err := tableShape(ctx, tx, scratchSchema, table)
	if err != nil {
		return TableDiff{Table: table}, 0, err
	}
	if !slices.Equal(cols, scols) {
		return TableDiff{Table: table}, 0, fmt.Errorf("the live table's columns %v are not the migrations' %v (is the live schema migrated to this version?)", cols, scols)
	}
	if len(key) == 0 {
		return TableDiff{Table: table}, 0, errors.New("table has no primary key")
	}
	var cmpCols, keyExprs, valExprs []string
	for _, k := range key {
		keyExprs = append(keyExprs, ident(k)+"::text")
	}
	for _, c := range cols {
		if !slices.Contains(excluded[table], c.name) && !slices.Contains(key, c.name) {
			cmpCols = append(cmpCols, c.name)
			valExprs = append(valExprs, ident(c.name)+"::text")
		}
	}
	if where != "" {
		where = " WHERE " + where
	}
	query := func(schema string) string {
		return "SELECT " + textArray(keyExprs) + ", " + textArray(valExprs) + " FROM " + pgx.Identifier{schema, table}.Sanitize() + where +
			" ORDER BY " + collateC(keyExprs)
	}
	return mergeCompare(ctx, tx, scratch, table, query(liveSchema), query(scratchSchema), key, cmpCols, maxShown, clip)
}

// compareMetricChunks compares the metric series rather than their chunks:
// how requests merge into chunks depends on how the runner batched them
// (Metrics.Queue), which differs between the live runner and a rebuild,
// while every series' points in series order — (step, timestamp), then
// the order logged: the chunk's sequence and the point's place in it — do
// not. The key is (run_id, key, the point's place in its series); a point
// is compared by its 24 stored bytes (step, timestamp, value bits: NaN and
// -0 exactly).
func compareMetricChunks(ctx context.Context, tx pgx.Tx, scratch *pgxpool.Pool, liveSchema, scratchSchema string, maxShown int) (TableDiff, int64, error) {
	query := func(schema string) string {
		return fmt.Sprintf(`SELECT ARRAY[run_id::text, key, n::text], ARRAY[pt::text] FROM (
			SELECT c.run_id, c.key, p.pt,
				row_number() OVER (PARTITION BY c.run_id, c.key ORDER BY p.step, p.ts, c.seq, p.i) AS n
			FROM %s AS c CROSS JOIN LATERAL (
				SELECT i, substring(c.points FROM i * 24 + 1 FOR 24) AS pt,
					('x' || encode(substring(c.points FROM i * 24 + 1 FOR 8), 'hex'))::bit(64)::bigint AS step,
					('x' || encode(substring(c.points FROM i * 24 + 9 FOR 8), 'hex'))::bit(64)::bigint AS ts
				FROM generate_series(0, c.n - 1) AS i) AS p) AS points
			ORDER BY run_id::text COLLATE "C", key COLLATE "C", n::text COLLATE "C"`, pgx.Identifier{schema, "metric_chunks"}.Sanitize())
	}
	return mergeCompare(ctx, tx, scratch, "metric_chunks", query(liveSchema), query(scratchSchema),
		[]string{"run_id", "key", "point"}, []string{"point"}, maxShown, showPoint)
}

// mergeCompare walks two result sets of (key text[], values text[]), both
// in the same order (every key column as text, collation "C", which Go's
// string comparison follows): the live one in the snapshot tx, the scratch
// one on the scratch pool. The scratch schema cannot be read in tx: its
// snapshot predates the scratch runners' last commits; only Verify writes
// there, so any later read of it is at the state it brought it to.
func mergeCompare(ctx context.Context, tx pgx.Tx, scratch *pgxpool.Pool, table, liveSQL, scratchSQL string,
	keyNames, colNames []string, maxShown int, show func(string) string) (TableDiff, int64, error) {
	d := TableDiff{Table: table}
	lrows, err := tx.Query(ctx, liveSQL)
	if err != nil {
		return d, 0, err
	}
	defer lrows.Close()
	srows, err := scratch.Query(ctx, scratchSQL)
	if err != nil {
		return d, 0, err
	}
	defer srows.Close()
	l, s := &mergeCursor{rows: lrows}, &mergeCursor{rows: srows}
	if err := l.next(); err != nil {
		return d, 0, err
	}
	if err := s.next(); err != nil {
		return d, 0, err
	}
	var n int64
	for l.ok || s.ok {
		c := 0
		switch {
		case !l.ok:
			c = 1
		case !s.ok:
			c = -1
		default:
			c = slices.Compare(l.key, s.key)
		}
		var found []Difference
		var cur *mergeCursor
		switch {
		case c < 0: // only live has the row
			found = []Difference{{Column: "(row)", Live: "(present)", Rebuilt: "(missing)"}}
			cur = l
		case c > 0:
			found = []Difference{{Column: "(row)", Live: "(missing)", Rebuilt: "(present)"}}
			cur = s
		default:
			cur = l
			for i, name := range colNames {
				if l.vals[i] != s.vals[i] {
					found = append(found, Difference{Column: name, Live: showText(l.vals[i], show), Rebuilt: showText(s.vals[i], show)})
				}
			}
		}
		if len(found) > 0 {
			d.Rows++
			if len(d.Shown) < maxShown {
				k := make([]string, len(keyNames))
				for i, name := range keyNames {
					k[i] = name + "=" + cur.key[i]
				}
				for _, f := range found {
					f.Table, f.Key = table, strings.Join(k, ", ")
					d.Shown = append(d.Shown, f)
				}
			}
		}
		if c <= 0 {
			n++
			if err := l.next(); err != nil {
				return d, 0, err
			}
		}
		if c >= 0 {
			if err := s.next(); err != nil {
				return d, 0, err
			}
		}
	}
	return d, n, nil
}

// mergeCursor is one side of mergeCompare.
type mergeCursor struct {
	rows pgx.Rows
	ok   bool
	key  []string
	vals []pgtype.Text
}

func (c *mergeCursor) next() error {
	if c.ok = c.rows.Next(); c.ok {
		return c.rows.Scan(&c.key, &c.vals)
	}
	return c.rows.Err()
}

func showText(v pgtype.Text, show func(string) string) string {
	if !v.Valid {
		return "NULL"
	}
	return show(v.String)
}

func textArray(exprs []string) string {
	if len(exprs) == 0 {
		return "ARRAY[]::text[]"
	}
	return "ARRAY[" + strings.Join(exprs, ", ") + "]"
}

func collateC(exprs []string) string {
	out := make([]string, len(exprs))
	for i, e := range exprs {
		out[i] = "(" + e + `) COLLATE "C"`
	}
	return strings.Join(out, ", ")
}

// showPoint prints a metric point from its bytea text ("\\x" and hex).
func showPoint(text string) string {
	b, err := hex.DecodeString(strings.TrimPrefix(text, `\x`))
	if err != nil || len(b) != pointSize {
		return clip(text)
	}
	u := func(i int) uint64 { return binary.BigEndian.Uint64(b[i : i+8]) }
	return fmt.Sprintf("step=%d ts=%d value=%v", int64(u(0)), int64(u(8)), math.Float64frombits(u(16)))
}

func ident(s string) string { return pgx.Identifier{s}.Sanitize() }

// literal quotes s as an SQL string literal (names from the catalogue and
// the registry, never user input).
func literal(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// clip shortens a value for printing (a jsonb document, a bytea).
func clip(s string) string {
	if len(s) <= 120 {
		return s
	}
	cut := 120
	for cut > 0 && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return s[:cut] + "…"
}
