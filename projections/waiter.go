package projections

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
)

// Waiter tells when projections have reached a stream sequence, for
// read-your-writes (rule 5). It listens for checkpoint notifications on a
// dedicated connection and re-reads the checkpoint table every second, so a
// lost notification or a dropped connection delays an answer, never loses it.
// It works the same whether the projections run in this process or another.
type Waiter struct {
	pool *pgxpool.Pool
	// nc, when set, asks runners for their position (PositionSubject).
	nc *nats.Conn

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
// changed (with its checkpoint, or on InvalidateChannel when the tags do not
// fit in that notification), and when notifications may have been missed
// (the listening connection was lost or is new). Call it before Run.
func (w *Waiter) onInvalidate(invalidate func(tag string), reset func()) {
	w.invalidate, w.reset = invalidate, reset
}

// AskRunners lets Wait ask a projection's active runner how far it has
// read when its checkpoint is behind: a runner may hold back the checkpoint
// advance over events it does not handle for RunnerConfig.Pass, and a
// reader waiting for such an event need not wait for that.
func (w *Waiter) AskRunners(nc *nats.Conn) *Waiter {
	w.nc = nc
	return w
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

// reload reads every checkpoint from the table. A checkpoint ahead of what
// the notifications said means some were missed or are still in flight, and
// with them perhaps the rows' invalidations: the read caches are emptied
// before anyone waiting for that checkpoint is woken.
func (w *Waiter) reload(ctx context.Context) error {
	rows, err := w.pool.Query(ctx, "SELECT name, last_seq FROM projection_checkpoints")
	if err != nil {
		return err
	}
	type checkpoint struct {
		name string
		seq  uint64
	}
	var cps []checkpoint
	for rows.Next() {
		var name string
		var seq int64
		if err := rows.Scan(&name, &seq); err != nil {
			rows.Close()
			return err
		}
		cps = append(cps, checkpoint{name, uint64(seq)})
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	w.mu.Lock()
	ahead := slices.ContainsFunc(cps, func(c checkpoint) bool { return c.seq > w.seqs[c.name] })
	w.mu.Unlock()
	if ahead && w.reset != nil {
		w.reset()
	}
	for _, c := range cps {
		w.set(c.name, c.seq)
	}
	return nil
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
			// A quiet second: make sure the listening connection is still
			// there (a silently dropped one would leave the caches trusted
			// with no invalidation arriving), then catch up on checkpoints.
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := conn.Exec(pctx, "SELECT 1")
			cancel()
			if err != nil || w.reload(ctx) != nil {
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
		// "<name>:<seq>" and the batch's cache tags (Runner.queueAnnounce):
		// the rows go before the checkpoint wakes anyone.
		checkpoint, tags, _ := strings.Cut(n.Payload, " ")
		for tags != "" && w.invalidate != nil {
			var tag string
			tag, tags, _ = strings.Cut(tags, " ")
			w.invalidate(tag)
		}
		name, rest, ok := strings.Cut(checkpoint, ":")
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
// returns false on timeout. Commands use it for the projections that
// handle their events, whose checkpoints reach seq when they apply it.
func (w *Waiter) Wait(ctx context.Context, seq uint64, names ...string) bool {
	return w.wait(ctx, seq, false, names...)
}

// WaitRead is Wait for a reader of a sequence it did not write
// (Maestro-Min-Sequence): a projection whose checkpoint is behind counts as
// reached once its runner says it has read past seq (AskRunners), since
// what it has not applied then are events it does not handle.
func (w *Waiter) WaitRead(ctx context.Context, seq uint64, names ...string) bool {
	return w.wait(ctx, seq, w.nc != nil, names...)
}

func (w *Waiter) wait(ctx context.Context, seq uint64, ask bool, names ...string) bool {
	read := map[string]bool{}
	pause := firstAskPause
	for {
		w.mu.Lock()
		ch := w.changed
		behind := make([]string, 0, len(names))
		for _, n := range names {
			if w.seqs[n] < seq && !read[n] {
				behind = append(behind, n)
			}
		}
		w.mu.Unlock()
		if len(behind) == 0 {
			return true
		}
		var retry <-chan time.Time
		if ask && w.nc.IsConnected() {
			settled := false
			for _, n := range behind {
				// Trusted only from a runner whose checkpoint is the one
				// this waiter knows: not from one that has yet to notice a
				// rebuild's rewind.
				pos, cp, ok := w.position(ctx, n, seq)
				w.mu.Lock()
				known := w.seqs[n]
				w.mu.Unlock()
				if ok && cp == known && pos >= seq {
					read[n], settled = true, true
				}
			}
			if settled {
				continue // perhaps every projection is there now
			}
			// Ask again later, less often each time: the runner may not
			// have read seq yet (or, filtered, not yet found that nothing
			// of its own lies before it), and the checkpoint may arrive by
			// itself meanwhile.
			retry = time.After(pause)
			pause = min(2*pause, maxAskPause)
		}
		select {
		case <-ctx.Done():
			return false
		case <-ch:
		case <-retry:
		}
	}
}

// The pauses between asking a runner again: from 2 ms, doubling, up to
// 16 ms (below the 20 ms a pass takes to record itself).
const (
	firstAskPause = 2 * time.Millisecond
	maxAskPause   = 16 * time.Millisecond
)

// position asks projection's active runner how far it has read (toward
// want) and its checkpoint (ok false if no runner answers within a few
// milliseconds).
func (w *Waiter) position(ctx context.Context, projection string, want uint64) (read, checkpoint uint64, ok bool) {
	ctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	m, err := w.nc.RequestWithContext(ctx, PositionSubject(projection), []byte(strconv.FormatUint(want, 10)))
	if err != nil {
		return 0, 0, false
	}
	a, b, found := strings.Cut(string(m.Data), ":")
	read, err1 := strconv.ParseUint(a, 10, 64)
	checkpoint, err2 := strconv.ParseUint(b, 10, 64)
	return read, checkpoint, found && err1 == nil && err2 == nil
}
