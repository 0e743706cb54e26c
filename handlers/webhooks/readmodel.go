package webhooks

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/maestro-ml/maestro/events"
)

// readModelName is the webhooks projection's checkpoint name
// (projections.Webhooks{}.Name(); not imported: the projections package
// is the read side, this one the write side).
const readModelName = "webhooks"

// webhookSubjects are every subscription's subjects.
var webhookSubjects = events.Subject(events.AggWebhook, "*")

// readModel tells when the webhooks read model (the table the matcher joins
// events against and the cap counts) has applied every subscription event
// before a stream sequence. The matcher needs it: the read model is a
// projection with its own consumer, and an event appended right after a
// subscription's creation (or its change) can reach the matcher before the
// projection has applied the creation; matched then, it would silently
// miss the subscription it is due to (at-least-once broken).
type readModel struct {
	pool  *pgxpool.Pool
	store *events.Store
	// safe: every subscription event before a sequence ≤ safe is applied
	// (a watermark: once true, true for ever, a rebuild aside).
	safe atomic.Uint64
	// floor is the read model's checkpoint safe was established at: a
	// checkpoint below it means the read model was reset or is being
	// rebuilt (projections.Reset), and safe no longer holds (rewound).
	floor atomic.Uint64
	// mu lets one caller at a time ask the stream; the others then find
	// the watermark moved past their sequence.
	mu sync.Mutex
}

// await waits until every subscription event before seq is applied, up to
// wait; past it, an error (the caller retries later rather than decide on
// a stale read model). It answers the read model's checkpoint that this
// holds at: a reader must find the checkpoint still at or above it (else
// the read model was reset since: rewound).
func (m *readModel) await(ctx context.Context, seq uint64, wait time.Duration) (uint64, error) {
	// floor before safe: a rewind in between zeroes safe (the slow path
	// below); one after leaves the floor the reader then checks against.
	if floor := m.floor.Load(); seq <= m.safe.Load() {
		return floor, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	deadline := time.Now().Add(wait)
	for {
		if seq <= m.safe.Load() {
			return m.floor.Load(), nil
		}
		upTo, pending, cp, err := m.appliedUpTo(ctx)
		if err != nil {
			return 0, err
		}
		if upTo > m.safe.Load() {
			// Under mu, the only writer besides rewound.
			m.floor.Store(max(m.floor.Load(), cp))
			m.safe.Store(upTo)
		}
		if seq <= upTo {
			return m.floor.Load(), nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("webhooks: the read model has not applied subscription event %d yet (waited %s)", pending, wait)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// rewound forgets the watermark: the read model's checkpoint went below
// floor (a reset or rebuild), so what was applied must be waited for again.
func (m *readModel) rewound() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.safe.Store(0)
	m.floor.Store(0)
}

// appliedUpTo answers a sequence s such that every subscription event
// before s is applied, and else the first one that is not, with the read
// model's checkpoint cp it read.
func (m *readModel) appliedUpTo(ctx context.Context) (upTo, pending, cp uint64, err error) {
	// The head first: a subscription event up to it is found below.
	head, err := m.store.LastSequence(ctx)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("webhooks: stream head: %w", err)
	}
	var last int64
	if err := m.pool.QueryRow(ctx, `SELECT COALESCE((SELECT last_seq FROM projection_checkpoints WHERE name = $1), 0)`,
		readModelName).Scan(&last); err != nil {
		return 0, 0, 0, fmt.Errorf("webhooks: read model checkpoint: %w", err)
	}
	cp = uint64(last)
	next, err := m.store.NextOn(ctx, cp+1, webhookSubjects)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("webhooks: next subscription event: %w", err)
	}
	switch {
	case next == 0:
		// None after the checkpoint up to the head: every event up to
		// head+1 sees them all.
		return max(head, cp) + 1, 0, cp, nil
	default:
		// next is not applied yet: every event up to it sees the others.
		return next, next, cp, nil
	}
}
