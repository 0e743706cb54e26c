package projections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/maestro-ml/maestro/events"
)

// Job is a training job as the API shows it.
type Job struct {
	ID           string            `json:"id"`
	ProjectID    string            `json:"project_id"`
	ExperimentID string            `json:"experiment_id"`
	RunID        string            `json:"run_id"`
	Name         string            `json:"name"`
	State        string            `json:"state"`
	Command      []string          `json:"command"`
	Params       map[string]string `json:"params"`
	// Env values are as submitted: plain values, and "secret://NAME"
	// references the runner resolves (never a secret).
	Env        map[string]string   `json:"env"`
	WorkingDir string              `json:"working_dir,omitempty"`
	Image      string              `json:"image,omitempty"`
	Resources  events.JobResources `json:"resources"`
	// TimeoutSeconds is each attempt's time limit.
	TimeoutSeconds  float64    `json:"timeout_seconds"`
	MaxRetries      int        `json:"max_retries"`
	RetryOnFailure  bool       `json:"retry_on_failure"`
	SubmittedBy     string     `json:"submitted_by"`
	SubmittedAt     time.Time  `json:"submitted_at"`
	StartedAt       *time.Time `json:"started_at,omitempty"` // the first attempt's start
	EndedAt         *time.Time `json:"ended_at,omitempty"`
	UpdatedAt       time.Time  `json:"updated_at"`
	Reason          string     `json:"reason,omitempty"`
	ExitCode        *int       `json:"exit_code,omitempty"`
	CancelRequested bool       `json:"cancel_requested"`
	// Attempts are the job's runs of its program, in order.
	Attempts []JobAttempt        `json:"attempts"`
	Artifact *events.JobArtifact `json:"artifact,omitempty"`
}

// JobAttempt is one attempt of a job: the runner that claimed it and how
// it ended (Outcome "" while it runs; "lost" when its runner's lease
// expired).
type JobAttempt struct {
	Number    int        `json:"number"`
	RunnerID  string     `json:"runner_id"`
	Executor  string     `json:"executor"`
	StartedAt time.Time  `json:"started_at"`
	EndedAt   *time.Time `json:"ended_at,omitempty"`
	Outcome   string     `json:"outcome,omitempty"`
	ExitCode  *int       `json:"exit_code,omitempty"`
	Reason    string     `json:"reason,omitempty"`
}

// JobStates are the states a job can be in, in the order of its life.
var JobStates = []string{events.JobQueued, events.JobRunning, events.JobSucceeded, events.JobFailed, events.JobCancelled, events.JobTimedOut}

// JobFilter narrows a project's jobs; zero fields match every job.
type JobFilter struct {
	State        string // one of JobStates
	ExperimentID string
}

const jobCols = `id, project_id, experiment_id, run_id, name, state, command, params, env, working_dir, image, resources,
	timeout_ms, max_retries, retry_on_failure, submitted_by, submitted_at, started_at, ended_at, updated_at, reason, exit_code,
	cancel_requested, attempts, artifact`

func scanJob(row pgx.Row) (Job, error) {
	var j Job
	var command, params, env, resources, attempts, artifact []byte
	var timeoutMS int64
	err := row.Scan(&j.ID, &j.ProjectID, &j.ExperimentID, &j.RunID, &j.Name, &j.State, &command, &params, &env, &j.WorkingDir,
		&j.Image, &resources, &timeoutMS, &j.MaxRetries, &j.RetryOnFailure, &j.SubmittedBy, &j.SubmittedAt, &j.StartedAt,
		&j.EndedAt, &j.UpdatedAt, &j.Reason, &j.ExitCode, &j.CancelRequested, &attempts, &artifact)
	if errors.Is(err, pgx.ErrNoRows) {
		return j, ErrNotFound
	}
	if err != nil {
		return j, err
	}
	j.TimeoutSeconds = float64(timeoutMS) / 1000
	for _, f := range []struct {
		raw  []byte
		into any
	}{{command, &j.Command}, {params, &j.Params}, {env, &j.Env}, {resources, &j.Resources}, {attempts, &j.Attempts}} {
		if err := json.Unmarshal(f.raw, f.into); err != nil {
			return j, fmt.Errorf("job %s: %w", j.ID, err)
		}
	}
	if artifact != nil {
		j.Artifact = &events.JobArtifact{}
		if err := json.Unmarshal(artifact, j.Artifact); err != nil {
			return j, fmt.Errorf("job %s: %w", j.ID, err)
		}
	}
	if j.Command == nil {
		j.Command = []string{}
	}
	if j.Params == nil {
		j.Params = map[string]string{}
	}
	if j.Env == nil {
		j.Env = map[string]string{}
	}
	if j.Attempts == nil {
		j.Attempts = []JobAttempt{}
	}
	return j, nil
}

// Job returns a job of the project (ErrNotFound for an id that is not a
// uuid, and for another project's job).
func (q *Queries) Job(ctx context.Context, projectID, id string) (Job, error) {
	if !isUUID(id) || !isUUID(projectID) {
		return Job{}, ErrNotFound
	}
	return scanJob(q.pool.QueryRow(ctx, "SELECT "+jobCols+" FROM jobs WHERE project_id = $1 AND id = $2", projectID, id))
}

// ListJobs pages a project's jobs, newest submission first (ties by id),
// optionally of one state and one experiment. A state that is not one of
// JobStates, an experiment id that is not a uuid or a limit below 1 is
// ErrInvalidSearch; a token this list did not issue ErrBadPageToken.
func (q *Queries) ListJobs(ctx context.Context, projectID string, f JobFilter, pageToken string, limit int) (Page[Job], error) {
	if f.State != "" && !slices.Contains(JobStates, f.State) {
		return Page[Job]{}, fmt.Errorf("%w: state %q is not one of %v", ErrInvalidSearch, f.State, JobStates)
	}
	if f.ExperimentID != "" && !isUUID(f.ExperimentID) {
		return Page[Job]{}, fmt.Errorf("%w: experiment_id %q is not an experiment id", ErrInvalidSearch, f.ExperimentID)
	}
	if limit < 1 {
		return Page[Job]{}, fmt.Errorf("%w: the page size must be at least 1", ErrInvalidSearch)
	}
	c, err := decodeCursor(pageToken, seqIDCursor)
	if err != nil {
		return Page[Job]{}, err
	}
	if !isUUID(projectID) {
		return Page[Job]{Items: []Job{}}, nil
	}
	args := []any{projectID, limit + 1}
	where := "project_id = $1"
	add := func(cond string, v any) {
		args = append(args, v)
		where += " AND " + cond + "$" + strconv.Itoa(len(args))
	}
	if f.State != "" {
		add("state = ", f.State)
	}
	if f.ExperimentID != "" {
		add("experiment_id = ", f.ExperimentID)
	}
	if pageToken != "" {
		// The cursor is the last job's submission time, in microseconds
		// (timestamptz's precision), and its id.
		add("(submitted_at, id) < (", time.UnixMicro(c.Seq).UTC())
		where += ", $" + strconv.Itoa(len(args)+1) + "::uuid)"
		args = append(args, c.ID)
	}
	rows, err := q.pool.Query(ctx, "SELECT "+jobCols+" FROM jobs WHERE "+where+" ORDER BY submitted_at DESC, id DESC LIMIT $2", args...)
	if err != nil {
		return Page[Job]{}, err
	}
	return collectPage(rows, limit, func(r pgx.Rows) (Job, cursor, error) {
		j, err := scanJob(r)
		return j, cursor{Seq: j.SubmittedAt.UnixMicro(), ID: j.ID}, err
	})
}

// JobCounts counts the jobs of every project by state, each of JobStates
// present (0 when none): the queue depth is JobCounts()["queued"].
func (q *Queries) JobCounts(ctx context.Context) (map[string]int64, error) {
	out := make(map[string]int64, len(JobStates))
	for _, s := range JobStates {
		out[s] = 0
	}
	rows, err := q.pool.Query(ctx, "SELECT state, count(*) FROM jobs GROUP BY state")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var state string
		var n int64
		if err := rows.Scan(&state, &n); err != nil {
			return nil, err
		}
		out[state] = n
	}
	return out, rows.Err()
}
