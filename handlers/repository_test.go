package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/internal/testnats"
)

// counter is a test aggregate: the values it was incremented to, in order,
// recorded as model-updated events on model subjects (Build appends only
// catalogued types, on their aggregates' subjects).
type counter struct {
	Values []int
	Last   time.Time
}

const incremented = events.ModelUpdated

func evolveCounter(c counter, e events.Envelope) (counter, error) {
	var d struct{ N int }
	if err := json.Unmarshal(e.Data, &d); err != nil {
		return c, err
	}
	c.Values = append(c.Values, d.N)
	c.Last = e.Time
	return c, nil
}

func cloneCounter(c counter) counter {
	c.Values = append([]int(nil), c.Values...)
	return c
}

func newCounterRepo(store *events.Store) *Repository[counter] {
	return NewRepository(store, evolveCounter, 100).WithClone(cloneCounter)
}

var errOdd = errors.New("refused: odd count")

// Two repositories share one subject, as two API instances do: each caches
// the state it last saw, decides on it without asking the store first, and
// must still never decide on a stale state.
func TestUpdateDecidesOnTheCacheButNeverOnAStaleState(t *testing.T) {
	store := testnats.Store(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b := newCounterRepo(store), newCounterRepo(store)
	subject := events.Subject(events.AggModel, "c1")
	meta := events.Meta{Actor: events.SystemActor}
	increment := func(refuseOdd bool) Decide[counter] {
		return func(c counter, _ uint64, _ bool) ([]Change, map[string]uint64, error) {
			if refuseOdd && len(c.Values)%2 == 1 {
				return nil, nil, errOdd
			}
			return []Change{{Subject: subject, Type: incremented, Data: map[string]int{"N": len(c.Values) + 1}}}, nil, nil
		}
	}
	mustUpdate := func(r *Repository[counter], refuseOdd bool) counter {
		t.Helper()
		c, seq, err := r.Update(ctx, subject, meta, increment(refuseOdd))
		if err != nil || seq == 0 {
			t.Fatalf("update: seq %d, %v", seq, err)
		}
		return c
	}
	mustUpdate(a, false) // a caches [1]
	mustUpdate(b, false) // b appends 2 behind a's back
	// a's cache says one value: its optimistic append must be refused by
	// the expected sequence and decided again on [1 2].
	if got := mustUpdate(a, false); !reflect.DeepEqual(got.Values, []int{1, 2, 3}) {
		t.Fatalf("a decided on a stale state: %v", got.Values)
	}
	mustUpdate(b, false) // [1 2 3 4]; b's cache is current, a's says 3 values
	// On a's stale cache (odd) the decision refuses; the store (even) allows
	// it, so the refusal must not be the answer.
	if got := mustUpdate(a, true); !reflect.DeepEqual(got.Values, []int{1, 2, 3, 4, 5}) {
		t.Fatalf("a answered from a stale refusal or state: %v", got.Values)
	}
	// A refusal that holds on the stored state is still the answer.
	if _, _, err := a.Update(ctx, subject, meta, increment(true)); !errors.Is(err, errOdd) {
		t.Fatalf("refusal on the stored state: %v", err)
	}
	// The state Update returns (folded locally from the appended event) is
	// exactly what a replay from the store folds.
	got := mustUpdate(b, false)
	fresh, version, err := newCounterRepo(store).Load(ctx, subject)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, fresh) {
		t.Fatalf("Update returned %+v, the store folds %+v", got, fresh)
	}
	if c, v, err := b.Load(ctx, subject); err != nil || v != version || !reflect.DeepEqual(c, fresh) {
		t.Fatalf("b's cache after Update: %+v at %d (%v), want %+v at %d", c, v, err, fresh, version)
	}
}

// A decision whose events all land on other aggregates (a counter that
// reports its count elsewhere) is still decided on the current state:
// on a stale cache it is verified against the store, and the append fails
// if the counter moved on in between, also in an atomic batch.
func TestUpdateGuardsItsSubjectWhenWritingElsewhere(t *testing.T) {
	store := testnats.Store(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b := newCounterRepo(store), newCounterRepo(store)
	subject := events.Subject(events.AggModel, "c2")
	reports := []string{events.Subject(events.AggModel, "report-1"), events.Subject(events.AggModel, "report-2")}
	meta := events.Meta{Actor: events.SystemActor}
	increment := func(c counter, _ uint64, _ bool) ([]Change, map[string]uint64, error) {
		return []Change{{Subject: subject, Type: incremented, Data: map[string]int{"N": len(c.Values) + 1}}}, nil, nil
	}
	var between func()
	calls := 0
	report := func(to []string) Decide[counter] {
		return func(c counter, _ uint64, _ bool) ([]Change, map[string]uint64, error) {
			// The first call decides on a's cache, which Update verifies by
			// deciding again on the stored state (the second call); the
			// counter moves on right after that, before the append.
			if calls++; calls == 2 && between != nil {
				between()
				between = nil
			}
			var out []Change
			for _, s := range to {
				out = append(out, Change{Subject: s, Type: incremented, Data: map[string]int{"N": len(c.Values)}})
			}
			return out, nil, nil
		}
	}
	lastReport := func(subj string) int {
		t.Helper()
		evs, _, err := store.Load(ctx, subj, 0)
		if err != nil || len(evs) == 0 {
			t.Fatalf("report %s: %d events, %v", subj, len(evs), err)
		}
		var d struct{ N int }
		if err := json.Unmarshal(evs[len(evs)-1].Data, &d); err != nil {
			t.Fatal(err)
		}
		return d.N
	}
	for _, r := range []*Repository[counter]{a, b} {
		if _, _, err := r.Update(ctx, subject, meta, increment); err != nil {
			t.Fatal(err)
		}
	}
	// a's cache says 1; the store says 2.
	if _, _, err := a.Update(ctx, subject, meta, report(reports[:1])); err != nil {
		t.Fatal(err)
	}
	if n := lastReport(reports[0]); n != 2 {
		t.Fatalf("reported %d from a stale cache, want 2", n)
	}
	// Moved on between a verified decision and its append: one event, then
	// an atomic batch of two, each refused once and decided again.
	for _, to := range [][]string{reports[:1], reports} {
		calls = 0
		between = func() {
			if _, _, err := b.Update(ctx, subject, meta, increment); err != nil {
				t.Fatal(err)
			}
		}
		c, _, err := a.Update(ctx, subject, meta, report(to))
		if err != nil {
			t.Fatal(err)
		}
		if between != nil || calls != 3 {
			t.Fatalf("decided %d times (moved on: %v), want 3: cache, stored state, after the refused append", calls, between == nil)
		}
		for _, s := range to {
			if n := lastReport(s); n != len(c.Values) {
				t.Fatalf("%s reported %d, the counter holds %d: decided on a state that moved on", s, n, len(c.Values))
			}
		}
	}
}
