package projections

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Status is one projection's progress.
type Status struct {
	Name      string    `json:"name"`
	LastSeq   uint64    `json:"last_seq"`
	Lag       uint64    `json:"lag"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Statuses reports every projection's checkpoint and lag behind streamLast.
func Statuses(ctx context.Context, pool *pgxpool.Pool, streamLast uint64) ([]Status, error) {
	out := make([]Status, 0, len(All()))
	for _, p := range All() {
		s := Status{Name: p.Name()}
		var seq int64
		err := pool.QueryRow(ctx, "SELECT last_seq, updated_at FROM projection_checkpoints WHERE name = $1", p.Name()).Scan(&seq, &s.UpdatedAt)
		if err != nil && err != pgx.ErrNoRows {
			return nil, fmt.Errorf("checkpoint %s: %w", p.Name(), err)
		}
		s.LastSeq = uint64(seq)
		if streamLast > s.LastSeq {
			s.Lag = streamLast - s.LastSeq
		}
		out = append(out, s)
	}
	return out, nil
}

// Reset empties every projection and rewinds its checkpoint to zero in one
// transaction. Running runners notice the rewind and replay from the start.
func Reset(ctx context.Context, pool *pgxpool.Pool) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		var tables []string
		for _, p := range All() {
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

// Statuses reports every projection's checkpoint and lag behind streamLast.
func (q *Queries) Statuses(ctx context.Context, streamLast uint64) ([]Status, error) {
	return Statuses(ctx, q.pool, streamLast)
}
