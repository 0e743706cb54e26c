package events

// Training jobs (subject maestro.events.job.<id>). A job is a request to
// run a command with a tracked run; runners claim it with an attempt
// appended under optimistic concurrency, and every transition of the job
// (queued → running → succeeded | failed | cancelled | timed_out, with
// retries as further attempts) is one of these events.
const (
	JobSubmitted = "maestro.job.submitted.v1"
	// JobAttemptStarted is a runner's claim: attempt N of the job is its
	// to run, held by a lease it renews (runner.Leases) until the attempt
	// ends or the lease expires.
	JobAttemptStarted = "maestro.job.attempt_started.v1"
	// JobCancelRequested asks the runner of a running job to stop it.
	JobCancelRequested = "maestro.job.cancel_requested.v1"
	// JobAttemptEnded: an attempt is over (its program ended, was stopped,
	// or its runner's lease expired: outcome "lost").
	JobAttemptEnded = "maestro.job.attempt_ended.v1"
	// JobRequeued puts a job whose attempt ended back in the queue for a
	// retry (max_retries).
	JobRequeued = "maestro.job.requeued.v1"
	// JobEnded is the job's final state.
	JobEnded = "maestro.job.ended.v1"
)

// AggJob is the training job aggregate type.
const AggJob = "job"

// Job states.
const (
	JobQueued    = "queued"
	JobRunning   = "running"
	JobSucceeded = "succeeded"
	JobFailed    = "failed"
	JobCancelled = "cancelled"
	JobTimedOut  = "timed_out"
)

// Attempt outcomes: the job states an attempt can end in, and lost (its
// runner stopped renewing its lease).
const (
	OutcomeSucceeded = JobSucceeded
	OutcomeFailed    = JobFailed
	OutcomeCancelled = JobCancelled
	OutcomeTimedOut  = JobTimedOut
	OutcomeLost      = "lost"
)

// JobArtifact is a run artifact (a .tar.gz or .zip) unpacked into the
// attempt's working directory before it starts, resolved at submission to
// the blob that holds it.
type JobArtifact struct {
	RunID  string `json:"run_id"`
	Path   string `json:"path"`
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

// JobResources are what each attempt asks for (Kubernetes quantities).
type JobResources struct {
	CPU    string `json:"cpu,omitempty"`
	Memory string `json:"memory,omitempty"`
}

// JobSubmittedData: a new job, queued. Env values are as sent, except that
// a value "secret://NAME" is a reference the runner resolves from its own
// secret store (never a secret itself: secrets are refused in clear).
// TimeoutMS is always set (jobs.CheckSubmit gives a job that names none
// the default).
type JobSubmittedData struct {
	JobID          string            `json:"job_id"`
	ProjectID      string            `json:"project_id"`
	ExperimentID   string            `json:"experiment_id"`
	RunID          string            `json:"run_id"`
	Name           string            `json:"name"`
	Command        []string          `json:"command"`
	Params         map[string]string `json:"params,omitempty"`
	Env            map[string]string `json:"env,omitempty"`
	WorkingDir     string            `json:"working_dir,omitempty"`
	Artifact       *JobArtifact      `json:"artifact,omitempty"`
	Image          string            `json:"image,omitempty"`
	Resources      JobResources      `json:"resources,omitzero"`
	TimeoutMS      int64             `json:"timeout_ms"`
	MaxRetries     int               `json:"max_retries"`
	RetryOnFailure bool              `json:"retry_on_failure,omitempty"`
	SubmittedBy    string            `json:"submitted_by"`
	// Sweep names the sweep trial the job runs (nil for a job of its own).
	Sweep *JobSweepTrial `json:"sweep,omitempty"`
}

// JobSweepTrial ties a job to the sweep trial it runs.
type JobSweepTrial struct {
	SweepID string `json:"sweep_id"`
	Trial   int    `json:"trial"`
}

// JobAttemptStartedData: runner RunnerID claimed the job; TokenID is the
// API token the attempt's program gets as MLFLOW_TRACKING_TOKEN (revoked
// when the attempt ends).
type JobAttemptStartedData struct {
	JobID    string `json:"job_id"`
	Attempt  int    `json:"attempt"`
	RunnerID string `json:"runner_id"`
	Executor string `json:"executor"`
	TokenID  string `json:"token_id"`
}

// JobCancelRequestedData: someone asked for the job to stop.
type JobCancelRequestedData struct {
	JobID string `json:"job_id"`
	// Reason is why, when the platform cancels (early_stopped: a sweep's
	// early-stopping rule); the job ends with it.
	Reason string `json:"reason,omitempty"`
}

// JobAttemptEndedData: how an attempt ended. ExitCode is nil when the
// program's end was not observed (lost) or it never ran.
type JobAttemptEndedData struct {
	JobID    string `json:"job_id"`
	Attempt  int    `json:"attempt"`
	Outcome  string `json:"outcome"`
	ExitCode *int   `json:"exit_code,omitempty"`
	Reason   string `json:"reason,omitempty"`
}

// JobRequeuedData: the job is queued again for attempt Attempt.
type JobRequeuedData struct {
	JobID   string `json:"job_id"`
	Attempt int    `json:"attempt"`
	Reason  string `json:"reason"`
}

// JobEndedData: the job's final state, the reason, and the last attempt's
// exit code (nil when none was observed).
type JobEndedData struct {
	JobID    string `json:"job_id"`
	RunID    string `json:"run_id"`
	State    string `json:"state"`
	Reason   string `json:"reason,omitempty"`
	ExitCode *int   `json:"exit_code,omitempty"`
}
