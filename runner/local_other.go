//go:build !linux

package runner

import (
	"context"
	"errors"
	"time"
)

// LocalConfig configures the local executor.
type LocalConfig struct {
	WorkDir      string
	DrainTimeout time.Duration
}

// Local is the local executor. It needs Linux (process groups with a
// parent-death signal, so that no job outlives its runner): elsewhere
// every attempt fails to start, saying so; use the kubernetes executor.
type Local struct{}

// NewLocal returns the local executor.
func NewLocal(LocalConfig) *Local { return &Local{} }

// Name implements Executor.
func (*Local) Name() string { return "local" }

// Start implements Executor: it always fails off Linux.
func (*Local) Start(context.Context, Spec, LogSink) (Handle, error) {
	return nil, errors.New("the local executor runs on Linux only: use MAESTRO_RUNNER_EXECUTOR=kubernetes")
}

// HideFromJobs does nothing where no local job can run.
func HideFromJobs() error { return nil }
