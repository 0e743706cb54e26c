package projections

import (
	"encoding/json"
	"time"

	"github.com/maestro-ml/maestro/events"
)

// Jobs is the read model of training jobs: one row per job, folded as the
// job aggregate folds its events (handlers/jobs Evolve), with its attempts
// (without their token ids).
type Jobs struct{}

// Name implements Projection.
func (Jobs) Name() string { return "jobs" }

// Tables implements Projection.
func (Jobs) Tables() []string { return []string{"jobs"} }

// Aggregates implements Projection.
func (Jobs) Aggregates() []string { return []string{events.AggJob} }

// Handles implements Projection.
func (Jobs) Handles(t string) bool {
	switch t {
	case events.JobSubmitted, events.JobAttemptStarted, events.JobCancelRequested, events.JobAttemptEnded,
		events.JobRequeued, events.JobEnded:
		return true
	}
	return false
}

// jobTime is an event's time as the jobs table keeps it: timestamptz
// holds microseconds, and an attempt's times (in the attempts jsonb) are
// cut alike, so the first attempt's start equals the job's started_at.
func jobTime(t time.Time) time.Time { return t.Truncate(time.Microsecond) }

// Queue implements Projection. Every event sets the job's updated_at and
// seq, as Evolve sets UpdatedAt; an event of a job the table does not hold
// changes nothing.
func (Jobs) Queue(b *Batch, evs []events.Envelope) error {
	for _, e := range evs {
		seq, at := int64(e.Sequence), jobTime(e.Time)
		switch e.Type {
		case events.JobSubmitted:
			var d events.JobSubmittedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			command := d.Command
			if command == nil {
				command = []string{}
			}
			cmd, _ := json.Marshal(command)
			params, _ := json.Marshal(nonNil(d.Params))
			env, _ := json.Marshal(nonNil(d.Env))
			resources, _ := json.Marshal(d.Resources)
			var artifact []byte
			if d.Artifact != nil {
				artifact, _ = json.Marshal(d.Artifact)
			}
			// A second submission of a job (only a forged stream has one)
			// is a unique violation: the event is quarantined.
			b.Queue(`INSERT INTO jobs (id, project_id, experiment_id, run_id, name, state, command, params, env, working_dir, image,
				resources, timeout_ms, max_retries, retry_on_failure, submitted_by, submitted_at, updated_at, artifact, seq)
				VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $16, $17, $18)`,
				d.JobID, d.ProjectID, d.ExperimentID, d.RunID, d.Name, cmd, params, env, d.WorkingDir, d.Image,
				resources, d.TimeoutMS, d.MaxRetries, d.RetryOnFailure, d.SubmittedBy, at, artifact, seq)
		case events.JobAttemptStarted:
			var d events.JobAttemptStartedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			// The token id stays out of the read model.
			attempt, _ := json.Marshal(JobAttempt{Number: d.Attempt, RunnerID: d.RunnerID, Executor: d.Executor, StartedAt: at})
			b.Queue(`UPDATE jobs SET state = 'running', attempts = attempts || jsonb_build_array($2::jsonb),
				started_at = COALESCE(started_at, $3), updated_at = $3, seq = $4 WHERE id = $1`, d.JobID, attempt, at, seq)
		case events.JobCancelRequested:
			var d events.JobCancelRequestedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			b.Queue(`UPDATE jobs SET cancel_requested = true, updated_at = $2, seq = $3 WHERE id = $1`, d.JobID, at, seq)
		case events.JobAttemptEnded:
			var d events.JobAttemptEndedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			// The end of the job's last attempt, if it is the one named
			// (Evolve ignores any other): its four end fields replaced.
			end, _ := json.Marshal(struct {
				EndedAt  time.Time `json:"ended_at"`
				Outcome  string    `json:"outcome,omitempty"`
				ExitCode *int      `json:"exit_code,omitempty"`
				Reason   string    `json:"reason,omitempty"`
			}{at, d.Outcome, d.ExitCode, d.Reason})
			b.Queue(`UPDATE jobs SET attempts = CASE WHEN attempts->-1->'number' = to_jsonb($2::bigint)
					THEN jsonb_set(attempts, '{-1}', ((attempts->-1) - ARRAY['ended_at', 'outcome', 'exit_code', 'reason']) || $3::jsonb)
					ELSE attempts END,
				updated_at = $4, seq = $5 WHERE id = $1`, d.JobID, d.Attempt, end, at, seq)
		case events.JobRequeued:
			var d events.JobRequeuedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			b.Queue(`UPDATE jobs SET state = 'queued', updated_at = $2, seq = $3 WHERE id = $1`, d.JobID, at, seq)
		case events.JobEnded:
			var d events.JobEndedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			b.Queue(`UPDATE jobs SET state = $2, reason = $3, exit_code = $4, ended_at = $5, updated_at = $5, seq = $6 WHERE id = $1`,
				d.JobID, d.State, d.Reason, d.ExitCode, at, seq)
		}
	}
	return nil
}
