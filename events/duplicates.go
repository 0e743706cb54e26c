package events

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DuplicateError is ErrDuplicate with the events that are in fact stored
// under the appended ids: those of the earlier attempt of the same command.
// A retried command must answer from them, not from what it decided again
// (which JetStream dropped).
type DuplicateError struct {
	// Stored are the stored events whose ids the append carried, in
	// stream order. It holds at least one event.
	Stored []Envelope
}

func (e *DuplicateError) Error() string {
	return fmt.Sprintf("%v: stored at sequence %d", ErrDuplicate, e.Stored[len(e.Stored)-1].Sequence)
}

// Is makes errors.Is(err, ErrDuplicate) hold.
func (e *DuplicateError) Is(target error) bool { return target == ErrDuplicate }

// StoredDuplicate returns the events a duplicate append found stored, or nil
// when err is not a duplicate.
func StoredDuplicate(err error) []Envelope {
	var d *DuplicateError
	if errors.As(err, &d) {
		return d.Stored
	}
	return nil
}

// duplicateLookback is how far before now a duplicate's original is looked
// for: JetStream only detects duplicates within the stream's 2-minute
// window, and the rest allows for skew between this clock and the server's.
const duplicateLookback = 2*2*time.Minute + time.Minute

// FindStored returns the events on subjects stored at or after since whose
// ids are in ids, in stream order. It reads only those subjects' events since
// then (an ordered consumer filtered on them, starting by time), so its cost
// is bounded by the aggregates' recent traffic, not their history.
func (s *Store) FindStored(ctx context.Context, ids, subjects []string, since time.Time) ([]Envelope, error) {
	want := map[string]bool{}
	for _, id := range ids {
		if id != "" {
			want[id] = true
		}
	}
	subjects = slices.Compact(slices.Sorted(slices.Values(subjects)))
	if len(want) == 0 || len(subjects) == 0 {
		return nil, nil
	}
	// Everything to find is at or before each subject's current last
	// message; subjects with nothing since `since` need no reading at all.
	var target uint64
	for _, subj := range subjects {
		last, err := Attempts(ctx, func(ctx context.Context) (*jetstream.RawStreamMsg, error) {
			return s.stream.GetLastMsgForSubject(ctx, subj)
		})
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("find stored events on %s: %w", subj, err)
		}
		if !last.Time.Before(since) {
			target = max(target, last.Sequence)
		}
	}
	if target == 0 {
		return nil, nil
	}
	start := since
	cons, err := s.js.OrderedConsumer(ctx, s.streamName(), jetstream.OrderedConsumerConfig{
		FilterSubjects: subjects, DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &start})
	if err != nil {
		return nil, fmt.Errorf("find stored events: %w", err)
	}
	var out []Envelope
	for {
		batch, err := cons.Fetch(256, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return nil, fmt.Errorf("find stored events: %w", err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				return nil, fmt.Errorf("find stored events: %w", err)
			}
			if want[m.Headers().Get(nats.MsgIdHdr)] {
				env, err := FromHeaders(m.Subject(), m.Headers(), m.Data(), md.Sequence.Stream)
				if err != nil {
					return nil, err
				}
				out = append(out, env)
			}
			if md.Sequence.Stream >= target || len(out) == len(want) {
				return out, nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, fmt.Errorf("find stored events: %w", err)
		}
		if n == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			return nil, fmt.Errorf("find stored events: no messages up to sequence %d", target)
		}
	}
}

// locateDuplicate finds the stored events of a batch JetStream refused as a
// duplicate, by the batch's ids (an atomic batch's refusal carries no
// sequence). It is an error when none is found: then the batch was refused
// for a copy of an id outside the lookback, and claiming success would answer
// for events nobody can see.
func (s *Store) locateDuplicate(ctx context.Context, batch []Append) (*DuplicateError, error) {
	ids := make([]string, 0, len(batch))
	subjects := make([]string, 0, len(batch))
	for _, a := range batch {
		ids = append(ids, a.Event.ID)
		subjects = append(subjects, a.Event.Subject)
	}
	stored, err := s.FindStored(ctx, ids, subjects, time.Now().Add(-duplicateLookback))
	if err != nil {
		return nil, fmt.Errorf("locate duplicate batch: %w", err)
	}
	if len(stored) == 0 {
		return nil, fmt.Errorf("locate duplicate batch: none of its %d event ids is stored since %s", len(ids), duplicateLookback)
	}
	return &DuplicateError{Stored: stored}, nil
}

// storedOne returns the event a single duplicate publish names by sequence,
// checking that it is the one with the appended id.
func (s *Store) storedOne(ctx context.Context, a Append, seq uint64) (*DuplicateError, error) {
	env, err := s.Get(ctx, seq)
	if err != nil {
		return nil, fmt.Errorf("locate duplicate of %s: %w", a.Event.ID, err)
	}
	if env.ID != a.Event.ID {
		return nil, fmt.Errorf("locate duplicate of %s: sequence %d holds %s", a.Event.ID, seq, env.ID)
	}
	return &DuplicateError{Stored: []Envelope{env}}, nil
}
