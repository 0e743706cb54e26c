package projections

import (
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/maestro-ml/maestro/events"
)

// Handles must say exactly which event types change a read model: the
// runner advances the checkpoint over the others without applying them,
// and commands wait only for projections that handle their events.
func TestHandlesMatchesWhatQueueWrites(t *testing.T) {
	for _, p := range All() {
		for _, ty := range events.Types() {
			e := events.Envelope{Sequence: 1, ID: "e1", Type: ty, Subject: "maestro.events.x.y", Time: time.Now(),
				Data: []byte(`{"model_id":"m","project_id":"p","user_id":"u","session_id":"s"}`)}
			b := &pgx.Batch{}
			if err := p.Queue(b, []events.Envelope{e}); err != nil {
				t.Fatalf("%s.Queue(%s): %v", p.Name(), ty, err)
			}
			if wrote := b.Len() > 0; wrote != p.Handles(ty) {
				t.Errorf("%s: Handles(%s) = %v, but Queue wrote %d statements", p.Name(), ty, p.Handles(ty), b.Len())
			}
		}
	}
}

// A runner reads only its projection's aggregates: every aggregate that
// carries a type the projection handles must be among them, or the
// projection would never see those events.
func TestAggregatesCoverHandledTypes(t *testing.T) {
	for _, p := range All() {
		read := p.Aggregates()
		if len(read) == 0 {
			continue // every subject
		}
		for _, ty := range events.Types() {
			if !p.Handles(ty) {
				continue
			}
			for _, agg := range events.AggregatesOf(ty) {
				if !slices.Contains(read, agg) {
					t.Errorf("%s handles %s, appended on %s subjects, but reads only %v", p.Name(), ty, agg, read)
				}
			}
		}
	}
}
