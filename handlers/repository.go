package handlers

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

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
	clone  func(S) S
	max    int
	// final, when it holds for a cached state, means no later event can
	// change it (a taken reservation), so Load skips the store entirely.
	final func(S) bool

	mu    sync.Mutex
	cache map[string]versioned[S]
	locks keyedMutex
}

type versioned[S any] struct {
	state   S
	version uint64
}

// NewRepository returns a repository whose cache holds up to max aggregates.
func NewRepository[S any](store *events.Store, evolve Evolve[S], max int) *Repository[S] {
	return &Repository[S]{store: store, evolve: evolve, max: max, cache: map[string]versioned[S]{}}
}

// WithClone sets how to copy a state before folding new events into it.
// States holding slices must set it: cached states are shared read-only,
// and evolve may then write into its own copy.
func (r *Repository[S]) WithClone(clone func(S) S) *Repository[S] {
	r.clone = clone
	return r
}

// WithFinal marks states that can never change again (see Repository.final).
func (r *Repository[S]) WithFinal(final func(S) bool) *Repository[S] {
	r.final = final
	return r
}

// Load returns the current state of the aggregate on subject and its
// version (the subject's last stream sequence; 0 when it has no events).
func (r *Repository[S]) Load(ctx context.Context, subject string) (S, uint64, error) {
	r.mu.Lock()
	c, cached := r.cache[subject]
	r.mu.Unlock()
	if cached && r.final != nil && r.final(c.state) {
		return c.state, c.version, nil
	}
	evs, version, err := r.store.Load(ctx, subject, c.version)
	if err != nil {
		return c.state, 0, err
	}
	if version < c.version { // should not happen: streams deny delete and purge
		return c.state, 0, fmt.Errorf("load %s: version went back from %d to %d", subject, c.version, version)
	}
	state := c.state
	if len(evs) > 0 && r.clone != nil {
		state = r.clone(state)
	}
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
const MaxAttempts = 16

// Retry runs attempt until it succeeds, fails with something other than a
// concurrency conflict, or MaxAttempts conflicts happened in a row. Each
// attempt must reload the state it decides on. Between attempts it waits a
// random, growing pause (up to 50 ms): without it, a process whose commands
// queue for one hot aggregate can win every race against another process's
// command until that one runs out of attempts.
func Retry(ctx context.Context, attempt func() error) error {
	var err error
	for i := 0; i < MaxAttempts; i++ {
		if err = attempt(); !errors.Is(err, events.ErrConflict) {
			return err
		}
		pause := time.Duration(rand.Int64N(int64(min(time.Millisecond<<i, 50*time.Millisecond)) + 1))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
	}
	return &Error{Kind: Conflict, Code: "concurrent-modification", Detail: "the resource kept changing concurrently; retry the request"}
}

// Update runs one command against one aggregate: load, decide, append with
// the version read, and on a conflict with another process reload and decide
// again. Commands for the same subject in this process take turns, so a hot
// aggregate (50 clients registering versions of one model) queues instead of
// burning its retries on conflicts with itself. versions may add other
// subjects' expected versions (e.g. a reservation); decide returns no
// changes for a no-op.
func (r *Repository[S]) Update(ctx context.Context, subject string, meta events.Meta,
	decide func(state S, version uint64) (changes []Change, versions map[string]uint64, err error)) (S, uint64, error) {
	unlock, err := r.locks.lock(ctx, subject)
	if err != nil {
		var zero S
		return zero, 0, err
	}
	defer unlock()
	var seq uint64
	var state S
	err = Retry(ctx, func() error {
		s, v, err := r.Load(ctx, subject)
		if err != nil {
			return err
		}
		state = s
		changes, versions, err := decide(s, v)
		if err != nil || len(changes) == 0 {
			return err
		}
		if versions == nil {
			versions = map[string]uint64{}
		}
		versions[subject] = v
		seq, err = Commit(ctx, r.store, meta, versions, changes)
		return err
	})
	if err != nil || seq == 0 {
		return state, seq, err
	}
	state, _, err = r.Load(ctx, subject)
	return state, seq, err
}

// Commit appends changes as one atomic append. A duplicate (a retried
// command whose deterministic event ids are already stored) is success.
func Commit(ctx context.Context, store *events.Store, meta events.Meta, versions map[string]uint64, changes []Change) (uint64, error) {
	batch, err := Build(meta, versions, changes...)
	if err != nil {
		return 0, err
	}
	seq, err := store.Append(ctx, batch...)
	if errors.Is(err, events.ErrDuplicate) {
		return seq, nil
	}
	return seq, err
}

// keyedMutex is a mutex per key, released when nobody holds or waits for it.
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*keyedEntry
}

type keyedEntry struct {
	ch   chan struct{} // a one-slot semaphore, so waiting honours ctx
	refs int
}

func (k *keyedMutex) lock(ctx context.Context, key string) (func(), error) {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*keyedEntry{}
	}
	e, ok := k.locks[key]
	if !ok {
		e = &keyedEntry{ch: make(chan struct{}, 1)}
		k.locks[key] = e
	}
	e.refs++
	k.mu.Unlock()
	release := func() {
		k.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
	select {
	case e.ch <- struct{}{}:
		return func() { <-e.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}
