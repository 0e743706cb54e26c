-- +goose Up
-- Hyper-parameter sweeps (events sweep.*, projection "sweeps"): one row
-- per sweep, the spec its creation carries (space, early_stopping and
-- trial as their events carry them: events.SweepParam,
-- events.SweepEarlyStopping, events.SweepTrialSpec), its state, the best
-- completed trial so far (best objective by the objective's direction,
-- NaN never best; the ended event's best once it has ended) and its trials
-- counted by state. The counts and the best trial are recomputed from
-- sweep_trials in the batch that changes a trial, so a rebuild gives the
-- same numbers. seed is a uint64 (numeric: bigint is signed).
CREATE TABLE sweeps (
    id                  uuid PRIMARY KEY,
    project_id          uuid NOT NULL,
    experiment_id       uuid NOT NULL,
    name                text NOT NULL,
    algorithm           text NOT NULL,
    objective_metric    text NOT NULL,
    objective_direction text NOT NULL CHECK (objective_direction IN ('minimize', 'maximize')),
    space               jsonb NOT NULL,
    early_stopping      jsonb,
    trial               jsonb NOT NULL,
    max_trials          int NOT NULL,
    parallelism         int NOT NULL,
    seed                numeric(20, 0) NOT NULL,
    state               text NOT NULL CHECK (state IN ('running', 'stopping', 'completed', 'stopped')),
    stop_requested      boolean NOT NULL DEFAULT false,
    reason              text NOT NULL DEFAULT '',
    created_by          text NOT NULL,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    ended_at            timestamptz,
    best_trial          int,
    best_value          double precision,
    trials_suggested    int NOT NULL DEFAULT 0,
    trials_running      int NOT NULL DEFAULT 0,
    trials_completed    int NOT NULL DEFAULT 0,
    trials_pruned       int NOT NULL DEFAULT 0,
    trials_failed       int NOT NULL DEFAULT 0,
    trials_cancelled    int NOT NULL DEFAULT 0,
    created_seq         bigint NOT NULL,
    seq                 bigint NOT NULL
);
-- A project's sweeps, newest first (the list and its cursor), optionally
-- of one state.
CREATE INDEX sweeps_project ON sweeps (project_id, created_seq DESC);
CREATE INDEX sweeps_project_state ON sweeps (project_id, state, created_seq DESC);

-- A sweep's trials, numbered from 1: the sampler's params, the trial's
-- job and run once dispatched, its last reported (intermediate) value of
-- the objective, and how it ended. A trial early stopping stopped has
-- pruned_step (it stays running until its job's cancellation ends it,
-- pruned, as handlers/sweeps Evolve has it). end_seq is the sequence of its end
-- event: the objective's progress over trials is in end order.
CREATE TABLE sweep_trials (
    sweep_id      uuid NOT NULL,
    number        int NOT NULL CHECK (number >= 1),
    params        jsonb NOT NULL DEFAULT '{}',
    state         text NOT NULL CHECK (state IN ('suggested', 'running', 'completed', 'pruned', 'failed', 'cancelled')),
    job_id        uuid,
    run_id        uuid,
    job_state     text NOT NULL DEFAULT '',
    objective     double precision,
    reason        text NOT NULL DEFAULT '',
    last_step     bigint,
    last_value    double precision,
    pruned_step   bigint,
    suggested_at  timestamptz NOT NULL,
    dispatched_at timestamptz,
    ended_at      timestamptz,
    updated_at    timestamptz NOT NULL,
    end_seq       bigint,
    PRIMARY KEY (sweep_id, number)
);

-- +goose Down
DROP TABLE sweep_trials;
DROP TABLE sweeps;
