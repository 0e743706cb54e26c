package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Outages of Postgres, NATS or the network are 503s; a client that went
// away, a refusal of the data and a programming error are not.
func TestDependencyDown(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("load maestro.events.model.x: %w", err) }
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"connection refused", wrap(syscall.ECONNREFUSED), true},
		{"connection reset", wrap(syscall.ECONNRESET), true},
		{"unexpected EOF", wrap(io.ErrUnexpectedEOF), true},
		{"postgres shutting down", wrap(&pgconn.PgError{Code: "57P01"}), true},
		{"postgres connection exception", wrap(&pgconn.PgError{Code: "08006"}), true},
		{"too many connections", wrap(&pgconn.PgError{Code: "53300"}), true},
		{"nats timeout", wrap(nats.ErrTimeout), true},
		{"no responders", wrap(nats.ErrNoResponders), true},
		{"no response from stream", wrap(jetstream.ErrNoStreamResponse), true},
		{"jetstream 503", wrap(&jetstream.APIError{Code: 503, Description: "JetStream system temporarily unavailable"}), true},
		{"a dependency's own deadline", wrap(context.DeadlineExceeded), true},
		{"client went away", wrap(context.Canceled), false},
		{"unique violation", wrap(&pgconn.PgError{Code: "23505"}), false},
		{"a PgError without a code", wrap(&pgconn.PgError{}), false},
		{"jetstream 400", wrap(&jetstream.APIError{Code: 400}), false},
		{"jetstream too many atomic batches in flight", wrap(&jetstream.APIError{Code: 429, ErrorCode: 10210, Description: "atomic publish too many inflight"}), true},
		{"a plain bug", wrap(errors.New("nil map")), false},
	} {
		if got := dependencyDown(c.err); got != c.want {
			t.Errorf("%s: dependencyDown = %v, want %v", c.name, got, c.want)
		}
	}
}
