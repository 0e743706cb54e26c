package projections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/maestro-ml/maestro/events"
)

// Projection is one read model.
type Projection interface {
	// Name identifies the projection and its checkpoint row.
	Name() string
	// Tables lists the tables it owns; rebuild truncates them.
	Tables() []string
	// Apply writes the effect of events (in stream order) inside tx.
	Apply(ctx context.Context, tx pgx.Tx, evs []events.Envelope) error
}

// NotifyChannel is the Postgres channel checkpoints are announced on, so
// API instances waiting for read-your-writes wake at commit.
const NotifyChannel = "maestro_checkpoints"

// RunnerConfig tunes a runner.
type RunnerConfig struct {
	BatchSize int           // events per transaction at most (default 500)
	Standby   time.Duration // how often a standby retries the lock (default 2s)
	Idle      time.Duration // how often an idle runner re-checks its checkpoint (default 1s)
	Logger    *slog.Logger
}

// Runner applies the event stream to one projection.
type Runner struct {
	pool  *pgxpool.Pool
	store *events.Store
	p     Projection
	cfg   RunnerConfig
	// afterCommit, when set, runs after each committed batch; tests use it
	// to crash a worker between commit and acknowledgement.
	afterCommit func(last uint64) error
	// lock is the session holding this runner's advisory lock while it is
	// active (nil when not); every batch checks that it is still there.
	lock *pgxpool.Conn
	// undecodable holds, by stream sequence, messages of the current batch
	// whose CloudEvents headers do not parse (only a NATS client with the
	// platform's credentials can publish one): they are quarantined like
	// events a projection cannot store, never retried for ever.
	undecodable map[uint64]error
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
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Runner{pool: pool, store: store, p: p, cfg: cfg}
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
	r.lock = conn
	defer func() {
		r.lock = nil
		// Unlock on a fresh context: ctx may be cancelled already.
		uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := conn.Exec(uctx, "SELECT pg_advisory_unlock($1)", key); err != nil {
			conn.Conn().Close(uctx) // closing the session releases the lock too
		}
	}()
	return r.follow(ctx, log)
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

func (r *Runner) follow(ctx context.Context, log *slog.Logger) error {
	cp, err := r.checkpoint(ctx)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cons, err := r.store.Follow(cctx, cp)
	if err != nil {
		return err
	}
	msgs := make(chan jetstream.Msg, r.cfg.BatchSize)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		select {
		case msgs <- m:
		case <-cctx.Done():
		}
	})
	if err != nil {
		return fmt.Errorf("consume: %w", err)
	}
	defer cc.Stop()
	log.Debug("projection active", "checkpoint", cp)
	idle := time.NewTicker(r.cfg.Idle)
	defer idle.Stop()
	batch := make([]events.Envelope, 0, r.cfg.BatchSize)
	for {
		batch = batch[:0]
		select {
		case <-ctx.Done():
			return nil
		case <-idle.C:
			// An idle runner notices a lost lock too.
			if err := r.checkLock(ctx); err != nil {
				if ctx.Err() != nil {
					return nil
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
			continue
		case m := <-msgs:
			if batch, err = r.appendMsg(batch, m); err != nil {
				return err
			}
		}
	drain:
		for len(batch) < r.cfg.BatchSize {
			select {
			case m := <-msgs:
				if batch, err = r.appendMsg(batch, m); err != nil {
					return err
				}
			default:
				break drain
			}
		}
		if cp, err = r.applyBatch(ctx, cp, batch); err != nil {
			return err
		}
		if r.afterCommit != nil {
			if err := r.afterCommit(cp); err != nil {
				return err
			}
		}
	}
}

func (r *Runner) appendMsg(batch []events.Envelope, m jetstream.Msg) ([]events.Envelope, error) {
	meta, err := m.Metadata()
	if err != nil {
		return batch, fmt.Errorf("message metadata: %w", err)
	}
	seq := meta.Sequence.Stream
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

// commitBatch is one attempt of applyBatch. With isolate, each event is
// applied under its own savepoint and one that fails with an undeliverable
// error is rolled back, recorded in projection_quarantine and skipped, in
// the transaction that advances the checkpoint: the skip and the checkpoint
// commit together or not at all. Which events fail depends only on the
// events before them, so a rebuild quarantines the same ones.
func (r *Runner) commitBatch(ctx context.Context, expected uint64, batch []events.Envelope, isolate bool) (uint64, error) {
	tx, err := r.pool.Begin(ctx)
	if err != nil {
		return expected, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck // no-op after commit
	var cp int64
	if err := tx.QueryRow(ctx, "SELECT last_seq FROM projection_checkpoints WHERE name = $1 FOR UPDATE", r.p.Name()).Scan(&cp); err != nil {
		return expected, fmt.Errorf("lock checkpoint: %w", err)
	}
	// The lock first: an orphan whose lock is gone must say so, not just
	// restart because the new holder moved the checkpoint.
	if err := r.checkLock(ctx); err != nil {
		return expected, err
	}
	if uint64(cp) != expected {
		return expected, errRestart
	}
	fresh := make([]events.Envelope, 0, len(batch))
	for _, e := range batch {
		if e.Sequence > uint64(cp) {
			fresh = append(fresh, e)
		}
	}
	if len(fresh) == 0 {
		return expected, nil
	}
	var skipped []quarantined
	last := fresh[len(fresh)-1].Sequence
	decoded := fresh
	if len(r.undecodable) > 0 {
		decoded = make([]events.Envelope, 0, len(fresh))
		for _, e := range fresh {
			bad, ok := r.undecodable[e.Sequence]
			if !ok {
				decoded = append(decoded, e)
				continue
			}
			q, err := r.quarantine(ctx, tx, e, bad)
			if err != nil {
				return expected, err
			}
			skipped = append(skipped, *q)
		}
	}
	switch {
	case isolate:
		for _, e := range decoded {
			q, err := r.applyOne(ctx, tx, e)
			if err != nil {
				return expected, err
			}
			if q != nil {
				skipped = append(skipped, *q)
			}
		}
	case len(decoded) > 0:
		if err := r.p.Apply(ctx, tx, decoded); err != nil {
			return expected, fmt.Errorf("apply %s: %w", r.p.Name(), err)
		}
	}
	if _, err := tx.Exec(ctx, "UPDATE projection_checkpoints SET last_seq = $2, updated_at = now() WHERE name = $1", r.p.Name(), int64(last)); err != nil {
		return expected, fmt.Errorf("advance checkpoint: %w", err)
	}
	if _, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", NotifyChannel, fmt.Sprintf("%s:%d", r.p.Name(), last)); err != nil {
		return expected, fmt.Errorf("notify: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return expected, fmt.Errorf("commit: %w", err)
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

// applyOne applies one event under a savepoint. An undeliverable failure is
// rolled back to the savepoint and quarantined (the returned record); any
// other failure ends the attempt, so the runner retries it later.
func (r *Runner) applyOne(ctx context.Context, tx pgx.Tx, e events.Envelope) (*quarantined, error) {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("savepoint: %w", err)
	}
	applyErr := r.p.Apply(ctx, sp, []events.Envelope{e})
	if applyErr == nil {
		if err := sp.Commit(ctx); err != nil {
			return nil, fmt.Errorf("release savepoint: %w", err)
		}
		return nil, nil
	}
	if err := sp.Rollback(ctx); err != nil {
		return nil, fmt.Errorf("rollback to savepoint: %w", err)
	}
	if !Undeliverable(applyErr) {
		return nil, fmt.Errorf("apply %s seq %d: %w", r.p.Name(), e.Sequence, applyErr)
	}
	return r.quarantine(ctx, tx, e, applyErr)
}

// quarantine records that the projection skips e because of cause. The
// error text (stored, and printed by the CLI) and the event's own id, type
// and subject are cleaned alike: a message that is in the quarantine because
// its headers are broken must not break the insert too.
func (r *Runner) quarantine(ctx context.Context, tx pgx.Tx, e events.Envelope, cause error) (*quarantined, error) {
	q := &quarantined{e: e, sqlstate: sqlState(cause)}
	if _, err := tx.Exec(ctx, `INSERT INTO projection_quarantine (projection, seq, event_id, type, subject, sqlstate, error)
		VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (projection, seq) DO NOTHING`,
		r.p.Name(), int64(e.Sequence), plain(e.ID), plain(e.Type), plain(e.Subject), q.sqlstate, plain(cause.Error())); err != nil {
		return nil, fmt.Errorf("quarantine %s seq %d: %w", r.p.Name(), e.Sequence, err)
	}
	return q, nil
}

// checkLock makes sure the session holding the advisory lock is still
// there: a session-level lock lasts as long as its session, so a session
// that answers still holds it. In a batch this runs after the checkpoint row
// is locked: a standby can take the lock over only after the answer, and
// cannot commit before this transaction ends (it waits for the checkpoint
// row), so once a new holder has committed, the old one never commits
// again. A ping is one round trip on an otherwise idle connection; reading
// pg_locks for the session's pid gives the same guarantee but scans the
// server's whole lock table on every batch. Runners driven without Run
// (tests applying batches directly) hold no lock and skip this.
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
	// extended_query_builder.go. Nothing reached the server, so the
	// transaction is intact and the failure is the data's.
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
