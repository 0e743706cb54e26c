package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// HdrSourceSequence names, on a copy in MAESTRO_PUBLIC, the event's
// sequence in MAESTRO_EVENTS: the republisher resumes after the last copy's,
// and subscribers may order or compare by it.
const HdrSourceSequence = "Maestro-Sequence"

// OpenPublicStream creates or updates MAESTRO_PUBLIC through js, a
// connection to the public account: file storage, kept for ever like the
// history it copies, and no deletes or purges (an outside reader may rely
// on every copy staying).
func OpenPublicStream(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.Stream, error) {
	if replicas <= 0 {
		replicas = 1
	}
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        PublicStreamName,
		Description: "Redacted copies of MAESTRO_EVENTS for outside subscribers (secret fields removed); see /api/v1/asyncapi.json",
		Subjects:    []string{PublicAllSubjects},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardNew,
		Replicas:    replicas,
		Duplicates:  2 * time.Minute,
		DenyDelete:  true,
		DenyPurge:   true,
		AllowDirect: true,
	})
	if err != nil {
		return nil, fmt.Errorf("create stream %s: %w", PublicStreamName, err)
	}
	return s, nil
}

// Republisher copies every catalogued event of MAESTRO_EVENTS, in stream
// order, to MAESTRO_PUBLIC with its secret fields removed (Redacted). Its
// position is the stream itself: the last copy names its source sequence,
// and each copy is appended with the copy stream's expected last sequence,
// so copies are in order and never doubled even when several workers run
// one (the loser of a race re-reads the position and goes on).
type Republisher struct {
	src *Store
	dst jetstream.Stream
	js  jetstream.JetStream
	log *slog.Logger
}

// NewRepublisher copies from src (the event store) into the stream dst,
// opened through js (OpenPublicStream).
func NewRepublisher(src *Store, js jetstream.JetStream, dst jetstream.Stream, log *slog.Logger) *Republisher {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Republisher{src: src, dst: dst, js: js, log: log}
}

// Run copies until ctx ends, starting again after a failure (a lost race,
// NATS unavailable) after a short pause.
func (r *Republisher) Run(ctx context.Context) {
	backoff := 250 * time.Millisecond
	for ctx.Err() == nil {
		err := r.pass(ctx)
		if ctx.Err() != nil {
			return
		}
		r.log.Warn("republisher: restarting", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// Position is the last copied source sequence and the copy stream's last
// sequence.
func (r *Republisher) Position(ctx context.Context) (source, last uint64, err error) {
	info, err := Attempts(ctx, func(ctx context.Context) (*jetstream.StreamInfo, error) { return r.dst.Info(ctx) })
	if err != nil {
		return 0, 0, fmt.Errorf("%s info: %w", PublicStreamName, err)
	}
	last = info.State.LastSeq
	if last == 0 {
		return 0, 0, nil
	}
	m, err := Attempts(ctx, func(ctx context.Context) (*jetstream.RawStreamMsg, error) { return r.dst.GetMsg(ctx, last) })
	if err != nil {
		return 0, 0, fmt.Errorf("%s last message %d: %w", PublicStreamName, last, err)
	}
	source, err = strconv.ParseUint(m.Header.Get(HdrSourceSequence), 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("%s message %d has no %s: %w", PublicStreamName, last, HdrSourceSequence, err)
	}
	return source, last, nil
}

// copyBatch bounds the copies in flight: appended asynchronously, each
// with the copy stream's expected last sequence, so a batch costs about
// one round trip instead of one per event.
const copyBatch = 256

// pass copies from the current position until an error or ctx's end.
func (r *Republisher) pass(ctx context.Context) error {
	source, last, err := r.Position(ctx)
	if err != nil {
		return err
	}
	cons, err := r.src.Follow(ctx, source, []string{AllSubjects})
	if err != nil {
		return err
	}
	futures := make([]jetstream.PubAckFuture, 0, copyBatch)
	for ctx.Err() == nil {
		batch, err := cons.Fetch(copyBatch, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return fmt.Errorf("republisher: fetch: %w", err)
		}
		futures = futures[:0]
		for m := range batch.Messages() {
			md, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("republisher: metadata: %w", err)
			}
			out, ok := PublicCopy(m.Subject(), m.Headers(), m.Data(), md.Sequence.Stream)
			if !ok {
				continue // not in the contract: never copied
			}
			// The k-th copy of the batch expects the k-1 before it stored:
			// any refusal (a lost race, a duplicate) refuses the rest too,
			// so the copy never has a gap; the next pass re-reads.
			f, err := r.js.PublishMsgAsync(out, jetstream.WithExpectLastSequence(last+uint64(len(futures))))
			if err != nil {
				return fmt.Errorf("republisher: copy of %d: %w", md.Sequence.Stream, err)
			}
			futures = append(futures, f)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return fmt.Errorf("republisher: fetch: %w", err)
		}
		for _, f := range futures {
			select {
			case ack := <-f.Ok():
				last = ack.Sequence
			case err := <-f.Err():
				return fmt.Errorf("republisher: copy: %w", err)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return ctx.Err()
}

// PublicCopy is the message the republisher appends to MAESTRO_PUBLIC for
// the message (subject, h, data) at sequence seq of MAESTRO_EVENTS, and
// false for one it does not copy: only Maestro CloudEvents of catalogued
// types are copied (deny by default: anything else may hold what the
// contract does not describe), with the documented headers (Headers) and
// HdrSourceSequence, and without the type's secret fields.
func PublicCopy(subject string, h nats.Header, data []byte, seq uint64) (*nats.Msg, bool) {
	e, err := FromHeaders(subject, h, data, seq)
	if err != nil || AggregatesOf(e.Type) == nil {
		return nil, false
	}
	out := nats.NewMsg(PublicSubject(subject))
	// The documented headers only: the stored message also has the
	// append's own (an atomic batch's Nats-Batch-*), which would make the
	// copy a batch too.
	for _, d := range Headers() {
		if v := h.Get(d.Name); v != "" {
			out.Header.Set(d.Name, v)
		}
	}
	out.Header.Set(HdrSourceSequence, strconv.FormatUint(seq, 10))
	out.Data = data
	if NeedsRedaction(e.Type) {
		red := Redacted(e)
		if red == nil {
			return nil, false // data that is not an object: nothing safe to copy
		}
		b, err := json.Marshal(red)
		if err != nil {
			return nil, false
		}
		out.Data = b
	}
	return out, true
}
