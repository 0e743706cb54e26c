-- +goose Up
-- Metric points (stream MAESTRO_METRICS, projection "metrics"): the full
-- history per run and key, and the latest point per run and key (MLflow's
-- rule: the highest step, then timestamp, then value) for run answers and
-- search. Values are float8: NaN and ±Infinity are stored as such.
CREATE TABLE metrics (
    run_id    uuid NOT NULL,
    key       text NOT NULL,
    step      bigint NOT NULL,
    ts        bigint NOT NULL, -- ms since the epoch
    value     double precision NOT NULL,
    seq       bigint NOT NULL  -- MAESTRO_METRICS sequence of the request
);
CREATE INDEX metrics_series ON metrics (run_id, key, step, ts);

CREATE TABLE latest_metrics (
    run_id uuid NOT NULL,
    key    text NOT NULL,
    step   bigint NOT NULL,
    ts     bigint NOT NULL,
    value  double precision NOT NULL,
    PRIMARY KEY (run_id, key)
);

-- +goose Down
DROP TABLE latest_metrics;
DROP TABLE metrics;
