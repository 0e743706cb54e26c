package handlers

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/maestro-ml/maestro/events"
)

// Evolve folds one event into an aggregate's state. It must be pure.
type Evolve[S any] func(S, events.Envelope) (S, error)

// Repository loads aggregate state from the event store and caches it by
// version (rule 2), so a hot aggregate costs one "last sequence" lookup plus
// the events appended since, not a replay from sequence 1.
type Repository[S any] struct {
	store  *events.Store
	evolve Evolve[S]
	max    int

	mu    sync.Mutex
	cache map[string]versioned[S]
}

type versioned[S any] struct {
	state   S
	version uint64
}

// NewRepository returns a repository whose cache holds up to max aggregates.
func NewRepository[S any](store *events.Store, evolve Evolve[S], max int) *Repository[S] {
	return &Repository[S]{store: store, evolve: evolve, max: max, cache: map[string]versioned[S]{}}
}

// Load returns the current state of the aggregate on subject and its
// version (the subject's last stream sequence; 0 when it has no events).
func (r *Repository[S]) Load(ctx context.Context, subject string) (S, uint64, error) {
	r.mu.Lock()
	c := r.cache[subject]
	r.mu.Unlock()
	evs, version, err := r.store.Load(ctx, subject, c.version)
	if err != nil {
		return c.state, 0, err
	}
	if version < c.version { // should not happen: streams deny delete and purge
		return c.state, 0, fmt.Errorf("load %s: version went back from %d to %d", subject, c.version, version)
	}
	state := c.state
	for _, e := range evs {
		if state, err = r.evolve(state, e); err != nil {
			return state, 0, fmt.Errorf("evolve %s at %d: %w", subject, e.Sequence, err)
		}
	}
	if len(evs) > 0 {
		r.mu.Lock()
		if len(r.cache) >= r.max {
			clear(r.cache) // crude but bounded; hot aggregates come back quickly
		}
		if cur := r.cache[subject]; cur.version < version {
			r.cache[subject] = versioned[S]{state: state, version: version}
		}
		r.mu.Unlock()
	}
	return state, version, nil
}

// MaxAttempts bounds the reload-and-retry loop on concurrent changes.
const MaxAttempts = 8

// Retry runs attempt until it succeeds, fails with something other than a
// concurrency conflict, or MaxAttempts conflicts happened in a row. Each
// attempt must reload the state it decides on.
func Retry(ctx context.Context, attempt func() error) error {
	var err error
	for i := 0; i < MaxAttempts; i++ {
		if err = attempt(); !errors.Is(err, events.ErrConflict) {
			return err
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			return ctxErr
		}
	}
	return &Error{Kind: Conflict, Code: "concurrent-modification", Detail: "the resource kept changing concurrently; retry the request"}
}
