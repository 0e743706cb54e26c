package events_test

import (
	"errors"
	"testing"

	"github.com/maestro-ml/maestro/events"
)

// A retried atomic batch is refused without a sequence; the store must find
// the batch it duplicates by its ids, not take "the last message of one of
// its subjects", which may be a later command's (review finding 16).
func TestDuplicateBatchReportsStoredEvents(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := testCtx(t)
	a, b := userSubject(), userSubject()
	batch := []events.Append{
		{Event: roleChanged(t, a, "viewer"), Expect: events.Any},
		{Event: roleChanged(t, b, "viewer"), Expect: events.Any},
	}
	seq, err := s.Append(ctx, batch...)
	if err != nil {
		t.Fatal(err)
	}
	later, err := s.Append(ctx, events.Append{Event: roleChanged(t, b, "admin"), Expect: events.Any})
	if err != nil {
		t.Fatal(err)
	}
	dupSeq, err := s.Append(ctx, batch...)
	if !errors.Is(err, events.ErrDuplicate) {
		t.Fatalf("retried batch: err = %v, want ErrDuplicate", err)
	}
	if dupSeq != seq {
		t.Fatalf("retried batch reported sequence %d, want the stored batch's %d (not the later event's %d)", dupSeq, seq, later)
	}
	stored := events.StoredDuplicate(err)
	if len(stored) != 2 || stored[0].ID != batch[0].Event.ID || stored[1].ID != batch[1].Event.ID || stored[1].Sequence != seq {
		t.Fatalf("stored events %+v, want the batch's two events ending at %d", stored, seq)
	}

	// A single event: the ack names the original, checked by id.
	one := events.Append{Event: roleChanged(t, a, "member"), Expect: events.Any}
	oneSeq, err := s.Append(ctx, one)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, events.Append{Event: roleChanged(t, a, "x"), Expect: events.Any}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Append(ctx, one)
	if d := events.StoredDuplicate(err); got != oneSeq || len(d) != 1 || d[0].ID != one.Event.ID || d[0].Sequence != oneSeq {
		t.Fatalf("retried event: seq %d, stored %+v, err %v; want %d", got, d, err, oneSeq)
	}
}
