-- +goose Up
-- Run artifacts (event run.artifact_recorded, projection "runs"): one row
-- per path, as model_artifacts holds a version's. path is COLLATE "C" so
-- the primary key serves the path order and the cursor of the lists, and
-- a directory's entries are a range of it.
CREATE TABLE run_artifacts (
    run_id       uuid NOT NULL,
    path         text COLLATE "C" NOT NULL,
    digest       text NOT NULL,
    size         bigint NOT NULL,
    content_type text NOT NULL,
    recorded_at  timestamptz NOT NULL,
    PRIMARY KEY (run_id, path)
);

-- Lineage: a run read lists the versions registered from it.
CREATE INDEX model_versions_run ON model_versions (run_id) WHERE run_id <> '';

-- +goose Down
DROP INDEX model_versions_run;
DROP TABLE run_artifacts;
