package projections

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
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
}

// AuditSealer writes the audit trail's signed checkpoints (audit_checkpoints):
// the hash of the newest stored entry, signed with the platform's audit key.
// It runs beside the audit projection in the worker role rather than inside
// it, because a projection only queues statements and a signature cannot be
// made in SQL; the checkpoint it writes is about entries already committed.
type AuditSealer struct {
	pool *pgxpool.Pool
	cfg  AuditSealerConfig
	// published is set once the key is in audit_keys.
	published bool
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
	for {
		if _, err := s.Seal(ctx); err != nil && ctx.Err() == nil {
			s.cfg.Logger.Warn("audit sealer", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Seal writes a checkpoint for the newest applied entry if none covers it
// yet, and returns its sequence (0 when nothing was sealed). During a
// rebuild the newest entry is below the last checkpoint: nothing is sealed
// until the rebuilt trail passes it.
func (s *AuditSealer) Seal(ctx context.Context) (uint64, error) {
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
	var seq, sealed int64
	var hash []byte
	// The newest entry the projection has applied (at or below its
	// checkpoint): a row written by hand beyond it is never sealed.
	err = tx.QueryRow(ctx, `SELECT e.seq, e.hash, COALESCE((SELECT max(seq) FROM audit_checkpoints), 0)
		FROM audit_entries e
		WHERE e.seq <= COALESCE((SELECT last_seq FROM projection_checkpoints WHERE name = 'audit'), 0)
		ORDER BY e.seq DESC LIMIT 1`).Scan(&seq, &hash, &sealed)
	if errors.Is(err, pgx.ErrNoRows) {
		seq = 0
	} else if err != nil {
		return 0, fmt.Errorf("seal audit trail: newest entry: %w", err)
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
	return uint64(seq), nil
}
