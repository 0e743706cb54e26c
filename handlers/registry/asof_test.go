package registry_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers/registry"
	"github.com/maestro-ml/maestro/internal/testnats"
)

// Point-in-time reads against a real event store: ModelAsOf (batched reads,
// checkpoints) must answer exactly what the plain fold answers — every
// event of the model in stream order up to the first whose time is after
// as_of — whatever order the reads come in.

// asOfFixture is a store holding one model with a long history.
type asOfFixture struct {
	store   *events.Store
	modelID string
	times   []time.Time // of the model's events, in stream order
}

// newAsOfFixture appends a model with one version and n artifact events
// (plus alias changes, one event whose time goes back, and events of
// another model in between) in atomic batches.
func newAsOfFixture(tb testing.TB, n int) asOfFixture {
	tb.Helper()
	ctx := context.Background()
	store := testnats.Store(tb)
	f := asOfFixture{store: store, modelID: uuid.NewString()}
	other := uuid.NewString()
	base := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	var batch []events.Append
	flush := func() {
		if len(batch) > 0 {
			if _, err := store.Append(ctx, batch...); err != nil {
				tb.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	add := func(model string, at time.Time, typ string, data any) {
		e, err := events.New(events.Meta{Actor: events.SystemActor, Time: at}, events.Subject(events.AggModel, model), typ, 0, data)
		if err != nil {
			tb.Fatal(err)
		}
		batch = append(batch, events.Append{Event: e, Expect: events.Any})
		if model == f.modelID {
			f.times = append(f.times, e.Time)
		}
		if len(batch) == 400 {
			flush()
		}
	}
	for _, m := range []string{f.modelID, other} {
		add(m, base, events.ModelCreated, events.ModelCreatedData{ModelID: m, ProjectID: uuid.NewString(), Name: "m", Tags: map[string]string{}})
		add(m, base, events.ModelVersionRegistered, events.ModelVersionRegisteredData{ModelID: m, Version: 1, Tags: map[string]string{}})
	}
	for i := range n {
		at := base.Add(time.Duration(i+1) * time.Second)
		if i == n/3 {
			at = base.Add(time.Duration(i-40) * time.Second) // a clock that went back
		}
		add(f.modelID, at, events.ModelArtifactRecorded, events.ModelArtifactRecordedData{ModelID: f.modelID, Version: 1,
			Path: fmt.Sprintf("f/%06d", i%(n/2+1)), Digest: fmt.Sprintf("sha256:%064d", i), Size: int64(i), ContentType: "application/octet-stream"})
		if i%97 == 0 {
			add(f.modelID, at, events.ModelAliasSet, events.ModelAliasSetData{ModelID: f.modelID, Alias: fmt.Sprintf("a%d", i%5), Version: 1})
		}
		if i%50 == 0 {
			add(other, at, events.ModelArtifactRecorded, events.ModelArtifactRecordedData{ModelID: other, Version: 1, Path: "x", Digest: "sha256:x"})
		}
	}
	flush()
	return f
}

// plainFold is the reference answer: every event loaded, folded in stream
// order up to the first one after asOf (at microsecond precision).
func (f asOfFixture) plainFold(tb testing.TB, asOf time.Time) (registry.ModelState, bool) {
	tb.Helper()
	evs, _, err := f.store.Load(context.Background(), events.Subject(events.AggModel, f.modelID), 0)
	if err != nil {
		tb.Fatal(err)
	}
	return foldUpTo(tb, evs, asOf)
}

func foldUpTo(tb testing.TB, evs []events.Envelope, asOf time.Time) (registry.ModelState, bool) {
	tb.Helper()
	var s registry.ModelState
	var err error
	for _, e := range evs {
		if e.Time.Truncate(time.Microsecond).After(asOf) {
			break
		}
		if s, err = registry.EvolveModel(s, e); err != nil {
			tb.Fatal(err)
		}
	}
	return s, s.Created
}

func TestModelAsOfMatchesPlainFold(t *testing.T) {
	t.Parallel()
	const n = 2600 // enough for the checkpoints to thin out (8 kept, spacing doubling)
	f := newAsOfFixture(t, n)
	svc := registry.NewService(f.store, anyUser, nil, nil)
	ctx := serviceCtx(t)

	// The events' own times, a moment before and after each, in random order,
	// then again (answered from checkpoints the first pass left).
	var cutoffs []time.Time
	for i, at := range f.times {
		if i%89 == 0 || i < 3 || i > len(f.times)-3 {
			cutoffs = append(cutoffs, at, at.Add(-time.Microsecond), at.Add(time.Microsecond))
		}
	}
	cutoffs = append(cutoffs, f.times[0].Add(-time.Hour), f.times[len(f.times)-1].Add(time.Hour))
	history, _, err := f.store.Load(ctx, events.Subject(events.AggModel, f.modelID), 0)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for pass := range 2 {
		rng.Shuffle(len(cutoffs), func(i, j int) { cutoffs[i], cutoffs[j] = cutoffs[j], cutoffs[i] })
		for _, at := range cutoffs {
			want, existed := foldUpTo(t, history, at)
			got, err := svc.ModelAsOf(ctx, f.modelID, at)
			if !existed {
				if !errors.Is(err, registry.ErrModelNotYetCreated) {
					t.Fatalf("pass %d, as_of %v before the model: %v", pass, at, err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("pass %d, as_of %v: %v", pass, at, err)
			}
			if !reflect.DeepEqual(got, want) {
				gv, _ := got.Version(1)
				wv, _ := want.Version(1)
				t.Fatalf("pass %d, as_of %v: %d artifacts, aliases %v, updated %v; want %d, %v, %v", pass, at,
					len(gv.Artifacts), got.Aliases, got.UpdatedAt, len(wv.Artifacts), want.Aliases, want.UpdatedAt)
			}
		}
	}

	// A cancelled read stops (the fold checks ctx between events).
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := registry.NewService(f.store, anyUser, nil, nil).ModelAsOf(cancelled, f.modelID, f.times[len(f.times)-1]); !errors.Is(err, context.Canceled) {
		t.Fatalf("a cancelled read: %v, want context.Canceled", err)
	}
}

// Scan reads a subject's events in batches, skipping other subjects, and
// can start after any sequence.
func TestStoreScanBatches(t *testing.T) {
	t.Parallel()
	f := newAsOfFixture(t, 3*events.ScanBatch)
	ctx := serviceCtx(t)
	subject := events.Subject(events.AggModel, f.modelID)
	all, _, err := f.store.Load(ctx, subject, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, from := range []int{0, 1, events.ScanBatch, len(all) - 1, len(all)} {
		var after uint64
		if from > 0 {
			after = all[from-1].Sequence
		}
		var got []uint64
		err := f.store.Scan(ctx, subject, after, func(e events.Envelope) (bool, error) {
			got = append(got, e.Sequence)
			return true, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(all)-from {
			t.Fatalf("scan after %d: %d events, want %d", after, len(got), len(all)-from)
		}
		for i, seq := range got {
			if seq != all[from+i].Sequence {
				t.Fatalf("scan after %d: event %d is %d, want %d", after, i, seq, all[from+i].Sequence)
			}
		}
	}
	// Stopping early stops.
	n := 0
	if err := f.store.Scan(ctx, subject, 0, func(events.Envelope) (bool, error) { n++; return n < 10, nil }); err != nil || n != 10 {
		t.Fatalf("early stop: %d events, %v", n, err)
	}
}

// BenchmarkModelAsOf20000 reads a model with 20,000 artifact events as of
// its last event: "load" is the old way (one direct get per event, then the
// fold), "cold" a fresh service (batched reads and the fold), "warm" a
// service that read it before (continues from its furthest checkpoint).
func BenchmarkModelAsOf20000(b *testing.B) {
	f := newAsOfFixture(b, 20000)
	ctx := context.Background()
	last := f.times[len(f.times)-1].Add(time.Hour)
	b.Run("load", func(b *testing.B) {
		for b.Loop() {
			if _, ok := f.plainFold(b, last); !ok {
				b.Fatal("no model")
			}
		}
	})
	b.Run("cold", func(b *testing.B) {
		for b.Loop() {
			if _, err := registry.NewService(f.store, anyUser, nil, nil).ModelAsOf(ctx, f.modelID, last); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("warm", func(b *testing.B) {
		svc := registry.NewService(f.store, anyUser, nil, nil)
		if _, err := svc.ModelAsOf(ctx, f.modelID, last); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if _, err := svc.ModelAsOf(ctx, f.modelID, last); err != nil {
				b.Fatal(err)
			}
		}
	})
}
