package projections

import (
	"context"
	"errors"
	"testing"
)

// LatestAuditCheckpoint is the highest sequence's checkpoint, or
// ErrNotFound before the first.
func TestLatestAuditCheckpoint(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	q := NewQueries(f.pool)
	ctx := context.Background()
	if _, err := q.LatestAuditCheckpoint(ctx); !errors.Is(err, ErrNotFound) {
		t.Fatalf("no checkpoint yet: %v", err)
	}
	for _, c := range []struct {
		seq int
		key string
	}{{10, "k1"}, {30, "k2"}, {20, "k1"}} {
		if _, err := f.pool.Exec(ctx, "INSERT INTO audit_checkpoints (seq, hash, key_id, signature) VALUES ($1, '\\x00', $2, '\\x00')", c.seq, c.key); err != nil {
			t.Fatal(err)
		}
	}
	c, err := q.LatestAuditCheckpoint(ctx)
	if err != nil || c.Seq != 30 || c.KeyID != "k2" || c.CreatedAt.IsZero() {
		t.Fatalf("latest %+v, %v", c, err)
	}
}
