package handlers_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
)

// Retries counts the attempts run again after a conflict (not the first
// attempt, not one that failed otherwise, not a last conflict that gives
// up). Not parallel: the count is process-wide.
func TestRetriesCounted(t *testing.T) {
	ctx := context.Background()
	before := handlers.Retries()
	conflicts := 2
	err := handlers.Retry(ctx, func() error {
		if conflicts > 0 {
			conflicts--
			return fmt.Errorf("append: %w", events.ErrConflict)
		}
		return nil
	})
	if err != nil || handlers.Retries()-before != 2 {
		t.Fatalf("two conflicts then success: err %v, %d retries counted, want 2", err, handlers.Retries()-before)
	}

	before = handlers.Retries()
	err = handlers.Retry(ctx, func() error { return fmt.Errorf("append: %w", events.ErrConflict) })
	if e, ok := handlers.AsError(err); !ok || e.Kind != handlers.Conflict || handlers.Retries()-before != handlers.MaxAttempts-1 {
		t.Fatalf("always conflicting: err %v, %d retries counted, want %d", err, handlers.Retries()-before, handlers.MaxAttempts-1)
	}
}
