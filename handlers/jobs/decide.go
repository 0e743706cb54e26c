// Package jobs is the write side of training jobs: the job aggregate's
// state, its deciders (submit, claim, cancel, end an attempt, lose it) and
// the service that authorizes and appends them.
package jobs

import (
	"cmp"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
)

// Limits on a job's request: every string and list is bounded (rule 10).
const (
	MaxArgs        = 256
	MaxArgBytes    = 8 << 10
	MaxCommandSize = 64 << 10
	MaxEnv         = 100
	MaxEnvKeyLen   = 128
	MaxEnvValueLen = 8 << 10
	MaxParams      = 100
	MaxNameLen     = 200
	MaxImageLen    = 512
	MaxRetries     = 10
	// MaxTimeout bounds an attempt's run time; it is also the timeout of
	// a job that names none.
	MaxTimeout = 7 * 24 * time.Hour
	// DefaultTimeout is the timeout of a job that names none.
	DefaultTimeout = 24 * time.Hour
	// SecretScheme starts an env value that names a secret the runner
	// resolves ("secret://NAME"): the event records the name only.
	SecretScheme = "secret://"
)

var (
	envKey    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	secretRef = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,128}$`)
	quantity  = regexp.MustCompile(`^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$`)
	// secretish names env variables whose plain values are refused: they
	// would be written to the event stream in clear.
	secretish = regexp.MustCompile(`(?i)(SECRET|PASSWORD|PASSWD|TOKEN|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL)`)
)

// reservedEnv are variables the platform sets for every attempt: a job
// may not override them (its program would log into another run).
var reservedEnv = []string{"MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_TRACKING_TOKEN",
	"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_INSECURE_TLS"}

// Attempt is one run of a job's program by one runner.
type Attempt struct {
	Number    int
	RunnerID  string
	Executor  string
	TokenID   string
	StartedAt time.Time
	EndedAt   time.Time
	Outcome   string // "" while it runs
	ExitCode  *int
	Reason    string
}

// State is a job folded from its events.
type State struct {
	Created         bool
	Spec            events.JobSubmittedData
	State           string
	CancelRequested bool
	// CancelReason is why the platform asked for the cancellation
	// (early_stopped); "" when a person did.
	CancelReason string
	Attempts     []Attempt
	SubmittedAt  time.Time
	// QueuedAt is when the job was last queued (submitted or requeued).
	QueuedAt  time.Time
	UpdatedAt time.Time
	EndedAt   time.Time
	Reason    string
	ExitCode  *int
}

// ID is the job's id.
func (j State) ID() string { return j.Spec.JobID }

// Ended reports whether the job reached a final state.
func (j State) Ended() bool { return Final(j.State) }

// Final reports whether state is a job's final state.
func Final(state string) bool {
	switch state {
	case events.JobSucceeded, events.JobFailed, events.JobCancelled, events.JobTimedOut:
		return true
	}
	return false
}

// Current is the attempt that runs now (nil unless the job is running).
func (j State) Current() *Attempt {
	if j.State != events.JobRunning || len(j.Attempts) == 0 {
		return nil
	}
	return &j.Attempts[len(j.Attempts)-1]
}

// Timeout is the job's per-attempt timeout.
func (j State) Timeout() time.Duration { return time.Duration(j.Spec.TimeoutMS) * time.Millisecond }

// Clone copies the slice evolve appends to (cached states are shared).
func Clone(j State) State {
	j.Attempts = slices.Clone(j.Attempts)
	return j
}

// Evolve folds one event into job state.
func Evolve(j State, e events.Envelope) (State, error) {
	j.UpdatedAt = e.Time
	switch e.Type {
	case events.JobSubmitted:
		var d events.JobSubmittedData
		if err := e.Decode(&d); err != nil {
			return j, err
		}
		j = State{Created: true, Spec: d, State: events.JobQueued, SubmittedAt: e.Time, QueuedAt: e.Time, UpdatedAt: e.Time}
	case events.JobAttemptStarted:
		var d events.JobAttemptStartedData
		if err := e.Decode(&d); err != nil {
			return j, err
		}
		j.State = events.JobRunning
		j.Attempts = append(j.Attempts, Attempt{Number: d.Attempt, RunnerID: d.RunnerID, Executor: d.Executor, TokenID: d.TokenID, StartedAt: e.Time})
	case events.JobCancelRequested:
		var d events.JobCancelRequestedData
		if err := e.Decode(&d); err != nil {
			return j, err
		}
		j.CancelRequested, j.CancelReason = true, d.Reason
	case events.JobAttemptEnded:
		var d events.JobAttemptEndedData
		if err := e.Decode(&d); err != nil {
			return j, err
		}
		if n := len(j.Attempts); n > 0 && j.Attempts[n-1].Number == d.Attempt {
			a := &j.Attempts[n-1]
			a.EndedAt, a.Outcome, a.ExitCode, a.Reason = e.Time, d.Outcome, d.ExitCode, d.Reason
		}
	case events.JobRequeued:
		j.State, j.QueuedAt = events.JobQueued, e.Time
	case events.JobEnded:
		var d events.JobEndedData
		if err := e.Decode(&d); err != nil {
			return j, err
		}
		j.State, j.Reason, j.ExitCode, j.EndedAt = d.State, d.Reason, d.ExitCode, e.Time
	}
	return j, nil
}

// Submit is the command to queue a job; the service fills the ids, the
// project, the experiment, the run and the artifact's blob.
type Submit struct {
	events.JobSubmittedData
	Timeout time.Duration
}

func invalid(format string, args ...any) error {
	return handlers.Errorf(handlers.Invalid, "validation-failed", format, args...)
}

// CheckSubmit validates and canonicalises a job request before anything
// is created for it (the run, the experiment): every bound of rule 10, and
// no secret in clear.
func CheckSubmit(c *Submit) error {
	if len(c.Command) == 0 {
		return invalid("command must name the program to run: [\"python\", \"train.py\"]")
	}
	if len(c.Command) > MaxArgs {
		return invalid("command has %d arguments, at most %d", len(c.Command), MaxArgs)
	}
	size := 0
	for i, a := range c.Command {
		size += len(a)
		if len(a) > MaxArgBytes || !handlers.PlainText(a) || strings.ContainsRune(a, 0) {
			return invalid("command[%d] must be at most %d bytes of text", i, MaxArgBytes)
		}
	}
	if c.Command[0] == "" {
		return invalid("command[0] must name the program to run")
	}
	if size > MaxCommandSize {
		return invalid("the command is %d bytes, at most %d", size, MaxCommandSize)
	}
	c.Name = strings.TrimSpace(c.Name)
	if c.Name == "" {
		c.Name = path.Base(c.Command[0])
	}
	if len(c.Name) > MaxNameLen || !handlers.PlainText(c.Name) || strings.ContainsAny(c.Name, "\r\n\t") {
		return invalid("name must be at most %d characters on one line", MaxNameLen)
	}
	if len(c.Params) > MaxParams {
		return invalid("at most %d params", MaxParams)
	}
	vars := map[string]string{}
	for k := range c.Params {
		v := ParamVar(k)
		if prev, dup := vars[v]; dup {
			return invalid("params %q and %q both become %s", prev, k, v)
		}
		vars[v] = k
	}
	if len(c.Env) > MaxEnv {
		return invalid("at most %d env variables", MaxEnv)
	}
	for k, v := range c.Env {
		if len(k) > MaxEnvKeyLen || !envKey.MatchString(k) {
			return invalid("env %q: names are letters, digits and _, not starting with a digit, at most %d", k, MaxEnvKeyLen)
		}
		if strings.HasPrefix(strings.ToUpper(k), "MAESTRO_") || slices.Contains(reservedEnv, strings.ToUpper(k)) {
			return invalid("env %s is set by Maestro for every job and cannot be overridden", k)
		}
		if len(v) > MaxEnvValueLen || !handlers.PlainText(v) {
			return invalid("env %s: the value must be at most %d bytes of text", k, MaxEnvValueLen)
		}
		if ref, ok := strings.CutPrefix(v, SecretScheme); ok {
			if !secretRef.MatchString(ref) {
				return invalid("env %s: a secret reference is secret://NAME, NAME letters, digits, '.', '_' or '-'", k)
			}
			continue
		}
		if secretish.MatchString(k) && v != "" {
			return invalid("env %s looks like a secret: pass it as secret://NAME (resolved by the runner, see docs/ARCHITECTURE.md \"Job secrets\") so it is never stored in clear", k)
		}
	}
	if c.WorkingDir != "" {
		if len(c.WorkingDir) > 1024 || !handlers.PlainText(c.WorkingDir) {
			return invalid("working_dir must be at most 1024 characters of text")
		}
		if !path.IsAbs(c.WorkingDir) {
			clean := path.Clean(c.WorkingDir)
			if clean == ".." || strings.HasPrefix(clean, "../") {
				return invalid("working_dir %q leaves the attempt's directory", c.WorkingDir)
			}
			c.WorkingDir = clean
		}
	}
	if len(c.Image) > MaxImageLen || !handlers.PlainText(c.Image) || strings.ContainsAny(c.Image, " \t") {
		return invalid("image must be an image reference of at most %d characters", MaxImageLen)
	}
	for name, q := range map[string]string{"cpu": c.Resources.CPU, "memory": c.Resources.Memory} {
		if q != "" && (len(q) > 32 || !quantity.MatchString(q)) {
			return invalid("resources.%s %q is not a quantity such as 500m, 2, 512Mi or 4Gi", name, q)
		}
	}
	switch {
	case c.Timeout == 0:
		c.Timeout = DefaultTimeout
	case c.Timeout < time.Second || c.Timeout > MaxTimeout:
		return invalid("timeout must be between 1s and %s", MaxTimeout)
	}
	c.TimeoutMS = c.Timeout.Milliseconds()
	if c.MaxRetries < 0 || c.MaxRetries > MaxRetries {
		return invalid("max_retries must be between 0 and %d", MaxRetries)
	}
	return nil
}

// ParamVar is the environment variable a param arrives in:
// MAESTRO_PARAM_ and the key upper-cased, every character that cannot be in
// a variable name replaced by _ ("learning-rate" → MAESTRO_PARAM_LEARNING_RATE).
func ParamVar(key string) string {
	var b strings.Builder
	b.WriteString("MAESTRO_PARAM_")
	for _, r := range strings.ToUpper(key) {
		if r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

func subject(id string) string { return events.Subject(events.AggJob, id) }

// DecideSubmit queues a new job (c checked by CheckSubmit).
func DecideSubmit(j State, c Submit) ([]handlers.Change, error) {
	if j.Created {
		return nil, handlers.Errorf(handlers.Conflict, "job-exists", "job %s already exists", c.JobID)
	}
	return []handlers.Change{{Subject: subject(c.JobID), Type: events.JobSubmitted, Data: c.JobSubmittedData}}, nil
}

// ErrNotQueued refuses a claim of a job another runner claimed first (or
// that ended): the runner leaves it.
var ErrNotQueued = handlers.Errorf(handlers.Conflict, "job-not-queued", "the job is not queued")

// DecideClaim starts the next attempt of a queued job on a runner.
func DecideClaim(j State, runnerID, executor, tokenID string) ([]handlers.Change, error) {
	if !j.Created || j.State != events.JobQueued {
		return nil, ErrNotQueued
	}
	return []handlers.Change{{Subject: subject(j.ID()), Type: events.JobAttemptStarted,
		Data: events.JobAttemptStartedData{JobID: j.ID(), Attempt: len(j.Attempts) + 1, RunnerID: runnerID, Executor: executor, TokenID: tokenID}}}, nil
}

// DecideCancel stops a job: a queued one ends at once, a running one is
// asked to stop (its runner ends the attempt as cancelled). Cancelling
// again changes nothing; an ended job cannot be cancelled. reason is the
// platform's ("" when a person cancels): the job ends with it.
func DecideCancel(j State, reason string) ([]handlers.Change, error) {
	if !j.Created {
		return nil, handlers.Errorf(handlers.NotFound, "not-found", "job not found")
	}
	if j.Ended() {
		return nil, handlers.Errorf(handlers.Conflict, "job-ended", "the job already ended (%s)", j.State)
	}
	if j.CancelRequested {
		return nil, nil
	}
	changes := []handlers.Change{{Subject: subject(j.ID()), Type: events.JobCancelRequested, Data: events.JobCancelRequestedData{JobID: j.ID(), Reason: reason}}}
	if j.State == events.JobQueued {
		changes = append(changes, ended(j, events.JobCancelled, cmp.Or(reason, "cancelled"), nil))
	}
	return changes, nil
}

// ErrNotCurrent refuses to end an attempt that is not the job's running
// one: its lease expired and the job moved on. The runner must stop the
// attempt's program, which nobody tracks any more.
var ErrNotCurrent = handlers.Errorf(handlers.Conflict, "attempt-not-current", "the attempt is no longer the job's running attempt")

// EndAttempt is how an attempt ended.
type EndAttempt struct {
	Attempt  int
	Outcome  string
	ExitCode *int
	Reason   string
}

// DecideEndAttempt records the end of the running attempt and what
// follows: a retry (requeued) when the attempt was lost, or failed with
// retry_on_failure, and retries are left and no cancellation was asked
// for; otherwise the job's end.
func DecideEndAttempt(j State, c EndAttempt) ([]handlers.Change, error) {
	cur := j.Current()
	if cur == nil || cur.Number != c.Attempt {
		return nil, ErrNotCurrent
	}
	switch c.Outcome {
	case events.OutcomeSucceeded, events.OutcomeFailed, events.OutcomeCancelled, events.OutcomeTimedOut, events.OutcomeLost:
	default:
		return nil, fmt.Errorf("jobs: unknown attempt outcome %q", c.Outcome)
	}
	changes := []handlers.Change{{Subject: subject(j.ID()), Type: events.JobAttemptEnded,
		Data: events.JobAttemptEndedData{JobID: j.ID(), Attempt: c.Attempt, Outcome: c.Outcome, ExitCode: c.ExitCode, Reason: c.Reason}}}
	retriesLeft := len(j.Attempts)-1 < j.Spec.MaxRetries && !j.CancelRequested
	what := fmt.Sprintf("attempt %d %s", c.Attempt, c.Reason)
	if c.Reason == "" {
		what = fmt.Sprintf("attempt %d %s", c.Attempt, c.Outcome)
	}
	switch {
	case c.Outcome == events.OutcomeLost && j.CancelRequested:
		return append(changes, ended(j, events.JobCancelled, cmp.Or(j.CancelReason, "cancelled"), nil)), nil
	case c.Outcome == events.OutcomeCancelled && j.CancelReason != "":
		// The platform's reason (early_stopped) is the job's, not the
		// runner's account of stopping the program.
		return append(changes, ended(j, events.JobCancelled, j.CancelReason, c.ExitCode)), nil
	case c.Outcome == events.OutcomeLost && retriesLeft,
		c.Outcome == events.OutcomeFailed && j.Spec.RetryOnFailure && retriesLeft:
		return append(changes, handlers.Change{Subject: subject(j.ID()), Type: events.JobRequeued,
			Data: events.JobRequeuedData{JobID: j.ID(), Attempt: c.Attempt + 1, Reason: what}}), nil
	case c.Outcome == events.OutcomeLost:
		return append(changes, ended(j, events.JobFailed, what+"; no retries left", nil)), nil
	default:
		return append(changes, ended(j, c.Outcome, c.Reason, c.ExitCode)), nil
	}
}

func ended(j State, state, reason string, exit *int) handlers.Change {
	return handlers.Change{Subject: subject(j.ID()), Type: events.JobEnded,
		Data: events.JobEndedData{JobID: j.ID(), RunID: j.Spec.RunID, State: state, Reason: reason, ExitCode: exit}}
}

// RunStatus is the MLflow status of a job's run in job state state.
func RunStatus(state string) string {
	switch state {
	case events.JobQueued:
		return "SCHEDULED"
	case events.JobRunning:
		return "RUNNING"
	case events.JobSucceeded:
		return "FINISHED"
	case events.JobFailed, events.JobTimedOut:
		return "FAILED"
	default:
		return "KILLED"
	}
}
