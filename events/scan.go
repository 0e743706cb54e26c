package events

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"
)

// ScanBatch is how many events one batched direct get asks for.
const ScanBatch = 512

// scanBatchBytes bounds one batch's payload (the server stops early).
const scanBatchBytes = 4 << 20

// Scan calls f with each event of subject stored after sequence after, in
// stream order, until f returns false or an error, or the subject has no
// more events. Events come in batched direct gets (JetStream's
// DIRECT.GET with "batch" and "next_by_subj", nats-server ≥ 2.11, through
// orbit.go's jetstreamext), a request per ScanBatch events instead of one
// per event as Load does, and only one batch is held at a time, so a long
// history is never all in memory. ctx is checked between events.
//
// A replicated stream has no direct gets (OpenStore: a follower may lag):
// there Scan asks the leader for one event at a time, as Load does.
func (s *Store) Scan(ctx context.Context, subject string, after uint64, f func(Envelope) (bool, error)) error {
	if !s.stream.CachedInfo().Config.AllowDirect {
		return s.scanLeader(ctx, subject, after, f)
	}
	for {
		msgs, err := jetstreamext.GetBatch(ctx, s.js, s.streamName(), ScanBatch,
			jetstreamext.GetBatchSeq(after+1), jetstreamext.GetBatchSubject(subject), jetstreamext.GetBatchMaxBytes(scanBatchBytes))
		if errors.Is(err, nats.ErrNoResponders) {
			// Direct gets turned off since the store opened (the stream
			// scaled out by an operator): the leader answers.
			return s.scanLeader(ctx, subject, after, f)
		}
		if err != nil {
			return fmt.Errorf("scan %s from %d: %w", subject, after+1, err)
		}
		n, pending := 0, "?"
		for raw, err := range msgs {
			if errors.Is(err, jetstreamext.ErrNoMessages) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("scan %s from %d: %w", subject, after+1, err)
			}
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("scan %s: %w", subject, err)
			}
			env, err := FromHeaders(raw.Subject, raw.Header, raw.Data, raw.Sequence)
			if err != nil {
				return fmt.Errorf("scan %s at %d: %w", subject, raw.Sequence, err)
			}
			n++
			after, pending = raw.Sequence, raw.Header.Get("Nats-Num-Pending")
			more, err := f(env)
			if err != nil || !more {
				return err
			}
		}
		switch {
		case pending == "0": // the server's count of what matches after this event
			return nil
		case n == 0:
			// The request timed out (the iterator ends quietly on a
			// timeout): say so rather than pass off a truncated history.
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("scan %s from %d: %w", subject, after+1, err)
			}
			return fmt.Errorf("scan %s from %d: no answer from the stream", subject, after+1)
		}
	}
}

// scanLeader is Scan through the stream's leader, an event per request.
func (s *Store) scanLeader(ctx context.Context, subject string, after uint64, f func(Envelope) (bool, error)) error {
	for {
		raw, err := Attempts(ctx, func(ctx context.Context) (*jetstream.RawStreamMsg, error) {
			return s.stream.GetMsg(ctx, after+1, jetstream.WithGetMsgSubject(subject))
		})
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("scan %s from %d: %w", subject, after+1, err)
		}
		env, err := FromHeaders(raw.Subject, raw.Header, raw.Data, raw.Sequence)
		if err != nil {
			return fmt.Errorf("scan %s at %d: %w", subject, raw.Sequence, err)
		}
		after = raw.Sequence
		if more, err := f(env); err != nil || !more {
			return err
		}
	}
}
