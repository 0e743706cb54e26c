package events

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A replicated stream has no direct gets (OpenStore turns them off): Scan
// reads through the leader there, and must return the same events as with
// direct gets. A retried command's replay (LoadAt) depends on it; with the
// batched direct get alone it answered 503 for ever on a NATS cluster.
func TestScanWithoutDirectGets(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc := embeddedConn(t, t.TempDir())
	s, err := OpenStore(ctx, nc, StoreConfig{Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	a, b := Subject(AggModel, "scan-a"), Subject(AggModel, "scan-b")
	for i := range 12 {
		subj := a
		if i%3 == 2 {
			subj = b
		}
		e, err := New(Meta{Actor: Actor{Kind: ActorSystem, ID: "test"}}, subj, ModelCreated, i, map[string]int{"i": i})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Append(ctx, Append{Event: e, Expect: Any}); err != nil {
			t.Fatal(err)
		}
	}
	scan := func(after uint64, most int) []uint64 {
		t.Helper()
		var seqs []uint64
		err := s.Scan(ctx, a, after, func(e Envelope) (bool, error) {
			if e.Subject != a {
				t.Errorf("scan of %s returned an event on %s", a, e.Subject)
			}
			seqs = append(seqs, e.Sequence)
			return len(seqs) < most, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return seqs
	}
	direct := scan(0, 100)
	if len(direct) != 8 {
		t.Fatalf("direct gets found %d events on %s, want 8: %v", len(direct), a, direct)
	}

	cfg := s.stream.CachedInfo().Config
	cfg.AllowDirect = false
	if s.stream, err = s.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if got := scan(0, 100); !slices.Equal(got, direct) {
		t.Fatalf("through the leader: %v, with direct gets: %v", got, direct)
	}
	if got := scan(direct[2], 100); !slices.Equal(got, direct[3:]) {
		t.Fatalf("through the leader after %d: %v, want %v", direct[2], got, direct[3:])
	}
	if got := scan(0, 2); !slices.Equal(got, direct[:2]) {
		t.Fatalf("a scan stopped after two events returned %v", got)
	}
}

// What a repeated attempt may fix (a stream without a leader yet) and what
// it may not (a refusal, a full store).
func TestTransient(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{context.DeadlineExceeded, true},
		{fmt.Errorf("publish: %w", nats.ErrNoResponders), true},
		{nats.ErrTimeout, true},
		{&jetstream.APIError{Code: 503, ErrorCode: 10008}, true},
		{&jetstream.APIError{Code: 503, ErrorCode: 10163}, true},
		{&jetstream.APIError{Code: 409, ErrorCode: 10158}, true},
		{&jetstream.APIError{Code: 503, ErrorCode: 10077, Description: "maximum bytes exceeded"}, false},
		{&jetstream.APIError{Code: 400, ErrorCode: 10071}, false},
		{ErrConflict, false},
		{context.Canceled, false},
	} {
		if got := Transient(tt.err); got != tt.want {
			t.Errorf("Transient(%v) = %t, want %t", tt.err, got, tt.want)
		}
	}
}

// Attempts repeats what a new leader would answer, and nothing else; out
// of time after such a failure it answers with the deadline (a 503 for the
// API), not with the last attempt's own refusal.
func TestAttempts(t *testing.T) {
	calls := 0
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	_, err := Attempts(ctx, func(context.Context) (int, error) {
		calls++
		return 0, &jetstream.APIError{Code: 409, ErrorCode: 10158}
	})
	if !errors.Is(err, context.DeadlineExceeded) || calls < 2 {
		t.Fatalf("transient failures until the deadline: %v after %d calls, want the deadline after repeats", err, calls)
	}
	calls = 0
	_, err = Attempts(context.Background(), func(context.Context) (int, error) {
		calls++
		return 0, ErrConflict
	})
	if !errors.Is(err, ErrConflict) || calls != 1 {
		t.Fatalf("a conflict: %v after %d calls, want it at once", err, calls)
	}
	v, err := Attempts(context.Background(), func(context.Context) (int, error) {
		calls++
		if calls < 3 {
			return 0, nats.ErrNoResponders
		}
		return 7, nil
	})
	if err != nil || v != 7 {
		t.Fatalf("no responders, then an answer: %d, %v", v, err)
	}
}

// Why a single-replica stream's appends are never repeated: it checks the
// expected sequence before the message id, so the repeat of a stored
// append is refused as a conflict (a replicated stream answers it as a
// duplicate), and a command deciding again without derived ids would
// append twice.
func TestSingleReplicaRepeatIsAConflict(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := OpenStore(ctx, embeddedConn(t, t.TempDir()), StoreConfig{Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	if s.replicated() {
		t.Fatal("the embedded single-node stream counts as replicated: its appends would be repeated")
	}
	e, err := New(Meta{Actor: Actor{Kind: ActorSystem, ID: "test"}}, Subject(AggModel, "repeat"), ModelCreated, 0, map[string]int{"i": 1})
	if err != nil {
		t.Fatal(err)
	}
	a := Append{Event: e, Expect: 0}
	if _, err := s.js.PublishMsg(ctx, message(a)); err != nil {
		t.Fatal(err)
	}
	_, err = s.js.PublishMsg(ctx, message(a))
	if err == nil || !errors.Is(classify(e, err), ErrConflict) {
		t.Fatalf("the same append again on one replica: %v; want a conflict (if this changed, repeats may be safe here too)", err)
	}
}
