package projections

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/maestro-ml/maestro/events"
)

// Audit records every event as an audit entry, with secrets redacted.
type Audit struct{}

// Name implements Projection.
func (Audit) Name() string { return "audit" }

// Tables implements Projection.
func (Audit) Tables() []string { return []string{"audit_entries"} }

// Apply implements Projection. COPY keeps rebuilds fast; duplicates cannot
// occur because the runner skips events at or below the checkpoint.
func (Audit) Apply(ctx context.Context, tx pgx.Tx, evs []events.Envelope) error {
	rows := make([][]any, 0, len(evs))
	for _, e := range evs {
		data, err := json.Marshal(events.Redacted(e))
		if err != nil {
			return err
		}
		rows = append(rows, []any{int64(e.Sequence), e.ID, e.Time, e.Type, e.Actor.String(), e.Subject,
			e.CorrelationID, e.CausationID, events.Summary(e), data})
	}
	_, err := tx.CopyFrom(ctx, pgx.Identifier{"audit_entries"},
		[]string{"seq", "event_id", "time", "type", "actor", "subject", "correlation_id", "causation_id", "summary", "data"},
		pgx.CopyFromRows(rows))
	if err != nil {
		return fmt.Errorf("copy audit entries: %w", err)
	}
	return nil
}

// All is the registry of every projection, in the order they are started.
func All() []Projection {
	return []Projection{Users{}, Sessions{}, Audit{}, Projects{}, Models{}}
}
