-- +goose Up
-- Training jobs (events job.*, projection "jobs"): one row per job, the
-- picture the job aggregate's fold (handlers/jobs Evolve) gives. attempts
-- is the array of the job's attempts in order, each
-- {"number", "runner_id", "executor", "started_at", "ended_at", "outcome",
-- "exit_code", "reason"} (never the attempt's token id); env holds plain
-- values and "secret://NAME" references only (the write side refuses
-- secrets in clear). seq is the sequence of the job's last event. A state
-- outside the six job states is data the projection cannot store: the
-- event is quarantined.
CREATE TABLE jobs (
    id               uuid PRIMARY KEY,
    project_id       uuid NOT NULL,
    experiment_id    uuid NOT NULL,
    run_id           uuid NOT NULL,
    name             text NOT NULL,
    state            text NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'timed_out')),
    command          jsonb NOT NULL DEFAULT '[]',
    params           jsonb NOT NULL DEFAULT '{}',
    env              jsonb NOT NULL DEFAULT '{}',
    working_dir      text NOT NULL DEFAULT '',
    image            text NOT NULL DEFAULT '',
    resources        jsonb NOT NULL DEFAULT '{}',
    timeout_ms       bigint NOT NULL,
    max_retries      int NOT NULL,
    retry_on_failure boolean NOT NULL DEFAULT false,
    submitted_by     text NOT NULL,
    submitted_at     timestamptz NOT NULL,
    started_at       timestamptz, -- the first attempt's start
    ended_at         timestamptz,
    updated_at       timestamptz NOT NULL,
    reason           text NOT NULL DEFAULT '',
    exit_code        int,
    cancel_requested boolean NOT NULL DEFAULT false,
    attempts         jsonb NOT NULL DEFAULT '[]',
    artifact         jsonb,
    seq              bigint NOT NULL
);
-- A project's jobs, newest first (the list and its cursor), optionally of
-- one state (and the count of a project's queued jobs) or one experiment.
CREATE INDEX jobs_project ON jobs (project_id, submitted_at DESC, id DESC);
CREATE INDEX jobs_project_state ON jobs (project_id, state, submitted_at DESC, id DESC);
CREATE INDEX jobs_experiment ON jobs (experiment_id, submitted_at DESC, id DESC);
-- The jobs of a state across projects: the counts by state (queue depth)
-- and the running jobs.
CREATE INDEX jobs_state ON jobs (state, project_id);

-- +goose Down
DROP TABLE jobs;
