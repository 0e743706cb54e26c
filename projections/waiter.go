package projections

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Waiter tells when projections have reached a stream sequence, for
// read-your-writes (rule 5). It listens for checkpoint notifications on a
// dedicated connection and re-reads the checkpoint table every second, so a
// lost notification or a dropped connection delays an answer, never loses it.
// It works the same whether the projections run in this process or another.
type Waiter struct {
	pool *pgxpool.Pool

	// live is true while the listening connection is up and has read the
	// checkpoints since it connected; the read caches are used only then.
	live atomic.Bool
	// invalidate and reset are the read caches' hooks (see onInvalidate);
	// set before Run.
	invalidate func(tag string)
	reset      func()

	mu      sync.Mutex
	seqs    map[string]uint64
	changed chan struct{} // closed and replaced on every advance
}

// NewWaiter returns a waiter; call Run to keep it current.
func NewWaiter(pool *pgxpool.Pool) *Waiter {
	return &Waiter{pool: pool, seqs: map[string]uint64{}, changed: make(chan struct{})}
}

// onInvalidate sets what to call for each row a projection announces as
// changed (InvalidateChannel), and when notifications may have been missed
// (the listening connection was lost or is new). Call it before Run.
func (w *Waiter) onInvalidate(invalidate func(tag string), reset func()) {
	w.invalidate, w.reset = invalidate, reset
}

// Live reports whether the waiter listens for notifications right now.
func (w *Waiter) Live() bool { return w.live.Load() }

func (w *Waiter) set(name string, seq uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if seq != w.seqs[name] {
		w.seqs[name] = seq // may go down after a rebuild reset
		close(w.changed)
		w.changed = make(chan struct{})
	}
}

func (w *Waiter) reload(ctx context.Context) error {
	rows, err := w.pool.Query(ctx, "SELECT name, last_seq FROM projection_checkpoints")
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		var seq int64
		if err := rows.Scan(&name, &seq); err != nil {
			return err
		}
		w.set(name, uint64(seq))
	}
	return rows.Err()
}

// Run listens until ctx ends.
func (w *Waiter) Run(ctx context.Context) {
	for ctx.Err() == nil {
		w.listen(ctx)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (w *Waiter) listen(ctx context.Context) {
	conn, err := w.pool.Acquire(ctx)
	if err != nil {
		return
	}
	defer func() {
		w.live.Store(false)
		if w.reset != nil {
			w.reset() // what changed from now on goes unannounced
		}
		// A LISTENing session must not go back to the pool.
		conn.Conn().Close(context.Background())
		conn.Release()
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+NotifyChannel+"; LISTEN "+InvalidateChannel); err != nil {
		return
	}
	if w.reset != nil {
		w.reset() // rows cached before this connection listened may be stale
	}
	if w.reload(ctx) != nil {
		return
	}
	w.live.Store(true)
	for ctx.Err() == nil {
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		n, err := conn.Conn().WaitForNotification(wctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil || wctx.Err() == nil {
				return // shut down, or the connection broke
			}
			if w.reload(ctx) != nil {
				return
			}
			continue
		}
		if n.Channel == InvalidateChannel {
			if w.invalidate != nil {
				w.invalidate(n.Payload)
			}
			continue
		}
		name, rest, ok := strings.Cut(n.Payload, ":")
		if v, err := strconv.ParseUint(rest, 10, 64); ok && err == nil {
			w.set(name, v)
		}
	}
}

// Reached reports whether every named projection is at or past seq.
func (w *Waiter) Reached(seq uint64, names ...string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, n := range names {
		if w.seqs[n] < seq {
			return false
		}
	}
	return true
}

// Wait blocks until every named projection reached seq, or ctx ends. It
// returns false on timeout.
func (w *Waiter) Wait(ctx context.Context, seq uint64, names ...string) bool {
	for {
		w.mu.Lock()
		ch := w.changed
		w.mu.Unlock()
		if w.Reached(seq, names...) {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-ch:
		}
	}
}
