package projections

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Status is one projection's progress.
type Status struct {
	Name string `json:"name"`
	// Stream is the stream it follows: "events" (MAESTRO_EVENTS) or
	// "metrics" (MAESTRO_METRICS); LastSeq and Lag count in it.
	Stream    string    `json:"stream"`
	LastSeq   uint64    `json:"last_seq"`
	Lag       uint64    `json:"lag"`
	UpdatedAt time.Time `json:"updated_at"`
	// Quarantined counts the events the projection skipped because it
	// cannot store them; LastQuarantined is the latest of them.
	Quarantined     int64             `json:"quarantined"`
	LastQuarantined *QuarantinedEvent `json:"last_quarantined,omitempty"`
}

// QuarantinedEvent is an event a projection skipped, and why (no event data:
// the stream and the audit trail have it under the same sequence).
type QuarantinedEvent struct {
	Seq           uint64    `json:"seq"`
	EventID       string    `json:"event_id"`
	Type          string    `json:"type"`
	Subject       string    `json:"subject"`
	SQLState      string    `json:"sqlstate,omitempty"`
	Error         string    `json:"error"`
	QuarantinedAt time.Time `json:"quarantined_at"`
}

// Heads is the last sequence of each stream projections follow.
type Heads struct {
	Events  uint64 // MAESTRO_EVENTS
	Metrics uint64 // MAESTRO_METRICS
}

// Statuses reports every projection's checkpoint, lag behind its stream's
// head and quarantined events: the event stream's projections (All), then
// the telemetry ones (Telemetry).
func Statuses(ctx context.Context, pool *pgxpool.Pool, heads Heads) ([]Status, error) {
	counts, err := quarantineCounts(ctx, pool)
	if err != nil {
		return nil, err
	}
	type followed struct {
		p      Projection
		stream string
		head   uint64
	}
	var ps []followed
	for _, p := range All() {
		ps = append(ps, followed{p, "events", heads.Events})
	}
	for _, p := range Telemetry() {
		ps = append(ps, followed{p, "metrics", heads.Metrics})
	}
	out := make([]Status, 0, len(ps))
	for _, f := range ps {
		p, streamLast := f.p, f.head
		s := Status{Name: p.Name(), Stream: f.stream, Quarantined: counts[p.Name()]}
		var seq int64
		err := pool.QueryRow(ctx, "SELECT last_seq, updated_at FROM projection_checkpoints WHERE name = $1", p.Name()).Scan(&seq, &s.UpdatedAt)
		if err != nil && err != pgx.ErrNoRows {
			return nil, fmt.Errorf("checkpoint %s: %w", p.Name(), err)
		}
		s.LastSeq = uint64(seq)
		if streamLast > s.LastSeq {
			s.Lag = streamLast - s.LastSeq
		}
		if s.Quarantined > 0 {
			var q QuarantinedEvent
			var qseq int64
			err := pool.QueryRow(ctx, `SELECT seq, event_id, type, subject, sqlstate, error, quarantined_at
				FROM projection_quarantine WHERE projection = $1 ORDER BY seq DESC LIMIT 1`, p.Name()).
				Scan(&qseq, &q.EventID, &q.Type, &q.Subject, &q.SQLState, &q.Error, &q.QuarantinedAt)
			if err != nil && err != pgx.ErrNoRows {
				return nil, fmt.Errorf("quarantine of %s: %w", p.Name(), err)
			}
			if err == nil {
				q.Seq = uint64(qseq)
				s.LastQuarantined = &q
			}
		}
		out = append(out, s)
	}
	return out, nil
}

func quarantineCounts(ctx context.Context, pool *pgxpool.Pool) (map[string]int64, error) {
	rows, err := pool.Query(ctx, "SELECT projection, count(*) FROM projection_quarantine GROUP BY projection")
	if err != nil {
		return nil, fmt.Errorf("count quarantined events: %w", err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var name string
		var n int64
		if err := rows.Scan(&name, &n); err != nil {
			return nil, fmt.Errorf("count quarantined events: %w", err)
		}
		out[name] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count quarantined events: %w", err)
	}
	return out, nil
}

// Reset empties every projection and its quarantine, and rewinds its
// checkpoint to zero, in one transaction. Running runners notice the rewind
// and replay from the start, quarantining the same events again.
func Reset(ctx context.Context, pool *pgxpool.Pool) error {
	// The running projections (and the audit sealer) hold locks on these
	// tables and their checkpoint rows in their own orders; Postgres may
	// break a cycle by aborting this transaction (40P01), which changed
	// nothing: take the turn again.
	for attempt := 1; ; attempt++ {
		err := reset(ctx, pool)
		var pgErr *pgconn.PgError
		if attempt == 5 || !errors.As(err, &pgErr) || pgErr.Code != "40P01" {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(attempt) * 100 * time.Millisecond):
		}
	}
}

func reset(ctx context.Context, pool *pgxpool.Pool) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		tables := []string{"projection_quarantine"}
		for _, p := range slices.Concat(All(), Telemetry()) {
			tables = append(tables, p.Tables()...)
			if _, err := tx.Exec(ctx, `INSERT INTO projection_checkpoints (name, last_seq) VALUES ($1, 0)
				ON CONFLICT (name) DO UPDATE SET last_seq = 0, updated_at = now()`, p.Name()); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", NotifyChannel, p.Name()+":0"); err != nil {
				return err
			}
		}
		quoted := make([]string, len(tables))
		for i, t := range tables {
			quoted[i] = pgx.Identifier{t}.Sanitize()
		}
		_, err := tx.Exec(ctx, "TRUNCATE "+strings.Join(quoted, ", "))
		return err
	})
}

// Statuses reports every projection's checkpoint, lag behind streamLast and
// quarantined events.
func (q *Queries) Statuses(ctx context.Context, heads Heads) ([]Status, error) {
	return Statuses(ctx, q.pool, heads)
}

// Quarantined counts the quarantined events of each projection that has any.
func (q *Queries) Quarantined(ctx context.Context) (map[string]int64, error) {
	return quarantineCounts(ctx, q.pool)
}
