package projections

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

// AuditCheckpoint is a signed checkpoint of the audit trail's hash chain
// (AuditSealer) as the admin dashboard shows it.
type AuditCheckpoint struct {
	Seq       uint64
	KeyID     string
	CreatedAt time.Time
}

// LatestAuditCheckpoint is the newest signed checkpoint; ErrNotFound when
// none has been written yet.
func (q *Queries) LatestAuditCheckpoint(ctx context.Context) (AuditCheckpoint, error) {
	var c AuditCheckpoint
	var seq int64
	err := q.pool.QueryRow(ctx, "SELECT seq, key_id, created_at FROM audit_checkpoints ORDER BY seq DESC LIMIT 1").Scan(&seq, &c.KeyID, &c.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return AuditCheckpoint{}, ErrNotFound
	}
	c.Seq, c.CreatedAt = uint64(seq), c.CreatedAt.UTC()
	return c, err
}
