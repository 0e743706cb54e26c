package events

// Hyper-parameter sweeps (subject maestro.events.sweep.<id>). A sweep is a
// search over a space of job params: its scheduler (a process manager)
// asks the sampler for a trial's params, records them, submits the trial
// as a job with its own run, records the trial's intermediate objective
// values (for early stopping) and its end, and ends the sweep at
// max_trials or on a stop. Every decision is one of these events, so a
// scheduler that restarts continues from the sweep's history alone.
const (
	// SweepCreated: a new sweep, its space, algorithm and trial template.
	SweepCreated = "maestro.sweep.created.v1"
	// SweepTrialSuggested: the sampler chose trial N's params (recorded
	// before its job is submitted, so no trial number is used twice).
	SweepTrialSuggested = "maestro.sweep.trial_suggested.v1"
	// SweepTrialDispatched: trial N's job (and run) was submitted.
	SweepTrialDispatched = "maestro.sweep.trial_dispatched.v1"
	// SweepTrialReported: an intermediate value of the objective metric a
	// running trial logged at a step (early stopping decides on them).
	SweepTrialReported = "maestro.sweep.trial_reported.v1"
	// SweepTrialPruned: the early-stopping rule stopped trial N; its job is
	// cancelled with reason early_stopped.
	SweepTrialPruned = "maestro.sweep.trial_pruned.v1"
	// SweepTrialEnded: trial N's job ended; its objective is its run's
	// latest value of the objective metric.
	SweepTrialEnded = "maestro.sweep.trial_ended.v1"
	// SweepStopRequested: someone asked the sweep to stop; running trials
	// are cancelled and no new trial starts.
	SweepStopRequested = "maestro.sweep.stop_requested.v1"
	// SweepEnded: the sweep's final state and its best trial.
	SweepEnded = "maestro.sweep.ended.v1"
)

// AggSweep is the sweep aggregate type.
const AggSweep = "sweep"

// Sweep states.
const (
	SweepRunning   = "running"
	SweepStopping  = "stopping"
	SweepCompleted = "completed"
	SweepStopped   = "stopped"
)

// Trial states (a trial's job state decides which one it ends in).
const (
	TrialSuggested = "suggested" // params chosen, job not yet submitted
	TrialRunning   = "running"   // job submitted (queued or running)
	TrialCompleted = "completed" // job succeeded and logged the objective
	TrialPruned    = "pruned"    // stopped early by the early-stopping rule
	TrialFailed    = "failed"    // job failed, timed out, or logged no objective
	TrialCancelled = "cancelled" // job cancelled (the sweep stopped, or by hand)
)

// Early-stopping reason on a pruned trial's job.
const ReasonEarlyStopped = "early_stopped"

// SweepObjective is the metric a sweep optimizes (the trial run's latest
// value of it) and which way.
type SweepObjective struct {
	Metric    string `json:"metric"`
	Direction string `json:"direction"` // minimize | maximize
}

// SweepParam is one dimension of a sweep's space: uniform, log_uniform and
// int ranges have Low and High (inclusive), categorical has Values.
type SweepParam struct {
	Type   string   `json:"type"`
	Low    *float64 `json:"low,omitempty"`
	High   *float64 `json:"high,omitempty"`
	Values []string `json:"values,omitempty"`
}

// SweepEarlyStopping is a sweep's early-stopping rule: median (stop a trial
// whose best value so far is worse than the median of other trials' at the
// same step, after WarmupSteps steps and once MinTrials trials completed)
// or asha (asynchronous successive halving: rungs at MinResource ×
// ReductionFactor^k steps, a trial continues past a rung only in the top
// 1/ReductionFactor of the values recorded there).
type SweepEarlyStopping struct {
	Rule            string `json:"rule"`
	WarmupSteps     int64  `json:"warmup_steps,omitempty"`
	MinTrials       int    `json:"min_trials,omitempty"`
	MinResource     int64  `json:"min_resource,omitempty"`
	ReductionFactor int    `json:"reduction_factor,omitempty"`
}

// SweepTrialSpec is the job every trial runs: Params are fixed params
// every trial gets besides the sampled ones.
type SweepTrialSpec struct {
	Command    []string          `json:"command"`
	Env        map[string]string `json:"env,omitempty"`
	Params     map[string]string `json:"params,omitempty"`
	TimeoutMS  int64             `json:"timeout_ms"`
	MaxRetries int               `json:"max_retries"`
}

// SweepCreatedData: a new sweep. Seed is always set (a sweep created
// without one records the seed chosen for it), so its suggestions can be
// reproduced.
type SweepCreatedData struct {
	SweepID       string                `json:"sweep_id"`
	ProjectID     string                `json:"project_id"`
	ExperimentID  string                `json:"experiment_id"`
	Name          string                `json:"name"`
	Objective     SweepObjective        `json:"objective"`
	Space         map[string]SweepParam `json:"space"`
	Algorithm     string                `json:"algorithm"` // grid | random | bayesian
	EarlyStopping *SweepEarlyStopping   `json:"early_stopping,omitempty"`
	MaxTrials     int                   `json:"max_trials"`
	Parallelism   int                   `json:"parallelism"`
	Seed          uint64                `json:"seed"`
	Trial         SweepTrialSpec        `json:"trial"`
	CreatedBy     string                `json:"created_by"`
	// TokenID is the API token the sweep was created with ("" for a login
	// session): its trials are submitted with it, so revoking it stops them.
	TokenID string `json:"token_id,omitempty"`
}

// SweepTrialSuggestedData: the params the sampler chose for trial Trial
// (numbered from 1), as the job gets them.
type SweepTrialSuggestedData struct {
	SweepID string            `json:"sweep_id"`
	Trial   int               `json:"trial"`
	Params  map[string]string `json:"params"`
}

// SweepTrialDispatchedData: trial Trial runs as job JobID with run RunID.
type SweepTrialDispatchedData struct {
	SweepID string `json:"sweep_id"`
	Trial   int    `json:"trial"`
	JobID   string `json:"job_id"`
	RunID   string `json:"run_id"`
}

// SweepTrialReportedData: trial Trial's run logged Value for the objective
// metric at Step.
type SweepTrialReportedData struct {
	SweepID string      `json:"sweep_id"`
	Trial   int         `json:"trial"`
	Step    int64       `json:"step"`
	Value   MetricValue `json:"value"`
}

// SweepTrialPrunedData: the early-stopping rule stopped trial Trial at
// Step (its value there was Value).
type SweepTrialPrunedData struct {
	SweepID string      `json:"sweep_id"`
	Trial   int         `json:"trial"`
	Step    int64       `json:"step"`
	Value   MetricValue `json:"value"`
	Rule    string      `json:"rule"`
	Reason  string      `json:"reason"`
}

// SweepTrialEndedData: trial Trial's job ended in JobState; State is the
// trial's (completed, pruned, failed, cancelled) and Objective its value
// (nil when its run logged none).
type SweepTrialEndedData struct {
	SweepID   string       `json:"sweep_id"`
	Trial     int          `json:"trial"`
	JobID     string       `json:"job_id"`
	JobState  string       `json:"job_state"`
	State     string       `json:"state"`
	Objective *MetricValue `json:"objective,omitempty"`
	Reason    string       `json:"reason,omitempty"`
}

// SweepStopRequestedData: someone asked the sweep to stop.
type SweepStopRequestedData struct {
	SweepID string `json:"sweep_id"`
	Reason  string `json:"reason,omitempty"`
}

// SweepEndedData: the sweep's final state (completed or stopped), how many
// trials ran, and its best trial (none when no trial completed).
type SweepEndedData struct {
	SweepID   string       `json:"sweep_id"`
	State     string       `json:"state"`
	Trials    int          `json:"trials"`
	BestTrial int          `json:"best_trial,omitempty"`
	BestValue *MetricValue `json:"best_value,omitempty"`
	Reason    string       `json:"reason,omitempty"`
}
