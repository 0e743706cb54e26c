package projections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/maestro-ml/maestro/events"
)

// Projection is one read model.
type Projection interface {
	// Name identifies the projection and its checkpoint row.
	Name() string
	// Tables lists the tables it owns; rebuild truncates them.
	Tables() []string
	// Aggregates lists the aggregate types whose subjects the projection
	// reads (its consumer's filter); empty means every subject. It must
	// cover every aggregate the catalogue lists for the types it handles.
	Aggregates() []string
	// Handles reports whether events of this type change the read model.
	// The runner records other events' sequences in batches, and commands
	// wait only for projections that handle one of their events.
	Handles(eventType string) bool
	// Queue adds to b the statements that apply evs (in stream order). It
	// only queues, never reads: the runner sends them behind the checkpoint
	// advance as one pipelined, implicit transaction (one round trip).
	Queue(b *Batch, evs []events.Envelope) error
}

// Lingering is a projection that no command waits for (the audit trail:
// a command never reads it back). Its runner, having received an event,
// waits up to Linger for more before it applies them, so under a steady
// trickle of commands it commits a batch of several events instead of one
// transaction per event.
type Lingering interface {
	Linger() time.Duration
}

// Weighty is a projection whose events are large (metric points: a
// 10,000-point request is about 400 KB of data). Its runner keeps at most
// BatchBytes of event data waiting for it (and pulls at most as much from
// the server at a time) and applies a batch once it holds that much,
// rather than up to BatchSize events: 500 such events would be hundreds
// of megabytes in one transaction, or in the read-ahead channel.
type Weighty interface {
	BatchBytes() int
}

// Handling is the projections among names that handle at least one of
// types (unknown names are kept: waiting on them is the caller's choice).
func Handling(names, types []string) []string {
	byName := map[string]Projection{}
	for _, p := range All() {
		byName[p.Name()] = p
	}
	var out []string
	for _, n := range names {
		p, ok := byName[n]
		if !ok || slices.ContainsFunc(types, p.Handles) {
			out = append(out, n)
		}
	}
	return out
}

// PositionSubject is the NATS subject on which a projection's active runner
// answers how far it has read and its checkpoint ("<read>:<checkpoint>").
func PositionSubject(projection string) string { return "maestro.projections.position." + projection }

// WakeSubject is where Wake tells every active runner to look at its
// checkpoint now.
const WakeSubject = "maestro.projections.wake"

// Wake tells the active runners on nc's NATS to look at their checkpoints
// now rather than at their next idle tick (RunnerConfig.Idle): after Reset,
// a rebuild starts at once.
func Wake(nc *nats.Conn) error {
	if err := nc.Publish(WakeSubject, nil); err != nil {
		return fmt.Errorf("wake projection runners: %w", err)
	}
	return nc.Flush()
}

// NotifyChannel is the Postgres channel checkpoints are announced on, so
// API instances waiting for read-your-writes wake at commit.
const NotifyChannel = "maestro_checkpoints"

// RunnerConfig tunes a runner.
type RunnerConfig struct {
	BatchSize int           // events per transaction at most (default 500)
	Standby   time.Duration // how often a standby retries the lock (default 2s)
	Idle      time.Duration // how often an idle runner re-checks its checkpoint (default 1s)
	// Pass is how long a runner may hold back the checkpoint advance over
	// events it does not handle (default 20ms), so a busy stream of other
	// projections' events costs it one statement per Pass, not per event.
	Pass   time.Duration
	Logger *slog.Logger
	// Silent marks a scratch runner (Verify): it writes to a schema of its
	// own but shares the database, whose notification channels are global,
	// so it never announces its checkpoints (NotifyChannel) or cache
	// invalidations (InvalidateChannel): live waiters would read them as the
	// live projection's. Verify drives it batch by batch; Run refuses it, so
	// it never takes the live runners' advisory lock or answers on
	// PositionSubject.
	Silent bool
}

// Runner applies the event stream to one projection.
type Runner struct {
	pool  *pgxpool.Pool
	store *events.Store
	p     Projection
	cfg   RunnerConfig
	// filter is the subjects of p's aggregates (nil: every subject). The
	// consumer delivers only those, so a registration does not wake the
	// identity projections; the runner learns how far the stream has gone
	// past its last event from readThrough instead.
	filter []string
	// afterCommit, when set, runs after each committed batch; tests use it
	// to crash a worker between commit and acknowledgement.
	afterCommit func(last uint64) error
	// following, when set, learns the subjects each follow reads (nil:
	// every subject); tests use it to see a catch-up switch to filtered.
	following func(filter []string)
	// lock is the session holding this runner's advisory lock while it is
	// active (nil when not). It also holds a second advisory lock on the
	// random key holder (0 when not active), which every batch probes to
	// make sure the session is still there (projection_advance).
	lock   *pgxpool.Conn
	holder int64
	// position is how far the active runner has read (every event up to it
	// is applied, at or below the checkpoint, or one the projection does not
	// handle) and its checkpoint. It answers PositionSubject requests, so a
	// wait for a sequence need not sit out the pass over events the
	// projection ignores.
	posMu         sync.Mutex
	pos, posCheck uint64
	// undecodable holds, by stream sequence, messages of the current batch
	// whose CloudEvents headers do not parse (only a NATS client with the
	// platform's credentials can publish one): they are quarantined like
	// events a projection cannot store, never retried for ever.
	undecodable map[uint64]error
	// batchBytes bounds the event data a batch gathers and the consumer
	// reads ahead (Weighty's, else defaultBatchBytes).
	batchBytes int
	// ahead bounds the bytes of messages delivered but not yet taken into
	// a batch: the channel alone bounds them by count, and a catch-up
	// batch's worth of events of up to 1 MiB each would be gigabytes.
	ahead *readAhead
	// limit is how many events a batch may hold now: BatchSize, or
	// catchUpBatch while catching up.
	limit int
	// wake has a value when Wake was called since the runner last looked.
	wake chan struct{}
}

// readAhead bounds the bytes of the messages waiting in a runner's
// channel. One goroutine acquires (the consumer's callback, which delivers
// one message at a time); the runner releases as it takes them.
type readAhead struct {
	mu            sync.Mutex
	limit, queued int
	freed         chan struct{} // a release since the waiter last looked
}

func newReadAhead(limit int) *readAhead {
	return &readAhead{limit: limit, freed: make(chan struct{}, 1)}
}

// acquire waits until n more bytes fit (a message larger than the limit
// waits for an empty queue) or done closes (false).
func (g *readAhead) acquire(n int, done <-chan struct{}) bool {
	n = min(n, g.limit)
	for {
		g.mu.Lock()
		if g.queued+n <= g.limit {
			g.queued += n
			g.mu.Unlock()
			return true
		}
		g.mu.Unlock()
		select {
		case <-g.freed:
		case <-done:
			return false
		}
	}
}

// release returns the n bytes of a message taken from the channel.
func (g *readAhead) release(n int) {
	g.mu.Lock()
	g.queued -= min(n, g.limit)
	g.mu.Unlock()
	select {
	case g.freed <- struct{}{}:
	default:
	}
}

// NewRunner returns a runner for p.
func NewRunner(pool *pgxpool.Pool, store *events.Store, p Projection, cfg RunnerConfig) *Runner {
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 500
	}
	if cfg.Standby <= 0 {
		cfg.Standby = 2 * time.Second
	}
	if cfg.Idle <= 0 {
		cfg.Idle = time.Second
	}
	if cfg.Pass <= 0 {
		cfg.Pass = 20 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var filter []string
	for _, agg := range p.Aggregates() {
		filter = append(filter, events.Subject(agg, ">"))
	}
	r := &Runner{pool: pool, store: store, p: p, cfg: cfg, filter: filter, limit: cfg.BatchSize, batchBytes: defaultBatchBytes,
		wake: make(chan struct{}, 1)}
	if w, ok := p.(Weighty); ok {
		r.batchBytes = w.BatchBytes()
	}
	return r
}

func lockKey(name string) int64 {
	h := fnv.New64a()
	h.Write([]byte("maestro.projection." + name))
	return int64(h.Sum64())
}

// errRestart makes the runner re-read its checkpoint and follow from there:
// after a rebuild reset it, or if another instance advanced it.
var errRestart = errors.New("projection checkpoint moved; restarting")

// Run holds the projection's advisory lock (one active instance, others
// stand by) and applies events until ctx ends.
func (r *Runner) Run(ctx context.Context) error {
	if r.cfg.Silent { // verify's scratch runner; see RunnerConfig.Silent
		return errors.New("a silent (scratch) runner is driven by Verify, not Run")
	}
	log := r.cfg.Logger.With("projection", r.p.Name())
	for {
		err := r.runLocked(ctx, log)
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case err == nil, errors.Is(err, errRestart), errors.Is(err, errStandby):
		case errors.Is(err, errLockLost):
			log.Error("projection lost its advisory lock; standing by", "err", err)
		default:
			log.Error("projection stopped; retrying", "err", err)
		}
		wait := time.Duration(0)
		if !errors.Is(err, errRestart) {
			wait = r.cfg.Standby
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

var errStandby = errors.New("another instance holds the projection lock")

// errLockLost ends an active runner whose advisory lock is gone (its
// connection dropped or was terminated): a standby may hold it by now. The
// checkpoint compare-and-set already keeps two writers exactly-once; this
// makes the orphan stop instead of racing the new holder.
var errLockLost = errors.New("the projection's advisory lock connection is gone")

func (r *Runner) runLocked(ctx context.Context, log *slog.Logger) error {
	conn, err := r.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquire lock connection: %w", err)
	}
	defer conn.Release()
	var got bool
	key := lockKey(r.p.Name())
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", key).Scan(&got); err != nil {
		return fmt.Errorf("advisory lock: %w", err)
	}
	if !got {
		return errStandby
	}
	holder := int64(rand.Uint64() | 1) // never 0, which means "no check"
	defer func() {
		r.lock, r.holder = nil, 0
		// Unlock on a fresh context: ctx may be cancelled already.
		uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		// The holder first: a batch in flight (its context cancelled, its
		// commit still running) then fails its probe (MA002) rather than
		// commit after the projection's lock is free.
		if _, err := conn.Exec(uctx, "SELECT pg_advisory_unlock($2), pg_advisory_unlock($1)", key, holder); err != nil {
			conn.Conn().Close(uctx) // closing the session releases the locks too
		}
	}()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", holder); err != nil {
		return fmt.Errorf("holder lock: %w", err)
	}
	r.lock, r.holder = conn, holder
	r.setPosition(0, 0)
	sub, err := r.store.Conn().Subscribe(PositionSubject(r.p.Name()), r.answerPosition)
	if err != nil {
		return fmt.Errorf("position subscription: %w", err)
	}
	defer sub.Unsubscribe() //nolint:errcheck // the connection may be closing
	wake, err := r.store.Conn().Subscribe(WakeSubject, func(*nats.Msg) {
		select {
		case r.wake <- struct{}{}:
		default:
		}
	})
	if err != nil {
		return fmt.Errorf("wake subscription: %w", err)
	}
	defer wake.Unsubscribe() //nolint:errcheck // the connection may be closing
	for {
		// A runner that caught up reading every subject follows again,
		// filtered (catchUpGap).
		if err := r.follow(ctx, log); !errors.Is(err, errCaughtUp) {
			return err
		}
	}
}

// catchUpGap is how far behind the stream's head a runner must start to
// read it as catching up (a rebuild, a long stop): a runner with several
// filter subjects then reads every subject until it reaches the head it saw,
// and follows filtered after. nats-server finds a multi-filter consumer's
// next message by intersecting the filters with every subject of the
// message block; with a subject per aggregate (a session, a user) that is
// a walk over thousands of subjects per message, and made the sessions
// projection of the rebuild benchmark (100,000 events) take 27–45 s, where
// reading every subject takes it 2–3 s: passing over events it does not
// handle costs the runner next to nothing.
const catchUpGap = 2000

// catchUpBatch is how many events a batch may hold while the runner
// catches up (at least RunnerConfig.BatchSize).
const catchUpBatch = 2000

// defaultBatchBytes bounds the event data of one batch and of the events
// read ahead of it, for a projection that is not Weighty. Events are up to
// 1 MiB (the stream's MaxMsgSize): without it a catch-up batch could put
// gigabytes into one statement (the audit trail sends a batch's data as
// one array parameter; PostgreSQL refuses a value over 1 GB, and the
// runner would retry that batch for ever).
const defaultBatchBytes = 8 << 20

// errCaughtUp ends a follow that read every subject to catch up: the
// runner follows again from its checkpoint, filtered.
var errCaughtUp = errors.New("projection caught up")

// answerPosition replies to a PositionSubject request with how far the
// runner has read and its checkpoint ("<read>:<checkpoint>"). The request
// may name the sequence its asker waits for: a runner that has read that
// far already answers without asking JetStream.
func (r *Runner) answerPosition(m *nats.Msg) {
	want, _ := strconv.ParseUint(string(m.Data), 10, 64)
	r.posMu.Lock()
	pos, cp := r.pos, r.posCheck
	r.posMu.Unlock()
	if want == 0 || pos < want {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		pos = r.readThrough(ctx, func() uint64 {
			r.posMu.Lock()
			defer r.posMu.Unlock()
			cp = r.posCheck
			return r.pos
		})
	}
	_ = m.Respond([]byte(strconv.FormatUint(pos, 10) + ":" + strconv.FormatUint(cp, 10)))
}

// readThrough is how far the runner has in fact read, given position (how
// far it has received): the stream's head when no event on the runner's
// subjects lies between them, else position. A filtered consumer never sees
// other aggregates' events, so this is how its position keeps up with the
// stream. The head is taken first, from the stream's leader, and the
// lookups ask the leader too (Store.NextOn): an event up to the head is
// there to be found, and one appended after it is not skipped. A lookup
// that fails answers position.
func (r *Runner) readThrough(ctx context.Context, position func() uint64) uint64 {
	if len(r.filter) == 0 {
		return position()
	}
	head, err := r.store.LastSequence(ctx)
	pos := position()
	if err != nil || head <= pos {
		return pos
	}
	for _, f := range r.filter {
		next, err := r.store.NextOn(ctx, pos+1, f)
		if err != nil || (next != 0 && next <= head) {
			return pos
		}
	}
	return head
}

func (r *Runner) checkpoint(ctx context.Context) (uint64, error) {
	_, err := r.pool.Exec(ctx, "INSERT INTO projection_checkpoints (name) VALUES ($1) ON CONFLICT DO NOTHING", r.p.Name())
	if err != nil {
		return 0, fmt.Errorf("init checkpoint: %w", err)
	}
	var cp int64
	err = r.pool.QueryRow(ctx, "SELECT last_seq FROM projection_checkpoints WHERE name = $1", r.p.Name()).Scan(&cp)
	return uint64(cp), err
}

// stopGrace bounds what a stopping runner still does: the batch in hand,
// then the drain and the final position.
const stopGrace = 5 * time.Second

func (r *Runner) follow(ctx context.Context, log *slog.Logger) error {
	cp, err := r.checkpoint(ctx)
	if err != nil {
		return err
	}
	// The consumer outlives ctx until follow returns: a clean stop drains
	// what it delivers (stop, below).
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	// catching is the stream's head when the runner starts catchUpGap or
	// more behind it (0: it does not). A filtered runner's position
	// catches up with the head by reading through (below) once it has
	// received everything on its subjects, rather than at the next idle
	// tick.
	var catching uint64
	if head, err := r.store.LastSequence(ctx); err == nil && head >= cp+catchUpGap {
		catching = head
	}
	filter := r.filter
	if catching > 0 && len(filter) > 1 && r.readThrough(ctx, func() uint64 { return cp }) < catching {
		filter = nil // (with nothing of its own to read, it reads through below)
	}
	if r.following != nil {
		r.following(filter)
	}
	// Catching up, batches are larger (catchUpBatch): fewer commits and
	// round trips per event while nobody waits on a single one.
	r.limit = r.cfg.BatchSize
	if catching > 0 {
		r.limit = max(r.limit, catchUpBatch)
	}
	msgs := make(chan jetstream.Msg, r.limit)
	pull := []jetstream.PullConsumeOpt{jetstream.PullMaxBytes(r.batchBytes)}
	ahead := newReadAhead(r.batchBytes)
	r.ahead = ahead
	cons, err := r.store.Follow(cctx, cp, filter)
	if err != nil {
		return err
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		if ahead != nil && !ahead.acquire(len(m.Data()), cctx.Done()) {
			return
		}
		select {
		case msgs <- m:
		case <-cctx.Done():
		}
	}, pull...)
	if err != nil {
		return fmt.Errorf("consume: %w", err)
	}
	defer cc.Stop()
	log.Debug("projection active", "checkpoint", cp)
	idle := time.NewTicker(r.cfg.Idle)
	defer idle.Stop()
	// pos is how far the runner has read: events in (cp, pos] are ones it
	// does not handle, whose checkpoint advance waits for the pass timer or
	// rides along with the next batch that does change the read model.
	pos := cp
	r.setPosition(pos, cp)
	pass := time.NewTimer(r.cfg.Pass)
	pass.Stop()
	var passing <-chan time.Time
	var linger time.Duration
	var lingering *time.Timer
	if l, ok := r.p.(Lingering); ok && l.Linger() > 0 {
		linger = l.Linger()
		lingering = time.NewTimer(linger)
		lingering.Stop()
	}
	batch := make([]events.Envelope, 0, r.limit)
	// drain applies, at a stop, this projection's events that were appended
	// before it and that the consumer has not handed over yet (a request
	// answered just before SIGTERM), within actx.
	drain := func(actx context.Context) error {
		head, err := r.store.LastSequence(actx)
		for err == nil && actx.Err() == nil {
			if pos = max(pos, r.readThrough(actx, func() uint64 { return pos })); pos >= head {
				return nil
			}
			batch = batch[:0]
			select {
			case m := <-msgs:
				if batch, err = r.appendMsg(batch, m); err != nil {
					return err
				}
			case <-actx.Done():
				return actx.Err()
			}
			if batch, err = r.gather(batch, msgs, nil, nil); err != nil {
				return err
			}
			if !r.changes(batch, cp) {
				pos = max(pos, batch[len(batch)-1].Sequence)
				continue
			}
			if cp, err = r.applyBatch(actx, cp, batch); err == nil {
				pos = cp
				r.setPosition(pos, cp)
			}
		}
		return err
	}
	// stop drains and records the pass before the runner stops, so a clean
	// stop leaves no lag behind (still holding the lock).
	stop := func() error {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopGrace)
		defer cancel()
		if err := drain(actx); err != nil {
			log.Warn("projection could not apply everything before it stopped", "err", err)
			return nil
		}
		if pos > cp {
			if err := r.advance(actx, cp, pos); err != nil && !errors.Is(err, errRestart) {
				log.Warn("projection could not record its position at stop", "err", err)
			}
		}
		return nil
	}
	for {
		batch = batch[:0]
		if ctx.Err() != nil {
			return stop() // not one more batch once stopping
		}
		if catching > 0 && len(msgs) == 0 {
			if filter == nil && len(r.filter) > 0 {
				// Read every subject to catch up: at the head seen at
				// the start, record the position and follow filtered.
				if pos >= catching {
					if pos > cp {
						if err := r.advance(ctx, cp, pos); err != nil {
							return err
						}
					}
					return errCaughtUp
				}
			} else if read := r.readThrough(ctx, func() uint64 { return pos }); read >= catching {
				catching, r.limit = 0, r.cfg.BatchSize
				if read > pos {
					pos = read
					r.setPosition(pos, cp)
					if passing == nil {
						pass.Reset(r.cfg.Pass)
						passing = pass.C
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			return stop()
		case <-passing:
			passing = nil
			if err := r.advance(ctx, cp, pos); err != nil {
				if ctx.Err() != nil {
					return stop()
				}
				return err
			}
			cp = pos
			r.setPosition(pos, cp)
			if r.afterCommit != nil {
				if err := r.afterCommit(cp); err != nil {
					return err
				}
			}
			continue
		case <-r.wake:
			// A rebuild reset the checkpoints (Wake): start over now, not
			// at the next idle tick.
			now, err := r.checkpoint(ctx)
			if err != nil {
				return err
			}
			if now != cp {
				return errRestart
			}
			continue
		case <-idle.C:
			// An idle runner notices a lost lock too.
			if err := r.checkLock(ctx); err != nil {
				if ctx.Err() != nil {
					return stop()
				}
				return err
			}
			now, err := r.checkpoint(ctx)
			if err != nil {
				return err
			}
			if now != cp {
				return errRestart
			}
			// Other aggregates' events never reach a filtered runner: catch
			// the position up with the stream, and the pass records it.
			if read := r.readThrough(ctx, func() uint64 { return pos }); read > pos {
				pos = read
				r.setPosition(pos, cp)
				if passing == nil {
					pass.Reset(r.cfg.Pass)
					passing = pass.C
				}
			}
			continue
		case m := <-msgs:
			if batch, err = r.appendMsg(batch, m); err != nil {
				return err
			}
		}
		if lingering != nil {
			lingering.Reset(linger)
			batch, err = r.gather(batch, msgs, lingering.C, ctx.Done())
			lingering.Stop()
			if err != nil {
				return err
			}
		}
		if batch, err = r.gather(batch, msgs, nil, nil); err != nil {
			return err
		}
		// Events are weighed from the checkpoint, not from pos: pos only
		// passes over events the projection does not handle, so one it
		// handles at or below pos would mean reading through was wrong, and
		// it is applied rather than lost.
		if !r.changes(batch, cp) {
			if last := batch[len(batch)-1].Sequence; last > pos {
				pos = last
				r.setPosition(pos, cp)
				if passing == nil {
					pass.Reset(r.cfg.Pass)
					passing = pass.C
				}
			}
			continue
		}
		// A stop does not cut a batch short (a lingering runner may be
		// gathering events when it comes): the batch in hand is applied
		// still, given stopGrace after the stop, so a clean stop leaves no
		// lag behind.
		actx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		release := context.AfterFunc(ctx, func() { time.AfterFunc(stopGrace, cancel) })
		cp, err = r.applyBatch(actx, cp, batch)
		release()
		cancel()
		if err != nil {
			if ctx.Err() != nil && !errors.Is(err, errRestart) {
				return stop()
			}
			return err
		}
		pos, passing = cp, nil
		r.setPosition(pos, cp)
		pass.Stop()
		if r.afterCommit != nil {
			if err := r.afterCommit(cp); err != nil {
				return err
			}
		}
	}
}

// gather adds the messages waiting in msgs to batch, up to the batch size.
// With until set it also waits for more, until that fires or done closes.
func (r *Runner) gather(batch []events.Envelope, msgs <-chan jetstream.Msg, until <-chan time.Time, done <-chan struct{}) ([]events.Envelope, error) {
	size := 0
	for _, e := range batch {
		size += len(e.Data)
	}
	for len(batch) < r.limit && (r.batchBytes == 0 || size < r.batchBytes) {
		var m jetstream.Msg
		if until == nil {
			select {
			case m = <-msgs:
			default:
				return batch, nil
			}
		} else {
			select {
			case m = <-msgs:
			case <-until:
				return batch, nil
			case <-done:
				return batch, nil
			}
		}
		var err error
		if batch, err = r.appendMsg(batch, m); err != nil {
			return batch, err
		}
		size += len(batch[len(batch)-1].Data)
	}
	return batch, nil
}

// setPosition records how far the runner has read and its checkpoint.
func (r *Runner) setPosition(pos, cp uint64) {
	r.posMu.Lock()
	r.pos, r.posCheck = pos, cp
	r.posMu.Unlock()
}

// changes reports whether a batch has an event after sequence after that
// changes the read model: one the projection handles, or an undecodable
// message (which is quarantined).
func (r *Runner) changes(batch []events.Envelope, after uint64) bool {
	for _, e := range batch {
		if e.Sequence <= after {
			continue
		}
		if _, bad := r.undecodable[e.Sequence]; bad || r.p.Handles(e.Type) {
			return true
		}
	}
	return false
}

// advance records that the projection is at last, having nothing to apply
// in (cp, last].
func (r *Runner) advance(ctx context.Context, cp, last uint64) error {
	b := &pgx.Batch{}
	r.queueAdvance(b, cp, last)
	r.queueAnnounce(b, last, nil)
	if err := r.pool.SendBatch(ctx, b).Close(); err != nil {
		return r.failed(ctx, err)
	}
	return nil
}

func (r *Runner) appendMsg(batch []events.Envelope, m jetstream.Msg) ([]events.Envelope, error) {
	if r.ahead != nil {
		r.ahead.release(len(m.Data()))
	}
	meta, err := m.Metadata()
	if err != nil {
		return batch, fmt.Errorf("message metadata: %w", err)
	}
	seq := meta.Sequence.Stream
	if !r.ours(m.Subject()) {
		// Read while catching up unfiltered (catchUpGap): another
		// aggregate's event, which the filtered consumer would never have
		// delivered. It only moves the position: undecoded, never queued
		// and never quarantined, so catching up leaves the same read model
		// as following filtered (and as verify's rebuild).
		return append(batch, events.Envelope{Sequence: seq, Subject: m.Subject()}), nil
	}
	env, err := events.FromHeaders(m.Subject(), m.Headers(), m.Data(), seq)
	if err != nil {
		if r.undecodable == nil {
			r.undecodable = map[uint64]error{}
		}
		r.undecodable[seq] = err
		h := m.Headers()
		env = events.Envelope{Sequence: seq, Subject: m.Subject(), Type: h.Get("ce-type"), ID: h.Get("ce-id")}
	}
	return append(batch, env), nil
}

// ours reports whether subject is on one of the projection's aggregates
// (every subject is, for a projection without a filter).
func (r *Runner) ours(subject string) bool {
	if r.filter == nil {
		return true
	}
	for _, f := range r.filter {
		if strings.HasPrefix(subject, strings.TrimSuffix(f, ">")) {
			return true
		}
	}
	return false
}

// applyBatch applies the events after the checkpoint and advances it, in
// one transaction. Events at or below the checkpoint (a redelivery) are
// skipped, which makes the projection effectively-once. If the batch fails
// on an event the projection cannot store (see Undeliverable), it is
// applied again event by event and such events are quarantined: the
// projection goes on instead of retrying one immutable event for ever.
func (r *Runner) applyBatch(ctx context.Context, expected uint64, batch []events.Envelope) (uint64, error) {
	last, err := r.commitBatch(ctx, expected, batch, false)
	if err == nil || !Undeliverable(err) {
		return last, err
	}
	return r.commitBatch(ctx, expected, batch, true)
}

// quarantined is one event a projection skipped, with the class of the
// failure (what the log names).
type quarantined struct {
	e        events.Envelope
	sqlstate string
}

// advanceSQL moves the checkpoint, or fails with SQLSTATE MA001
// (checkpoint moved) or MA002 (lock lost); see migrations 00005 and 00006
// (one UPDATE). It goes first in every batch, so its row lock orders
// concurrent writers and its failure undoes the batch.
const advanceSQL = "SELECT projection_advance($1, $2, $3, $4)"

// queueAdvance queues the checkpoint advance from expected to last.
func (r *Runner) queueAdvance(b *pgx.Batch, expected, last uint64) {
	b.Queue(advanceSQL, r.p.Name(), int64(expected), int64(last), r.holder)
}

// maxNotify bounds a notification's payload (PostgreSQL refuses 8000
// bytes and more).
const maxNotify = 7900

// queueAnnounce queues the checkpoint's notification (NotifyChannel):
// "<name>:<last>", then the batch's cache tags, space-separated, as many as
// fit; the rest go first, each on InvalidateChannel. It goes last:
// notifications of one transaction arrive in order, and the Waiter drops
// the tagged rows before it wakes the requests waiting for this checkpoint.
// One notification per batch, not one per changed row.
func (r *Runner) queueAnnounce(b *pgx.Batch, last uint64, tags []string) {
	if r.cfg.Silent { // verify's scratch runner; see RunnerConfig.Silent
		return
	}
	payload := r.p.Name() + ":" + strconv.FormatUint(last, 10)
	var rest []string
	for _, t := range tags {
		if len(payload)+1+len(t) > maxNotify {
			rest = append(rest, t)
			continue
		}
		payload += " " + t
	}
	if len(rest) > 0 {
		// One statement for all of them (a rebuild's batch of 500
		// registrations has hundreds), one notification per tag.
		b.Queue("SELECT pg_notify($1, t) FROM unnest($2::text[]) AS t", InvalidateChannel, rest)
	}
	b.Queue("SELECT pg_notify($1, $2)", NotifyChannel, payload)
}

// failed classifies a failed batch: a moved checkpoint restarts the
// runner; a lock no longer held by its session makes it stand by.
func (r *Runner) failed(ctx context.Context, err error) error {
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr) && pgErr.Code == "MA001":
		return errRestart
	case errors.As(err, &pgErr) && pgErr.Code == "MA002":
		return fmt.Errorf("%w: %w", errLockLost, err)
	case ctx.Err() != nil:
		return ctx.Err()
	}
	return fmt.Errorf("apply %s: %w", r.p.Name(), err)
}

// commitBatch is one attempt of applyBatch. Normally it is one round trip:
// the checkpoint advance, the quarantine rows of undecodable messages and
// the projection's statements, pipelined as one implicit transaction. With
// isolate, each event is applied under its own savepoint of an explicit
// transaction and one that fails with an undeliverable error is rolled
// back, recorded in projection_quarantine and skipped: the skip and the
// checkpoint commit together or not at all. Which events fail depends only
// on the events before them, so a rebuild quarantines the same ones.
func (r *Runner) commitBatch(ctx context.Context, expected uint64, batch []events.Envelope, isolate bool) (uint64, error) {
	fresh := make([]events.Envelope, 0, len(batch))
	for _, e := range batch {
		if e.Sequence > expected {
			fresh = append(fresh, e)
		}
	}
	if len(fresh) == 0 {
		return expected, nil
	}
	last := fresh[len(fresh)-1].Sequence
	pb := &Batch{}
	b := &pb.Batch
	r.queueAdvance(b, expected, last)
	var skipped []quarantined
	decoded := fresh
	if len(r.undecodable) > 0 || r.filter != nil {
		decoded = make([]events.Envelope, 0, len(fresh))
		for _, e := range fresh {
			if !r.ours(e.Subject) {
				continue // passed over while catching up (appendMsg)
			}
			bad, ok := r.undecodable[e.Sequence]
			if !ok {
				decoded = append(decoded, e)
				continue
			}
			skipped = append(skipped, r.queueQuarantine(b, e, bad))
		}
	}
	if !isolate {
		if err := r.p.Queue(pb, decoded); err != nil {
			return expected, fmt.Errorf("apply %s: %w", r.p.Name(), err)
		}
		r.queueAnnounce(b, last, pb.tags)
		if err := r.pool.SendBatch(ctx, b).Close(); err != nil {
			return expected, r.failed(ctx, err)
		}
	} else {
		tx, err := r.pool.Begin(ctx)
		if err != nil {
			return expected, r.failed(ctx, fmt.Errorf("begin: %w", err))
		}
		defer tx.Rollback(context.Background()) //nolint:errcheck // no-op after commit
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return expected, r.failed(ctx, err)
		}
		var tags []string
		for _, e := range decoded {
			q, applied, err := r.applyOne(ctx, tx, e)
			if err != nil {
				return expected, r.failed(ctx, err)
			}
			if q != nil {
				skipped = append(skipped, *q)
			}
			tags = append(tags, applied...)
		}
		ab := &pgx.Batch{}
		r.queueAnnounce(ab, last, tags)
		if err := tx.SendBatch(ctx, ab).Close(); err != nil {
			return expected, r.failed(ctx, err)
		}
		if err := tx.Commit(ctx); err != nil {
			return expected, r.failed(ctx, fmt.Errorf("commit: %w", err))
		}
	}
	for seq := range r.undecodable {
		if seq <= last {
			delete(r.undecodable, seq)
		}
	}
	for _, q := range skipped {
		// No event data and no error text (it may quote data): where to
		// find the event and the class of the failure.
		r.cfg.Logger.Error("projection quarantined an event it cannot store", "projection", r.p.Name(),
			"seq", q.e.Sequence, "type", q.e.Type, "event_id", q.e.ID, "sqlstate", q.sqlstate)
	}
	return last, nil
}

// applyOne applies one event under a savepoint and returns the cache tags
// of the rows it changed. An undeliverable failure is rolled back to the
// savepoint and quarantined (the returned record); any other failure ends
// the attempt, so the runner retries it later.
func (r *Runner) applyOne(ctx context.Context, tx pgx.Tx, e events.Envelope) (*quarantined, []string, error) {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("savepoint: %w", err)
	}
	b := &Batch{}
	applyErr := r.p.Queue(b, []events.Envelope{e})
	// One statement at a time, not pipelined: an argument pgx cannot encode
	// in a later statement of a pipeline leaves earlier ones unsynced, and
	// pgx then closes the connection with the transaction; sent singly, the
	// failing statement never leaves the client and the savepoint holds.
	for _, qq := range b.QueuedQueries {
		if applyErr != nil {
			break
		}
		_, applyErr = sp.Exec(ctx, qq.SQL, qq.Arguments...)
	}
	if applyErr == nil {
		if err := sp.Commit(ctx); err != nil {
			return nil, nil, fmt.Errorf("release savepoint: %w", err)
		}
		return nil, b.tags, nil
	}
	if err := sp.Rollback(ctx); err != nil {
		return nil, nil, fmt.Errorf("rollback to savepoint: %w", err)
	}
	if !Undeliverable(applyErr) {
		return nil, nil, fmt.Errorf("apply %s seq %d: %w", r.p.Name(), e.Sequence, applyErr)
	}
	qb := &pgx.Batch{}
	q := r.queueQuarantine(qb, e, applyErr)
	if err := tx.SendBatch(ctx, qb).Close(); err != nil {
		return nil, nil, fmt.Errorf("quarantine %s seq %d: %w", r.p.Name(), e.Sequence, err)
	}
	return &q, nil, nil
}

// queueQuarantine queues the record that the projection skips e because of
// cause. The error text (stored, and printed by the CLI) and the event's own
// id, type and subject are cleaned alike: a message that is in the
// quarantine because its headers are broken must not break the insert too.
func (r *Runner) queueQuarantine(b *pgx.Batch, e events.Envelope, cause error) quarantined {
	q := quarantined{e: e, sqlstate: sqlState(cause)}
	b.Queue(`INSERT INTO projection_quarantine (projection, seq, event_id, type, subject, sqlstate, error)
		VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (projection, seq) DO NOTHING`,
		r.p.Name(), int64(e.Sequence), plain(e.ID), plain(e.Type), plain(e.Subject), q.sqlstate, plain(cause.Error()))
	return q
}

// checkLock makes sure the session holding the advisory lock is still
// there (a session-level lock lasts as long as its session, so a session
// that answers still holds it). Batches check the lock inside their own
// transaction (projection_advance); an idle runner pings the session now
// and then to notice a lost lock and stand by. Runners driven without Run
// hold no lock and skip this.
func (r *Runner) checkLock(ctx context.Context) error {
	if r.lock == nil {
		return nil
	}
	if _, err := r.lock.Exec(ctx, "SELECT 1"); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w: %w", errLockLost, err)
	}
	return nil
}

// ErrUndecodable marks event data a projection cannot decode or use. A
// projection returns it (wrapped) for data it must refuse; the runner then
// quarantines the event rather than retrying it for ever.
var ErrUndecodable = errors.New("event data cannot be decoded")

// Undeliverable reports whether err says the event itself cannot be stored,
// so retrying can never succeed: a PostgreSQL data exception (SQLSTATE class
// 22: bad jsonb, numeric overflow, invalid text encoding), an integrity
// constraint violation (class 23), a program limit exceeded by the data
// (class 54: index row too large, nesting too deep), data pgx cannot encode
// for its column, or undecodable event data. Connection failures,
// serialization failures and deadlocks (40xxx), insufficient resources
// (53xxx), operator intervention (57xxx), a cancelled context and every
// other error are transient or a bug, and are retried.
func Undeliverable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code[:min(2, len(pgErr.Code))] {
		case "22", "23", "54":
			return true
		}
		return false
	}
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	if errors.Is(err, ErrUndecodable) || errors.As(err, &syn) || errors.As(err, &typ) {
		return true
	}
	// pgx has no error type for an argument it cannot encode (a version
	// beyond int4, a malformed uuid); the wording is fixed in
	// extended_query_builder.go. The failure is the data's. (In a pipeline
	// pgx may have closed the connection over it; the isolate path sends
	// statements singly, where nothing reaches the server.)
	return strings.Contains(err.Error(), "failed to encode args[")
}

func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// plain makes s storable and printable: valid UTF-8, control characters as
// spaces, at most 500 bytes.
func plain(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > 500 {
		cut := 500
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}
