-- +goose Up
-- Experiment tracking read models (events experiment.* and run.*).
CREATE TABLE experiments (
    id                uuid PRIMARY KEY,
    project_id        uuid NOT NULL,
    name              text NOT NULL,
    artifact_location text NOT NULL DEFAULT '',
    deleted           boolean NOT NULL DEFAULT false,
    tags              jsonb NOT NULL DEFAULT '{}',
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    created_seq       bigint NOT NULL,
    updated_seq       bigint NOT NULL
);
-- Names are unique per project (reservations decide it; this serves lookups).
CREATE UNIQUE INDEX experiments_name ON experiments (project_id, name);
CREATE INDEX experiments_project ON experiments (project_id, created_seq);

CREATE TABLE runs (
    id            uuid PRIMARY KEY,
    experiment_id uuid NOT NULL,
    project_id    uuid NOT NULL,
    name          text NOT NULL,
    user_id       uuid NOT NULL,
    status        text NOT NULL,
    start_time    bigint NOT NULL, -- ms since the epoch, as clients send it
    end_time      bigint,
    deleted       boolean NOT NULL DEFAULT false,
    created_seq   bigint NOT NULL,
    updated_seq   bigint NOT NULL
);
CREATE INDEX runs_experiment ON runs (experiment_id, start_time DESC, id DESC);

CREATE TABLE run_params (
    run_id uuid NOT NULL,
    key    text NOT NULL,
    value  text NOT NULL,
    PRIMARY KEY (run_id, key)
);

CREATE TABLE run_tags (
    run_id uuid NOT NULL,
    key    text NOT NULL,
    value  text NOT NULL,
    PRIMARY KEY (run_id, key)
);

-- +goose Down
DROP TABLE run_tags;
DROP TABLE run_params;
DROP TABLE runs;
DROP TABLE experiments;
