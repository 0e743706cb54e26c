package registry

import (
	"context"
	"errors"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
)

// Bounds of one point-in-time read (GET …/models/{name}?as_of=). The fold
// keeps checkpoints, so a read that runs out of budget is not wasted: the
// next one goes on from where it stopped.
const (
	// MaxAsOfEvents is the most events one read folds.
	MaxAsOfEvents = 50000
	// MaxAsOfBytes is the most event data one read folds.
	MaxAsOfBytes = 64 << 20
	// asOfModels is how many models' checkpoints are kept.
	asOfModels = 64
	// asOfCheckpoints is how many checkpoints a model keeps besides its
	// furthest one; when full, every other one goes and the spacing doubles,
	// so any as_of refolds at most about 1/asOfCheckpoints of the history.
	asOfCheckpoints = 8
	// asOfFirstSpacing is the initial number of events between checkpoints.
	asOfFirstSpacing = 256
)

// asOfPoint is the fold of a model's first n events, the last at stream
// sequence seq. maxTime is the latest event time among them: a read with
// as_of at or after it would fold all n, so it may start here.
type asOfPoint struct {
	n       int
	seq     uint64
	maxTime time.Time
	state   ModelState // never folded into again: reads continue in a clone
}

// asOfHistory is one model's checkpoints. sem lets one read at a time use
// and extend them (a second identical read then starts where the first
// ended instead of folding the same events again).
type asOfHistory struct {
	sem     chan struct{}
	spacing int
	points  []asOfPoint // every spacing events, ascending
	tail    asOfPoint   // the furthest fold so far
}

// asOfCache holds the checkpoints of recently read models.
type asOfCache struct {
	once   sync.Once
	models *lru.Cache[string, *asOfHistory]
	mu     sync.Mutex // makes get-or-create atomic
}

func (c *asOfCache) history(modelID string) *asOfHistory {
	c.once.Do(func() {
		c.models, _ = lru.New[string, *asOfHistory](asOfModels) // only fails for a size < 1
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	h, ok := c.models.Get(modelID)
	if !ok {
		h = &asOfHistory{sem: make(chan struct{}, 1), spacing: asOfFirstSpacing}
		c.models.Add(modelID, h)
	}
	return h
}

// start is the furthest checkpoint a read at cutoff may continue from
// (maxTime never decreases along the history), or the empty fold.
func (h *asOfHistory) start(after func(time.Time) bool) asOfPoint {
	if h.tail.n > 0 && !after(h.tail.maxTime) {
		return h.tail
	}
	for i := len(h.points) - 1; i >= 0; i-- {
		if !after(h.points[i].maxTime) {
			return h.points[i]
		}
	}
	return asOfPoint{}
}

// keep records p, the fold of a prefix of the history, as a checkpoint.
func (h *asOfHistory) keep(p asOfPoint) {
	if p.n > h.tail.n {
		h.tail = p
	}
	if p.n%h.spacing != 0 || (len(h.points) > 0 && p.n <= h.points[len(h.points)-1].n) {
		return
	}
	h.points = append(h.points, p)
	if len(h.points) > asOfCheckpoints {
		h.spacing *= 2
		kept := h.points[:0]
		for _, q := range h.points {
			if q.n%h.spacing == 0 {
				kept = append(kept, q)
			}
		}
		clear(h.points[len(kept):]) // let dropped states go
		h.points = kept
	}
}

// ErrModelNotYetCreated means the model had no events at the cutoff.
var ErrModelNotYetCreated = errors.New("the model did not exist at as_of")

// ModelAsOf folds model modelID's events, in stream order, up to the first
// one whose time (at the microsecond precision the API shows) is after
// asOf, with the same EvolveModel the write side uses. The history is read
// with batched direct gets from the closest checkpoint at or before the
// cutoff; the read checks ctx between events and stops with a typed
// "history-too-long" error after MaxAsOfEvents events or MaxAsOfBytes of
// data, keeping its progress for the next read.
func (s *Service) ModelAsOf(ctx context.Context, modelID string, asOf time.Time) (ModelState, error) {
	after := func(t time.Time) bool { return t.UTC().Truncate(time.Microsecond).After(asOf) }
	h := s.asOf.history(modelID)
	select {
	case h.sem <- struct{}{}:
		defer func() { <-h.sem }()
	case <-ctx.Done():
		return ModelState{}, ctx.Err()
	}
	p := h.start(after)
	cur := p
	cur.state = CloneModel(p.state) // the checkpoint itself is never written
	folded, bytes := 0, 0
	budget := false
	err := s.store.Scan(ctx, events.Subject(events.AggModel, modelID), p.seq, func(e events.Envelope) (bool, error) {
		if after(e.Time) {
			return false, nil
		}
		if folded >= MaxAsOfEvents || bytes >= MaxAsOfBytes {
			budget = true
			return false, nil
		}
		st, err := EvolveModel(cur.state, e)
		if err != nil {
			return false, err
		}
		folded, bytes = folded+1, bytes+len(e.Data)
		cur.state, cur.n, cur.seq = st, cur.n+1, e.Sequence
		if e.Time.After(cur.maxTime) {
			cur.maxTime = e.Time
		}
		if cur.n%h.spacing == 0 {
			h.keep(cur)
			cur.state = CloneModel(cur.state)
		}
		return true, nil
	})
	if cur.n > p.n {
		h.keep(cur)
	}
	if err != nil {
		return ModelState{}, err
	}
	if budget {
		return ModelState{}, &handlers.Error{Kind: handlers.Unavailable, Code: "history-too-long", RetryAfter: time.Second,
			Detail: "this model's history is longer than one point-in-time read may fold; retry and the read goes on from where this one stopped"}
	}
	if !cur.state.Created {
		return ModelState{}, ErrModelNotYetCreated
	}
	return cur.state, nil
}
