package flows

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	pkgerrors "github.com/pkg/errors"
)

// Only what no retry can cure is poisoned: an outage must not make a
// reaction skip an event (it is delivered again, without bound).
func TestPoisoned(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{errors.New("nats: timeout"), false},
		{fmt.Errorf("load job: %w", context.DeadlineExceeded), false},
		{context.Canceled, false},
		{Permanent(errors.New("undecodable")), true},
		{fmt.Errorf("wrapped: %w", Permanent(errors.New("undecodable"))), true},
		{pkgerrors.WithStack(middleware.RecoveredPanicError{V: "boom"}), true},
		{Permanent(context.Canceled), false},
	} {
		if got := poisoned(tc.err); got != tc.want {
			t.Errorf("poisoned(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
	if Permanent(nil) != nil {
		t.Error("Permanent(nil) is not nil")
	}
}
