package events_test

import (
	"errors"
	"testing"
	"time"

	"github.com/maestro-ml/maestro/events"
)

// ObserveAppends sees every append with its duration and outcome: the
// platform turns these into maestro_event_append_duration_seconds and
// maestro_event_append_conflicts_total.
func TestObserveAppends(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := testCtx(t)
	type seen struct {
		took time.Duration
		err  error
	}
	var got []seen
	s.ObserveAppends(func(took time.Duration, err error) { got = append(got, seen{took, err}) })
	subj := userSubject()
	if _, err := s.Append(ctx, events.Append{Event: roleChanged(t, subj, "member"), Expect: 0}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, events.Append{Event: roleChanged(t, subj, "admin"), Expect: 0}); !errors.Is(err, events.ErrConflict) {
		t.Fatalf("stale append: %v, want ErrConflict", err)
	}
	if len(got) != 2 || got[0].err != nil || !errors.Is(got[1].err, events.ErrConflict) || got[0].took <= 0 || got[1].took <= 0 {
		t.Fatalf("observed %+v, want a success then a conflict, each with its duration", got)
	}
}
