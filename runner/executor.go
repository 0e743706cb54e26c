// Package runner runs training jobs: the executors that start one attempt
// of a job (a local process group, a Kubernetes Job), the capture of its
// output, and the runner that claims queued jobs, holds their leases and
// reports how each attempt ended.
package runner

import (
	"context"
	"time"
)

// Spec is one attempt of a job as an executor starts it. Env is the whole
// environment the job adds (tracking variables, MAESTRO_PARAM_*, the job's
// own env with secrets resolved); an executor adds only what it must to
// run a program at all (PATH, HOME), never the runner's own environment.
type Spec struct {
	JobID     string
	ProjectID string
	RunID     string
	Name      string
	Attempt   int
	Command   []string
	Env       map[string]string
	// WorkingDir is the directory the command starts in ("" = a fresh
	// directory the executor creates for the attempt and removes after).
	WorkingDir string
	// Image is the container image (kubernetes; the local executor ignores it).
	Image     string
	Resources Resources
	// Grace is how long a stopped attempt has between SIGTERM and SIGKILL.
	Grace time.Duration
	// Timeout is the attempt's timeout. The runner enforces it; an
	// executor that can also have it enforced where the attempt runs
	// (Kubernetes' activeDeadlineSeconds) does, as a backstop for a runner
	// that died (0 = none).
	Timeout time.Duration
}

// Resources are what an attempt asks for, in Kubernetes quantity syntax
// ("500m", "2", "512Mi"); "" = unset.
type Resources struct {
	CPU    string `json:"cpu,omitempty"`
	Memory string `json:"memory,omitempty"`
}

// Stream names where a log line came from.
type Stream string

// Output streams.
const (
	Stdout Stream = "stdout"
	Stderr Stream = "stderr"
)

// MaxLineBytes bounds one captured log line; a longer line is cut there
// and the rest of it is dropped (its end still ends the line).
const MaxLineBytes = 16 << 10

// Line is one line of an attempt's output, without its newline.
type Line struct {
	Time   time.Time `json:"t"`
	Stream Stream    `json:"s"`
	Text   string    `json:"l"`
}

// LogSink receives an attempt's output line by line. It must not block:
// the executor reads the child's pipes in the goroutine that calls it, and
// a child must never wait on its own log capture.
type LogSink func(Line)

// Result is how an attempt's program ended.
type Result struct {
	// ExitCode is the program's exit status; for a program killed by a
	// signal, 128 + the signal's number (the shell's convention).
	ExitCode int
	// Signal names the signal that killed it ("" if it exited).
	Signal string
	// Err is set when the program could not be run or observed at all
	// (command not found, the Kubernetes Job vanished); ExitCode is then -1.
	Err error
}

// Executor starts attempts. Implementations: Local (a process group on
// this machine) and Kubernetes (a batch/v1 Job per attempt).
type Executor interface {
	// Name is the executor's kind ("local", "kubernetes").
	Name() string
	// Start starts the attempt and returns once it runs (or failed to
	// start: then the error says why and nothing is left running). Output
	// goes to logs until the attempt ends.
	Start(ctx context.Context, spec Spec, logs LogSink) (Handle, error)
}

// Handle is a started attempt.
type Handle interface {
	// Wait blocks until the attempt has ended and its output has been
	// delivered to the sink, and returns how it ended. It may be called
	// more than once.
	Wait() Result
	// Stop asks the attempt to end: SIGTERM to its whole process group
	// (or the Job deleted with its pods), SIGKILL after the spec's grace
	// period. It returns at once; Wait reports the end. Calling it again
	// is harmless.
	Stop()
}
