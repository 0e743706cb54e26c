package api

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// dependencyDown reports whether err says a dependency (PostgreSQL, NATS,
// the artifact store) cannot be reached or refused to serve, rather than
// that the request or the code is wrong. Such a request answers 503 with
// Retry-After: the client may retry it (with its Idempotency-Key, a
// command's retry is safe), and an operator's outage is not a 500 with an
// "unexpected error" that hides what is down.
func dependencyDown(err error) bool {
	var (
		connect *pgconn.ConnectError
		pg      *pgconn.PgError
		api     *jetstream.APIError
		netErr  net.Error
	)
	switch {
	case errors.Is(err, context.Canceled):
		// The caller gave up (a client that went away): no outage. pgx
		// reports a query never sent for a cancelled context as a
		// timeout that is safe to retry.
		return false
	case errors.As(err, &connect), pgconn.Timeout(err):
		return true
	case errors.As(err, &pg):
		// Class 08: connection exception; 57P01-03: the server is shutting
		// down, crashed or starting; 53300: too many connections.
		return strings.HasPrefix(pg.Code, "08") || pg.Code == "57P01" || pg.Code == "57P02" || pg.Code == "57P03" || pg.Code == "53300"
	case errors.As(err, &api):
		// JetStream's own 503: no meta leader, the system temporarily down;
		// or its 429 for too many atomic batches in flight on the stream
		// (10210, 10211): overloaded for now, and a retry is what helps.
		return api.Code == http.StatusServiceUnavailable || api.Code == http.StatusTooManyRequests
	case errors.As(err, &netErr), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE), errors.Is(err, io.ErrUnexpectedEOF):
		return true
	case errors.Is(err, nats.ErrTimeout), errors.Is(err, nats.ErrNoResponders), errors.Is(err, nats.ErrConnectionClosed),
		errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrDisconnected), errors.Is(err, nats.ErrNoServers),
		errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, jetstream.ErrNoHeartbeat), errors.Is(err, jetstream.ErrServerShutdown):
		// No response from the stream: during a leader election, an append
		// may or may not have been stored; a retry with the same
		// Idempotency-Key finds out.
		return true
	case errors.Is(err, context.DeadlineExceeded):
		// A dependency call's own deadline ran out (the request's own
		// deadline is handled by the caller).
		return true
	}
	return false
}
