-- +goose Up
-- Dataset inputs of runs (event run.inputs_logged, projection "runs"):
-- one row per dataset a run used, unique by name and digest as the write
-- side decides it; seq and position keep the order they were logged in.
CREATE TABLE run_inputs (
    run_id      uuid NOT NULL,
    name        text NOT NULL,
    digest      text NOT NULL,
    source_type text NOT NULL,
    source      text NOT NULL,
    schema      text NOT NULL,
    profile     text NOT NULL,
    tags        jsonb NOT NULL, -- [{"key": ..., "value": ...}, ...] in order
    seq         bigint NOT NULL,
    position    int NOT NULL,
    PRIMARY KEY (run_id, name, digest)
);

-- +goose Down
DROP TABLE run_inputs;
