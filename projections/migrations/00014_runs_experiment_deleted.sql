-- +goose Up
-- A run of a deleted experiment reads as deleted (MLflow marks an
-- experiment's runs deleted with it): the runs projection also applies the
-- experiment's delete and restore events to its runs' experiment_deleted,
-- and lifecycle_stage and the views read deleted OR experiment_deleted.
-- The runs projection applies its events again to fill the column.
ALTER TABLE runs ADD COLUMN experiment_deleted boolean NOT NULL DEFAULT false;
TRUNCATE runs, run_params, run_tags, run_artifacts, run_inputs;
DELETE FROM projection_quarantine WHERE projection = 'runs';
UPDATE projection_checkpoints SET last_seq = 0, updated_at = now() WHERE name = 'runs';

-- +goose Down
ALTER TABLE runs DROP COLUMN experiment_deleted;
