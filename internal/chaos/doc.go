// Package chaos is the chaos suite (issue 10): scenarios that run the real
// `maestro` binary (serve, or api and worker roles on one NATS and one
// PostgreSQL), break it on purpose — kill -9 mid-burst, artifact store
// failures — and then check one invariant after every scenario:
//
//   - every command answered 2xx is in the event stream exactly once;
//   - a client that resends an unanswered command with the same
//     Idempotency-Key gets the outcome of the command that was stored;
//   - the hot model's version numbers stay gapless;
//   - the read models equal a rebuild from the stream
//     (`maestro projections verify`);
//   - nothing needs a manual step: after a restart /readyz answers 200 and
//     commands work.
//
// Everything lives in the package's tests: driver_test.go (processes,
// keyed clients, the invariant), one file per scenario. `go test
// ./internal/chaos/` runs each scenario once (part of `make test`);
// `make chaos` runs them with -chaos.reps 20 and prints the results table.
package chaos
