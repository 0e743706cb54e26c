package projections

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
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
		if err != nil && !errors.Is(err, errRestart) && !errors.Is(err, errStandby) {
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
	defer func() {
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
			now, err := r.checkpoint(ctx)
			if err != nil {
				return err
			}
			if now != cp {
				return errRestart
			}
			continue
		case m := <-msgs:
			if batch, err = appendMsg(batch, m); err != nil {
				return err
			}
		}
	drain:
		for len(batch) < r.cfg.BatchSize {
			select {
			case m := <-msgs:
				if batch, err = appendMsg(batch, m); err != nil {
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

func appendMsg(batch []events.Envelope, m jetstream.Msg) ([]events.Envelope, error) {
	meta, err := m.Metadata()
	if err != nil {
		return batch, fmt.Errorf("message metadata: %w", err)
	}
	env, err := events.FromHeaders(m.Subject(), m.Headers(), m.Data(), meta.Sequence.Stream)
	if err != nil {
		return batch, err
	}
	return append(batch, env), nil
}

// applyBatch applies the events after the checkpoint and advances it, in
// one transaction. Events at or below the checkpoint (a redelivery) are
// skipped, which makes the projection effectively-once.
func (r *Runner) applyBatch(ctx context.Context, expected uint64, batch []events.Envelope) (uint64, error) {
	tx, err := r.pool.Begin(ctx)
	if err != nil {
		return expected, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck // no-op after commit
	var cp int64
	if err := tx.QueryRow(ctx, "SELECT last_seq FROM projection_checkpoints WHERE name = $1 FOR UPDATE", r.p.Name()).Scan(&cp); err != nil {
		return expected, fmt.Errorf("lock checkpoint: %w", err)
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
	if err := r.p.Apply(ctx, tx, fresh); err != nil {
		return expected, fmt.Errorf("apply %s: %w", r.p.Name(), err)
	}
	last := fresh[len(fresh)-1].Sequence
	if _, err := tx.Exec(ctx, "UPDATE projection_checkpoints SET last_seq = $2, updated_at = now() WHERE name = $1", r.p.Name(), int64(last)); err != nil {
		return expected, fmt.Errorf("advance checkpoint: %w", err)
	}
	if _, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", NotifyChannel, fmt.Sprintf("%s:%d", r.p.Name(), last)); err != nil {
		return expected, fmt.Errorf("notify: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return expected, fmt.Errorf("commit: %w", err)
	}
	return last, nil
}
