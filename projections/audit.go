package projections

import (
	"encoding/json"
	"time"

	"github.com/maestro-ml/maestro/events"
)

// Audit records every event as an audit entry, with secrets redacted.
type Audit struct{}

// Name implements Projection.
func (Audit) Name() string { return "audit" }

// Tables implements Projection.
func (Audit) Tables() []string { return []string{"audit_entries"} }

// Aggregates implements Projection: it reads every subject.
func (Audit) Aggregates() []string { return nil }

// Linger implements Lingering: no command waits for the audit trail, so
// its runner gathers up to 10 ms of events per transaction (a reader of the
// trail waits that much longer, at most, for a Maestro-Min-Sequence).
func (Audit) Linger() time.Duration { return 10 * time.Millisecond }

// Handles implements Projection: every event is audited.
func (Audit) Handles(string) bool { return true }

// Queue implements Projection: one INSERT of the whole batch from arrays
// (unnest), so a rebuild writes hundreds of entries per statement. Duplicates
// cannot occur because the runner skips events at or below the checkpoint.
func (Audit) Queue(b *Batch, evs []events.Envelope) error {
	if len(evs) == 0 {
		return nil
	}
	n := len(evs)
	seq := make([]int64, n)
	times := make([]time.Time, n)
	cols := make([][]string, 8) // event_id, type, actor, subject, correlation_id, causation_id, summary, data
	for i := range cols {
		cols[i] = make([]string, n)
	}
	for i, e := range evs {
		data, err := json.Marshal(events.Redacted(e))
		if err != nil {
			return err
		}
		seq[i], times[i] = int64(e.Sequence), e.Time
		for j, v := range []string{e.ID, e.Type, e.Actor.String(), e.Subject, e.CorrelationID, e.CausationID, events.Summary(e), string(data)} {
			cols[j][i] = v
		}
	}
	b.Queue(`INSERT INTO audit_entries (seq, event_id, time, type, actor, subject, correlation_id, causation_id, summary, data)
		SELECT s, id, t, ty, a, su, c, ca, sm, d::jsonb
		FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[])
			AS x(s, id, t, ty, a, su, c, ca, sm, d)`,
		seq, cols[0], times, cols[1], cols[2], cols[3], cols[4], cols[5], cols[6], cols[7])
	return nil
}

// All is the registry of every projection, in the order they are started.
func All() []Projection {
	return []Projection{Users{}, Sessions{}, Tokens{}, Audit{}, Projects{}, Models{}, Experiments{}, Runs{}, Jobs{}}
}
