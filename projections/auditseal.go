package projections

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/maestro-ml/maestro/events"
)

// AuditSealerConfig configures an AuditSealer.
type AuditSealerConfig struct {
	// Key signs the checkpoints; KeyID is its published id
	// (auth.KeyID of its public half).
	Key   ed25519.PrivateKey
	KeyID string
	// Interval is how often the sealer looks for new entries (default 1s):
	// a checkpoint seals the trail's newest entry at most once per
	// interval, and only when the trail has grown.
	Interval time.Duration
	Logger   *slog.Logger
	// Events, when set, is the stream the audit projection follows: the
	// sealer then signs a hash only once it has recomputed it from the
	// stream (as `maestro audit verify` does), so a row changed, deleted
	// or re-chained in PostgreSQL is never signed. Without it the sealer
	// signs the stored hash as it is (benchmarks).
	Events *events.Store
}

// AuditSealer writes the audit trail's signed checkpoints (audit_checkpoints):
// the hash of the newest stored entry, signed with the platform's audit key
// once recomputed from the event stream (AuditSealerConfig.Events).
// It runs beside the audit projection in the worker role rather than inside
// it, because a projection only queues statements and a signature cannot be
// made in SQL; the checkpoint it writes is about entries already committed.
type AuditSealer struct {
	pool *pgxpool.Pool
	cfg  AuditSealerConfig
	// published is set once the key is in audit_keys.
	published bool
	// checked is the newest sequence whose hash this sealer recomputed
	// from the stream, and that hash (Events set): the next pass reads
	// the stream from there. Zero: from the newest checkpoint signed by
	// this sealer's key, else from the start.
	checked     uint64
	checkedHash []byte
}

// NewAuditSealer returns a sealer writing to pool's audit tables.
func NewAuditSealer(pool *pgxpool.Pool, cfg AuditSealerConfig) *AuditSealer {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &AuditSealer{pool: pool, cfg: cfg}
}

// sealerLock is the advisory lock one sealing pass holds, so two workers do
// not interleave their reads and inserts.
var sealerLock = lockKey("audit.sealer")

// Run seals every Interval until ctx ends. A failed pass is logged and
// retried at the next tick.
func (s *AuditSealer) Run(ctx context.Context) {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	var pause time.Duration // after a divergence, which costs a scan of the stream
	for {
		_, err := s.Seal(ctx)
		switch {
		case err == nil || ctx.Err() != nil:
			pause = 0
		case errors.Is(err, ErrTrailDiverges):
			pause = min(max(2*pause, 10*time.Second), 5*time.Minute)
			s.cfg.Logger.Error("audit sealer refuses to sign: run maestro audit verify", "err", err, "retry_in", pause)
		default:
			s.cfg.Logger.Warn("audit sealer", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if pause > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(pause):
			}
		}
	}
}

// Seal writes a checkpoint for the newest applied entry if none covers it
// yet, and returns its sequence (0 when nothing was sealed). During a
// rebuild the newest entry is below the last checkpoint: nothing is sealed
// until the rebuilt trail passes it.
func (s *AuditSealer) Seal(ctx context.Context) (uint64, error) {
	var seq, sealed int64
	var hash []byte
	// The newest entry the projection has applied (at or below its
	// checkpoint): a row written by hand beyond it is never sealed.
	err := s.pool.QueryRow(ctx, `SELECT e.seq, e.hash, COALESCE((SELECT max(seq) FROM audit_checkpoints), 0)
		FROM audit_entries e
		WHERE e.seq <= COALESCE((SELECT last_seq FROM projection_checkpoints WHERE name = 'audit'), 0)
		ORDER BY e.seq DESC LIMIT 1`).Scan(&seq, &hash, &sealed)
	if errors.Is(err, pgx.ErrNoRows) {
		seq = 0
	} else if err != nil {
		return 0, fmt.Errorf("seal audit trail: newest entry: %w", err)
	}
	if seq > sealed && s.cfg.Events != nil {
		// The check reads the stream (all of it after a divergence): in
		// no transaction, so no lock is held meanwhile (a Reset's TRUNCATE
		// or a migration would queue behind it, and every projection
		// behind them). The signature below is made only if the entry
		// still has the hash checked here.
		if err := s.check(ctx, s.pool, uint64(seq), hash); err != nil {
			return 0, err
		}
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("seal audit trail: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after commit
	var locked bool
	if err := tx.QueryRow(ctx, "SELECT pg_try_advisory_xact_lock($1)", sealerLock).Scan(&locked); err != nil {
		return 0, fmt.Errorf("seal audit trail: %w", err)
	}
	if !locked {
		return 0, nil // another worker is sealing now
	}
	if !s.published {
		pub := s.cfg.Key.Public().(ed25519.PublicKey)
		if _, err := tx.Exec(ctx, "INSERT INTO audit_keys (key_id, public_key) VALUES ($1, $2) ON CONFLICT (key_id) DO NOTHING",
			s.cfg.KeyID, []byte(pub)); err != nil {
			return 0, fmt.Errorf("publish audit key: %w", err)
		}
	}
	if seq > sealed {
		var now []byte
		err := tx.QueryRow(ctx, `SELECT hash FROM audit_entries WHERE seq = $1
			AND seq <= COALESCE((SELECT last_seq FROM projection_checkpoints WHERE name = 'audit'), 0)`, seq).Scan(&now)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return 0, fmt.Errorf("seal audit trail at %d: %w", seq, err)
		}
		if !bytes.Equal(now, hash) {
			seq = 0 // changed since the check (a rebuild, a reset): the next round checks again
		}
	}
	if seq > sealed {
		sig := ed25519.Sign(s.cfg.Key, CheckpointMessage(uint64(seq), hash))
		if _, err := tx.Exec(ctx, `INSERT INTO audit_checkpoints (seq, hash, key_id, signature) VALUES ($1, $2, $3, $4)
			ON CONFLICT (seq) DO NOTHING`, seq, hash, s.cfg.KeyID, sig); err != nil {
			return 0, fmt.Errorf("seal audit trail at %d: %w", seq, err)
		}
	} else {
		seq = 0
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("seal audit trail: commit: %w", err)
	}
	s.published = true
	if seq > 0 && s.cfg.Events != nil {
		s.checked, s.checkedHash = uint64(seq), hash
	}
	return uint64(seq), nil
}

// ErrTrailDiverges means the stored audit trail's hash at the sequence to
// be sealed is not the one the event stream implies: the sealer refuses to
// sign it (run `maestro audit verify`).
var ErrTrailDiverges = errors.New("the stored audit trail does not follow from the event stream")

// check recomputes the chain's hash at seq from the stream and compares it
// with the stored hash. It starts from the last hash this sealer
// recomputed, or the newest checkpoint signed by its own key (only its own:
// a key added to audit_keys by someone else must not make forged
// checkpoints the base of a genuine signature); those are shortcuts, so on
// a difference it recomputes once more from the start of the stream (a
// rebuild by a build whose entries differ makes a new chain, which the
// stream still implies) before it refuses.
func (s *AuditSealer) check(ctx context.Context, tx queryer, seq uint64, stored []byte) error {
	from, prev := s.checked, s.checkedHash
	if from == 0 || from > seq {
		from, prev = 0, GenesisHash
		var cseq int64
		var chash, sig []byte
		err := tx.QueryRow(ctx, `SELECT seq, hash, signature FROM audit_checkpoints WHERE key_id = $1 AND seq <= $2 ORDER BY seq DESC LIMIT 1`,
			s.cfg.KeyID, int64(seq)).Scan(&cseq, &chash, &sig)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return fmt.Errorf("seal audit trail: last checkpoint: %w", err)
		case ed25519.Verify(s.cfg.Key.Public().(ed25519.PublicKey), CheckpointMessage(uint64(cseq), chash), sig):
			from, prev = uint64(cseq), chash
		}
	}
	want, err := s.recompute(ctx, tx, from, prev, seq)
	if err == nil && !bytes.Equal(want, stored) && from > 0 {
		want, err = s.recompute(ctx, tx, 0, GenesisHash, seq)
	}
	if err != nil {
		return fmt.Errorf("seal audit trail at %d: %w", seq, err)
	}
	if !bytes.Equal(want, stored) {
		return fmt.Errorf("seal audit trail at %d: %w (hash %x, the stream gives %x)", seq, ErrTrailDiverges, stored, want)
	}
	return nil
}

// recompute folds the entries the projection makes of the stream's events
// after from up to through onto prev, skipping the events it quarantined
// (and refusing a quarantine record the projection would not have written,
// see probeQuarantined: it hides a deleted row).
func (s *AuditSealer) recompute(ctx context.Context, tx queryer, from uint64, prev []byte, through uint64) ([]byte, error) {
	quarantined := map[uint64]bool{}
	if err := collect(ctx, tx, "SELECT seq FROM projection_quarantine WHERE projection = 'audit' AND seq > $1 AND seq <= $2",
		[]any{int64(from), int64(through)}, func(r pgx.Rows) error {
			var q int64
			err := r.Scan(&q)
			quarantined[uint64(q)] = true
			return err
		}); err != nil {
		return nil, fmt.Errorf("quarantine: %w", err)
	}
	expected := make(chan expectedEntry, 256)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	readErr := make(chan error, 1)
	go func() { readErr <- readExpected(rctx, s.cfg.Events, from, through, quarantined, expected, nil) }()
	var probe []events.Envelope
	var bad error
	for x := range expected {
		switch {
		case bad != nil:
		case x.skip:
			if x.env != nil {
				probe = append(probe, *x.env)
			}
		case x.err != nil:
			bad = fmt.Errorf("event %d: %w", x.seq, x.err)
		default:
			prev = ChainNext(prev, x.digest)
		}
	}
	if err := <-readErr; err != nil {
		return nil, err
	}
	if bad != nil {
		return nil, bad
	}
	storable, err := probeQuarantined(ctx, s.pool, probe)
	if err != nil {
		return nil, err
	}
	if len(storable) > 0 {
		return nil, fmt.Errorf("%w (event %d is recorded as quarantined, yet its entry stores)", ErrTrailDiverges, storable[0].Sequence)
	}
	return prev, nil
}
