package events

import (
	"context"
	"slices"
	"sync"
)

// Receipt records the types of the events a command stored (appended, or
// found stored by an earlier attempt of the same command). The API gives
// each command request one, and waits for read-your-writes only on the
// projections that handle one of these types.
type Receipt struct {
	mu    sync.Mutex
	types []string
}

type receiptKey struct{}

// WithReceipt returns ctx carrying a new, empty receipt.
func WithReceipt(ctx context.Context) (context.Context, *Receipt) {
	rc := &Receipt{}
	return context.WithValue(ctx, receiptKey{}, rc), rc
}

func (rc *Receipt) add(types ...string) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, t := range types {
		if !slices.Contains(rc.types, t) {
			rc.types = append(rc.types, t)
		}
	}
}

// Types are the distinct event types stored so far, in first-stored order.
func (rc *Receipt) Types() []string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.types)
}

// ReceiptFrom returns ctx's receipt, if it has one.
func ReceiptFrom(ctx context.Context) (*Receipt, bool) {
	rc, ok := ctx.Value(receiptKey{}).(*Receipt)
	return rc, ok
}

// note records stored event types on ctx's receipt, if it has one.
func note(ctx context.Context, types ...string) {
	if rc, ok := ReceiptFrom(ctx); ok {
		rc.add(types...)
	}
}
