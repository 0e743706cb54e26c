package handlers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
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
		r.remember(subject, state, version)
	}
	return state, version, nil
}

// MaxAttempts bounds the reload-and-retry loop on concurrent changes.
const MaxAttempts = 16

// retries counts the attempts Retry made again after a conflict, in this
// process (Retries; a process-wide count is what a scrape of the process
// reports, and it keeps Prometheus out of this package).
var retries atomic.Uint64

// Retries is how many times Retry has run an attempt again after a
// concurrency conflict since the process started.
func Retries() uint64 { return retries.Load() }

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
			if i+1 < MaxAttempts {
				retries.Add(1) // a retry that will run
			}
		}
	}
	return &Error{Kind: Conflict, Code: "concurrent-modification", Detail: "the resource kept changing concurrently; retry the request"}
}

// Decide is the decision of an Update: it gets the aggregate's state and
// version and returns the changes, other subjects' expected versions, or an
// error. replay is true when Update re-runs it on the state an earlier
// attempt of the same command decided on, to recompute that attempt's answer
// (e.g. the version number it registered) from the events actually stored:
// the command was authorized and checked then, so a replay must skip checks
// against other aggregates' current state and only make the decision again.
type Decide[S any] func(state S, version uint64, replay bool) (changes []Change, versions map[string]uint64, err error)

// Update runs one command against one aggregate: load, decide, append with
// the version read, and on a conflict with another process reload and decide
// again. Commands for the same subject in this process take turns, so a hot
// aggregate (50 clients registering versions of one model) queues instead of
// burning its retries on conflicts with itself. versions may add other
// subjects' expected versions (e.g. a reservation); decide returns no
// changes for a no-op.
//
// A retried command (same idempotency key and request) answers from what
// its earlier attempt stored, never from a new decision JetStream dropped as
// a duplicate: when the append is a duplicate, or meta.PriorAttempt says an
// attempt died and its events are found, Update replays the decision on the
// state that attempt decided on (decide is called with replay true, so it
// can skip its checks against other aggregates) and returns the state right
// after it.
func (r *Repository[S]) Update(ctx context.Context, subject string, meta events.Meta, decide Decide[S]) (S, uint64, error) {
	unlock, err := r.locks.lock(ctx, subject)
	if err != nil {
		var zero S
		return zero, 0, err
	}
	defer unlock()
	if !meta.PriorAttempt.IsZero() && meta.Derived() {
		stored, err := r.store.FindStored(ctx, DerivedIDs(meta, subject), []string{subject}, meta.PriorAttempt.Add(-priorAttemptSkew))
		if err != nil {
			var zero S
			return zero, 0, err
		}
		if len(stored) > 0 {
			return r.replay(ctx, subject, meta, stored, decide)
		}
	}
	var seq uint64
	var state S
	var stored []events.Envelope
	var batch []events.Append
	optimistic := true
	err = Retry(ctx, func() error {
		// The first attempt decides on the cached state without asking the
		// store for the subject's last sequence: the append's expected
		// sequence rejects it if the aggregate moved on (rule 2), and only
		// then is the state reloaded. A refusal or a no-op decided on the
		// cache is checked against the stored state before it is answered.
		s, v, verified, err := r.loadForDecide(ctx, subject, optimistic)
		if err != nil {
			return err
		}
		optimistic = false
		changes, versions, err := decide(s, v, false)
		if !verified && (err != nil || len(changes) == 0 || !touches(changes, subject)) {
			// A decision whose events all land on other subjects carries no
			// expectation of this one: verify it on the stored state.
			if s, v, err = r.Load(ctx, subject); err != nil {
				return err
			}
			changes, versions, err = decide(s, v, false)
		}
		state = s
		if err != nil || len(changes) == 0 {
			return err
		}
		if versions == nil {
			versions = map[string]uint64{}
		}
		versions[subject] = v
		if batch, err = Build(meta, versions, changes...); err != nil {
			return err
		}
		guard(batch, subject, v)
		seq, stored, err = appendStored(ctx, r.store, batch)
		return err
	})
	if err != nil {
		return state, seq, err
	}
	if stored != nil {
		return r.replay(ctx, subject, meta, stored, decide)
	}
	if seq == 0 {
		return state, seq, nil
	}
	if after, ok := r.evolveAppended(state, subject, batch, seq); ok {
		return after, seq, nil
	}
	state, _, err = r.Load(ctx, subject)
	return state, seq, err
}

// touches reports whether changes append to subject.
func touches(changes []Change, subject string) bool {
	for _, c := range changes {
		if c.Subject == subject {
			return true
		}
	}
	return false
}

// guard makes a batch decided on subject at version v fail if subject
// moved on before it is stored, also when none of its events is on subject
// (rule 2): the first event without an expectation of its own carries
// subject's (Nats-Expected-Last-Subject-Sequence-Subject). A batch whose
// every event checks its own subject keeps only the verified load.
func guard(batch []events.Append, subject string, v uint64) {
	for _, a := range batch {
		if a.Event.Subject == subject {
			return // Build gave it versions[subject]
		}
	}
	for i := range batch {
		if batch[i].Expect == events.Any {
			batch[i].Expect, batch[i].ExpectSubject = v, subject
			return
		}
	}
}

// loadForDecide is the state a decision starts from: with optimistic, the
// cached state when there is one (verified false: the store was not asked),
// otherwise Load's.
func (r *Repository[S]) loadForDecide(ctx context.Context, subject string, optimistic bool) (S, uint64, bool, error) {
	if optimistic {
		r.mu.Lock()
		c, ok := r.cache[subject]
		r.mu.Unlock()
		if ok {
			return c.state, c.version, false, nil
		}
	}
	s, v, err := r.Load(ctx, subject)
	return s, v, true, err
}

// evolveAppended folds the events just appended into state, the state they
// were decided on, and caches the result: no reload from the store. It only
// does so when the subject's one event is the batch's last, so its stream
// sequence is the append's (an atomic batch names only its last); the
// event goes through the codec first, so the state is what a reload would
// fold (times in UTC, nanoseconds as stored).
func (r *Repository[S]) evolveAppended(state S, subject string, batch []events.Append, seq uint64) (S, bool) {
	n := 0
	for _, a := range batch {
		if a.Event.Subject == subject {
			n++
		}
	}
	if n != 1 || batch[len(batch)-1].Event.Subject != subject {
		return state, false
	}
	m := events.ToMsg(batch[len(batch)-1].Event)
	e, err := events.FromHeaders(m.Subject, m.Header, m.Data, seq)
	if err != nil {
		return state, false
	}
	if r.clone != nil {
		state = r.clone(state)
	}
	if state, err = r.evolve(state, e); err != nil {
		return state, false
	}
	r.remember(subject, state, seq)
	return state, true
}

// remember caches state at version unless a later version is cached.
func (r *Repository[S]) remember(subject string, state S, version uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.cache) >= r.max {
		clear(r.cache) // crude but bounded; hot aggregates come back quickly
	}
	if cur := r.cache[subject]; cur.version < version {
		r.cache[subject] = versioned[S]{state: state, version: version}
	}
}

// priorAttemptSkew widens the search for a dead attempt's events for clock
// skew between API instances and the NATS server.
const priorAttemptSkew = time.Minute

// maxDerivedIndex bounds the events of one command searched for by id.
const maxDerivedIndex = 16

// DerivedIDs are the ids the events of the command meta describes carry on
// subject (one per possible position in its batch).
func DerivedIDs(meta events.Meta, subject string) []string {
	if !meta.Derived() {
		return nil
	}
	ids := make([]string, maxDerivedIndex)
	for i := range ids {
		ids[i] = events.DerivedID(meta, subject, i)
	}
	return ids
}

// replay answers a command whose events an earlier attempt stored: it
// re-runs decide on the state right before them (deciders are pure, so the
// decision, and whatever the caller's decide recorded of it, is the stored
// one), checks that it matches the stored events, and returns the state
// right after them with their last sequence.
func (r *Repository[S]) replay(ctx context.Context, subject string, meta events.Meta, stored []events.Envelope, decide Decide[S]) (S, uint64, error) {
	var zero S
	var mine []events.Envelope
	for _, e := range stored {
		if e.Subject == subject {
			mine = append(mine, e)
		}
	}
	last := stored[len(stored)-1].Sequence
	if len(mine) == 0 {
		// Nothing of this aggregate was stored by the earlier attempt (the
		// duplicate was on another subject of its batch): answer with the
		// aggregate as it was then.
		after, _, err := r.LoadAt(ctx, subject, last)
		return after, last, err
	}
	before, version, err := r.LoadAt(ctx, subject, mine[0].Sequence-1)
	if err != nil {
		return zero, 0, err
	}
	changes, _, err := decide(before, version, true)
	if err != nil {
		return zero, 0, err
	}
	if len(changes) > 0 {
		batch, err := Build(meta, nil, changes...)
		if err != nil {
			return zero, 0, err
		}
		n := 0
		for _, a := range batch {
			if a.Event.Subject != subject {
				continue
			}
			if n >= len(mine) || a.Event.ID != mine[n].ID || a.Event.Type != mine[n].Type || !bytes.Equal(a.Event.Data, mine[n].Data) {
				return zero, 0, fmt.Errorf("replay %s at %d: the decision differs from the stored events", subject, mine[0].Sequence)
			}
			n++
		}
		if n != len(mine) {
			return zero, 0, fmt.Errorf("replay %s at %d: %d stored events, the decision has %d", subject, mine[0].Sequence, len(mine), n)
		}
	}
	after := before
	if r.clone != nil {
		after = r.clone(after)
	}
	for _, e := range mine {
		if after, err = r.evolve(after, e); err != nil {
			return zero, 0, fmt.Errorf("evolve %s at %d: %w", subject, e.Sequence, err)
		}
	}
	return after, last, nil
}

// LoadAt returns the state of the aggregate on subject as it was right after
// stream sequence at, and its version then. It folds the subject from its
// first event in batched reads (no cache): it serves retried commands,
// which are rare.
func (r *Repository[S]) LoadAt(ctx context.Context, subject string, at uint64) (S, uint64, error) {
	var state S
	var version uint64
	err := r.store.Scan(ctx, subject, 0, func(e events.Envelope) (bool, error) {
		if e.Sequence > at {
			return false, nil
		}
		var err error
		if state, err = r.evolve(state, e); err != nil {
			return false, fmt.Errorf("evolve %s at %d: %w", subject, e.Sequence, err)
		}
		version = e.Sequence
		return true, nil
	})
	return state, version, err
}

// Commit appends changes as one atomic append. A duplicate (a retried
// command whose deterministic event ids are already stored) is success, with
// the sequence of the stored events; callers whose answer depends on what
// was decided use CommitStored.
func Commit(ctx context.Context, store *events.Store, meta events.Meta, versions map[string]uint64, changes []Change) (uint64, error) {
	seq, _, err := CommitStored(ctx, store, meta, versions, changes)
	return seq, err
}

// CommitStored is Commit that also returns, for a duplicate, the events the
// earlier attempt stored (nil otherwise): those, not changes, are what the
// command did.
func CommitStored(ctx context.Context, store *events.Store, meta events.Meta, versions map[string]uint64, changes []Change) (uint64, []events.Envelope, error) {
	batch, err := Build(meta, versions, changes...)
	if err != nil {
		return 0, nil, err
	}
	return appendStored(ctx, store, batch)
}

// appendStored appends a built batch; see CommitStored.
func appendStored(ctx context.Context, store *events.Store, batch []events.Append) (uint64, []events.Envelope, error) {
	seq, err := store.Append(ctx, batch...)
	if stored := events.StoredDuplicate(err); stored != nil {
		return seq, stored, nil
	}
	return seq, nil, err
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
