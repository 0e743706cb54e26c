package events_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/internal/testnats"
)

// newStore starts an embedded nats-server with its file store in a temp dir
// and opens the event store on it.
func newStore(t *testing.T) *events.Store { return testnats.Store(t) }

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var testActor = events.Actor{Kind: events.ActorUser, ID: "u-1"}

// event builds an envelope with a random id on subject.
func event(t *testing.T, subject, typ string, data any) events.Envelope {
	t.Helper()
	e, err := events.New(events.Meta{Actor: testActor, CorrelationID: "corr-1", CausationID: "cause-1"}, subject, typ, 0, data)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func userSubject() string { return events.Subject(events.AggUser, uuid.NewString()) }

func roleChanged(t *testing.T, subject, to string) events.Envelope {
	return event(t, subject, events.UserRoleChanged, events.UserRoleChangedData{UserID: "x", From: "viewer", To: to})
}

func lastSeq(t *testing.T, ctx context.Context, s *events.Store) uint64 {
	t.Helper()
	n, err := s.LastSequence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func subjectVersion(t *testing.T, ctx context.Context, s *events.Store, subject string) (int, uint64) {
	t.Helper()
	evs, v, err := s.Load(ctx, subject, 0)
	if err != nil {
		t.Fatal(err)
	}
	return len(evs), v
}

func sameEnvelope(t *testing.T, got, want events.Envelope) {
	t.Helper()
	if got.ID != want.ID || got.Type != want.Type || got.Subject != want.Subject || !got.Time.Equal(want.Time) ||
		got.Actor != want.Actor || got.CorrelationID != want.CorrelationID || got.CausationID != want.CausationID ||
		!bytes.Equal(got.Data, want.Data) || got.Sequence != want.Sequence {
		t.Fatalf("envelope mismatch\n got  %+v\n want %+v", got, want)
	}
}

func TestAppendLoadRoundTrip(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := testCtx(t)
	subj := userSubject()
	meta := events.Meta{Actor: testActor, CorrelationID: "corr-42", CausationID: "cause-7",
		Time: time.Date(2025, 3, 4, 5, 6, 7, 123456789, time.FixedZone("X", 3600))}
	want, err := events.New(meta, subj, events.UserRegistered, 0,
		events.UserRegisteredData{UserID: "u-1", Email: "ada@example.com", Name: "Ada", Role: "viewer", Source: "test"})
	if err != nil {
		t.Fatal(err)
	}
	seq, err := s.Append(ctx, events.Append{Event: want, Expect: 0})
	if err != nil {
		t.Fatal(err)
	}
	if seq != 1 {
		t.Fatalf("first append got seq %d, want 1", seq)
	}
	want.Sequence = seq

	evs, version, err := s.Load(ctx, subj, 0)
	if err != nil {
		t.Fatal(err)
	}
	if version != seq || len(evs) != 1 {
		t.Fatalf("Load = %d events, version %d; want 1, %d", len(evs), version, seq)
	}
	sameEnvelope(t, evs[0], want)
	got, err := s.Get(ctx, seq)
	if err != nil {
		t.Fatal(err)
	}
	sameEnvelope(t, got, want)

	// The stored message itself is a CloudEvent in binary mode: ce-* headers
	// and plain JSON data, readable without a Maestro library.
	stream, err := s.JetStream().Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := stream.GetMsg(ctx, seq)
	if err != nil {
		t.Fatal(err)
	}
	if raw.Subject != subj {
		t.Fatalf("raw subject %q, want %q", raw.Subject, subj)
	}
	wantHeaders := map[string]string{
		"ce-specversion":   "1.0",
		"ce-id":            want.ID,
		"ce-source":        "maestro",
		"ce-type":          events.UserRegistered,
		"ce-subject":       subj,
		"ce-time":          "2025-03-04T04:06:07.123456789Z",
		"ce-actorkind":     "user",
		"ce-actorid":       "u-1",
		"ce-correlationid": "corr-42",
		"ce-causationid":   "cause-7",
		"content-type":     "application/json",
		nats.MsgIdHdr:      want.ID,
	}
	for k, v := range wantHeaders {
		if got := raw.Header.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	var data events.UserRegisteredData
	if err := json.Unmarshal(raw.Data, &data); err != nil {
		t.Fatalf("raw data is not plain JSON: %v: %s", err, raw.Data)
	}
	if data.Email != "ada@example.com" || data.Name != "Ada" {
		t.Fatalf("raw data = %+v", data)
	}
}

func TestAppendExpectedSequenceConflict(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := testCtx(t)
	subj := userSubject()
	other := userSubject()
	if _, err := s.Append(ctx, events.Append{Event: roleChanged(t, other, "member"), Expect: events.Any}); err != nil {
		t.Fatal(err)
	}
	v1, err := s.Append(ctx, events.Append{Event: roleChanged(t, subj, "member"), Expect: 0})
	if err != nil {
		t.Fatal(err)
	}
	// Expect 0 on a subject that has an event conflicts.
	if _, err := s.Append(ctx, events.Append{Event: roleChanged(t, subj, "admin"), Expect: 0}); !errors.Is(err, events.ErrConflict) {
		t.Fatalf("expect 0 on non-empty subject: err = %v, want ErrConflict", err)
	}
	// A stale version conflicts; the subject's version is per subject, not the
	// stream's last sequence.
	if _, err := s.Append(ctx, events.Append{Event: roleChanged(t, subj, "admin"), Expect: v1 - 1}); !errors.Is(err, events.ErrConflict) {
		t.Fatalf("stale version: err = %v, want ErrConflict", err)
	}
	if _, err := s.Append(ctx, events.Append{Event: roleChanged(t, subj, "admin"), Expect: v1 + 1}); !errors.Is(err, events.ErrConflict) {
		t.Fatalf("future version: err = %v, want ErrConflict", err)
	}
	if n, v := subjectVersion(t, ctx, s, subj); n != 1 || v != v1 {
		t.Fatalf("after conflicts subject has %d events at version %d; want 1 at %d", n, v, v1)
	}
	v2, err := s.Append(ctx, events.Append{Event: roleChanged(t, subj, "admin"), Expect: v1})
	if err != nil {
		t.Fatalf("append at the right version: %v", err)
	}
	if v2 != v1+1 {
		t.Fatalf("seq %d, want %d", v2, v1+1)
	}
	// Any skips the check.
	if _, err := s.Append(ctx, events.Append{Event: roleChanged(t, subj, "viewer"), Expect: events.Any}); err != nil {
		t.Fatal(err)
	}
	if got := lastSeq(t, ctx, s); got != 4 {
		t.Fatalf("stream last seq %d, want 4", got)
	}
}

func TestAtomicBatchAllOrNothing(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := testCtx(t)

	// A successful batch stores every event, in order, with contiguous sequences.
	a, b := userSubject(), userSubject()
	last, err := s.Append(ctx,
		events.Append{Event: roleChanged(t, a, "member"), Expect: 0},
		events.Append{Event: roleChanged(t, b, "member"), Expect: 0})
	if err != nil {
		t.Fatal(err)
	}
	if last != 2 {
		t.Fatalf("batch last seq %d, want 2", last)
	}
	if _, va := subjectVersion(t, ctx, s, a); va != 1 {
		t.Fatalf("first subject version %d, want 1", va)
	}

	cases := []struct {
		name       string
		firstFails bool
	}{
		{"second expectation fails", false},
		{"first expectation fails", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := lastSeq(t, ctx, s)
			fresh, taken := userSubject(), userSubject()
			if _, err := s.Append(ctx, events.Append{Event: roleChanged(t, taken, "member"), Expect: 0}); err != nil {
				t.Fatal(err)
			}
			before++
			batch := []events.Append{
				{Event: roleChanged(t, fresh, "admin"), Expect: 0},
				{Event: roleChanged(t, taken, "admin"), Expect: 0}, // taken has an event: conflict
			}
			if tc.firstFails {
				batch[0], batch[1] = batch[1], batch[0]
			}
			if _, err := s.Append(ctx, batch...); !errors.Is(err, events.ErrConflict) {
				t.Fatalf("err = %v, want ErrConflict", err)
			}
			if n, _ := subjectVersion(t, ctx, s, fresh); n != 0 {
				t.Fatalf("the other subject of a failed batch gained %d events", n)
			}
			if n, _ := subjectVersion(t, ctx, s, taken); n != 1 {
				t.Fatalf("conflicting subject has %d events, want 1", n)
			}
			if got := lastSeq(t, ctx, s); got != before {
				t.Fatalf("stream last seq %d after failed batch, want %d", got, before)
			}
			// The store stays usable: the same batch with a right expectation lands.
			batch = []events.Append{
				{Event: roleChanged(t, fresh, "admin"), Expect: 0},
				{Event: roleChanged(t, taken, "admin"), Expect: before},
			}
			if _, err := s.Append(ctx, batch...); err != nil {
				t.Fatalf("retry with correct versions: %v", err)
			}
		})
	}
}

func TestDuplicateEventID(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := testCtx(t)
	subj := userSubject()
	e := roleChanged(t, subj, "member")
	seq, err := s.Append(ctx, events.Append{Event: e, Expect: events.Any})
	if err != nil {
		t.Fatal(err)
	}
	dupSeq, err := s.Append(ctx, events.Append{Event: e, Expect: events.Any})
	if !errors.Is(err, events.ErrDuplicate) {
		t.Fatalf("second append of the same id: err = %v, want ErrDuplicate", err)
	}
	if dupSeq != seq {
		t.Fatalf("duplicate reported seq %d, want the original %d", dupSeq, seq)
	}
	if n, _ := subjectVersion(t, ctx, s, subj); n != 1 {
		t.Fatalf("subject has %d events after a duplicate, want 1", n)
	}
	if got := lastSeq(t, ctx, s); got != seq {
		t.Fatalf("stream last seq %d, want %d", got, seq)
	}

	// Deterministic ids from an idempotency key collide the same way.
	meta := events.Meta{Actor: testActor, IdempotencyKey: "key-1"}
	e1, _ := events.New(meta, subj, events.UserRoleChanged, 0, events.UserRoleChangedData{To: "admin"})
	e2, _ := events.New(meta, subj, events.UserRoleChanged, 0, events.UserRoleChangedData{To: "admin"})
	if e1.ID != e2.ID {
		t.Fatalf("idempotency key did not give deterministic ids: %s vs %s", e1.ID, e2.ID)
	}
	if _, err := s.Append(ctx, events.Append{Event: e1, Expect: events.Any}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, events.Append{Event: e2, Expect: events.Any}); !errors.Is(err, events.ErrDuplicate) {
		t.Fatalf("retried command: err = %v, want ErrDuplicate", err)
	}
	if n, _ := subjectVersion(t, ctx, s, subj); n != 2 {
		t.Fatalf("subject has %d events, want 2", n)
	}

	// A retried atomic batch is dropped whole.
	other := userSubject()
	batch := []events.Append{
		{Event: roleChanged(t, subj, "viewer"), Expect: events.Any},
		{Event: roleChanged(t, other, "viewer"), Expect: events.Any},
	}
	if _, err := s.Append(ctx, batch...); err != nil {
		t.Fatal(err)
	}
	before := lastSeq(t, ctx, s)
	if _, err := s.Append(ctx, batch...); !errors.Is(err, events.ErrDuplicate) {
		t.Fatalf("retried batch: err = %v, want ErrDuplicate", err)
	}
	if got := lastSeq(t, ctx, s); got != before {
		t.Fatalf("retried batch stored something: last seq %d, want %d", got, before)
	}
}

func TestLoadAfter(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := testCtx(t)
	a, b := userSubject(), userSubject()
	var aSeqs []uint64
	for i := range 4 {
		seq, err := s.Append(ctx, events.Append{Event: roleChanged(t, a, fmt.Sprint("r", i)), Expect: events.Any})
		if err != nil {
			t.Fatal(err)
		}
		aSeqs = append(aSeqs, seq)
		if _, err := s.Append(ctx, events.Append{Event: roleChanged(t, b, "x"), Expect: events.Any}); err != nil {
			t.Fatal(err)
		}
	}
	for i, after := range append([]uint64{0}, aSeqs...) {
		evs, version, err := s.Load(ctx, a, after)
		if err != nil {
			t.Fatal(err)
		}
		if version != aSeqs[3] {
			t.Fatalf("Load(after %d) version %d, want %d", after, version, aSeqs[3])
		}
		want := aSeqs[i:]
		if len(evs) != len(want) {
			t.Fatalf("Load(after %d) = %d events, want %d", after, len(evs), len(want))
		}
		for j, e := range evs {
			if e.Sequence != want[j] || e.Subject != a {
				t.Fatalf("Load(after %d)[%d] = seq %d on %s, want %d on %s", after, j, e.Sequence, e.Subject, want[j], a)
			}
		}
	}
	// Between two events of the subject, with other subjects' events in the gap.
	evs, _, err := s.Load(ctx, a, aSeqs[1]+1)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[0].Sequence != aSeqs[2] {
		t.Fatalf("Load(after %d) = %+v", aSeqs[1]+1, evs)
	}
	// An empty subject has version 0.
	if evs, v, err := s.Load(ctx, userSubject(), 0); err != nil || len(evs) != 0 || v != 0 {
		t.Fatalf("empty subject: %d events, version %d, err %v", len(evs), v, err)
	}
}

func TestConcurrentAppendsOneWins(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := testCtx(t)
	subj := userSubject()
	v, err := s.Append(ctx, events.Append{Event: roleChanged(t, subj, "member"), Expect: 0})
	if err != nil {
		t.Fatal(err)
	}
	const n = 16
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		e := roleChanged(t, subj, fmt.Sprint("role-", i))
		wg.Go(func() {
			<-start
			_, errs[i] = s.Append(ctx, events.Append{Event: e, Expect: v})
		})
	}
	close(start)
	wg.Wait()
	wins := 0
	for i, err := range errs {
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, events.ErrConflict):
			t.Fatalf("append %d: unexpected error %v", i, err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d of %d concurrent appends at version %d won, want exactly 1", wins, n, v)
	}
	if cnt, _ := subjectVersion(t, ctx, s, subj); cnt != 2 {
		t.Fatalf("subject has %d events, want 2", cnt)
	}
}

func TestConcurrentBatchesOneWins(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := testCtx(t)
	// Many registrations racing for one reservation subject (rule 2): each
	// batch reserves the same e-mail and creates its own user.
	email := events.ReservationSubject(events.AggEmail, "ada@example.com")
	const n = 8
	errs := make([]error, n)
	users := make([]string, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		users[i] = userSubject()
		batch := []events.Append{
			{Event: event(t, email, events.EmailReserved, events.EmailReservedData{Email: "ada@example.com", UserID: users[i]}), Expect: 0},
			{Event: roleChanged(t, users[i], "member"), Expect: 0},
		}
		wg.Go(func() {
			<-start
			_, errs[i] = s.Append(ctx, batch...)
		})
	}
	close(start)
	wg.Wait()
	wins := 0
	for i, err := range errs {
		cnt, _ := subjectVersion(t, ctx, s, users[i])
		switch {
		case err == nil:
			wins++
			if cnt != 1 {
				t.Fatalf("winner %d: user subject has %d events", i, cnt)
			}
		case errors.Is(err, events.ErrConflict):
			if cnt != 0 {
				t.Fatalf("loser %d: user subject has %d events, want 0", i, cnt)
			}
		default:
			t.Fatalf("batch %d: unexpected error %v", i, err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d concurrent reservations won, want exactly 1", wins)
	}
	if got := lastSeq(t, ctx, s); got != 2 {
		t.Fatalf("stream last seq %d, want 2", got)
	}
}

func TestFollowDeliversInOrderAfter(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := testCtx(t)
	subj := userSubject()
	for i := range 5 {
		if _, err := s.Append(ctx, events.Append{Event: roleChanged(t, subj, fmt.Sprint(i)), Expect: events.Any}); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := s.Follow(ctx, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan uint64, 16)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		md, err := m.Metadata()
		if err == nil {
			got <- md.Sequence.Stream
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Stop()
	// Events appended while following arrive too.
	if _, err := s.Append(ctx, events.Append{Event: roleChanged(t, subj, "late"), Expect: events.Any}); err != nil {
		t.Fatal(err)
	}
	for want := uint64(3); want <= 6; want++ {
		select {
		case seq := <-got:
			if seq != want {
				t.Fatalf("followed seq %d, want %d", seq, want)
			}
		case <-ctx.Done():
			t.Fatalf("timed out waiting for seq %d", want)
		}
	}
}

// A filtered follow delivers only the matching subjects' events, and NextOn
// finds the first match at or after a sequence (0 when there is none).
func TestFollowFilterAndNextOn(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := testCtx(t)
	user, other := userSubject(), events.Subject(events.AggModel, "m1")
	var matching []uint64
	for i := range 6 {
		subj := user
		if i%2 == 1 {
			subj = other
		}
		seq, err := s.Append(ctx, events.Append{Event: roleChanged(t, subj, fmt.Sprint(i)), Expect: events.Any})
		if err != nil {
			t.Fatal(err)
		}
		if subj == other {
			matching = append(matching, seq)
		}
	}
	filter := events.Subject(events.AggModel, ">")
	for _, c := range []struct{ from, want uint64 }{{1, matching[0]}, {matching[0], matching[0]}, {matching[0] + 1, matching[1]}, {matching[2] + 1, 0}} {
		got, err := s.NextOn(ctx, c.from, filter)
		if err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("NextOn(%d) = %d, want %d", c.from, got, c.want)
		}
	}
	cons, err := s.Follow(ctx, 0, []string{filter})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan uint64, 16)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		if md, err := m.Metadata(); err == nil {
			got <- md.Sequence.Stream
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Stop()
	for _, want := range matching {
		select {
		case seq := <-got:
			if seq != want {
				t.Fatalf("followed seq %d, want %d (only %s events)", seq, want, filter)
			}
		case <-ctx.Done():
			t.Fatalf("timed out waiting for seq %d", want)
		}
	}
}
