-- +goose Up
-- Metric points as chunks (projections/metrics.go): one row per series and
-- request (several requests of one batch merge, up to 10,000 points), its
-- points packed in one bytea, 24 bytes each (step, ts, value: big-endian
-- int64, int64 and float64 bits), sorted by (step, ts), ties in the order
-- logged. A 10,000-point request over ten keys is ten rows instead of
-- 10,000 rows and index entries. Packed bytes, not arrays: Postgres sends
-- and receives them as they are, where arrays cost a function call per
-- element (reading a million points took 6 times longer). Stored
-- uncompressed (STORAGE EXTERNAL: pglz cost Postgres more CPU than the rows
-- it replaced), out of line, so the rows that order and find chunks stay
-- small. The primary key orders a series' chunks by their first point;
-- last_step, last_ts and n let a page or a count read the index alone.
DROP TABLE metrics;
CREATE TABLE metric_chunks (
    run_id     uuid NOT NULL,
    key        text NOT NULL,
    first_step bigint NOT NULL, -- the chunk's first point in series order
    first_ts   bigint NOT NULL,
    seq        bigint NOT NULL, -- MAESTRO_METRICS sequence of its first request
    last_step  bigint NOT NULL, -- its last point
    last_ts    bigint NOT NULL,
    n          integer NOT NULL, -- points
    points     bytea NOT NULL CHECK (length(points) = 24 * n), -- ts in ms since the epoch
    PRIMARY KEY (run_id, key, first_step, first_ts, seq) INCLUDE (last_step, last_ts, n)
);
ALTER TABLE metric_chunks ALTER points SET STORAGE EXTERNAL;
-- The metrics projection applies its stream again, into the new table.
TRUNCATE latest_metrics;
DELETE FROM projection_quarantine WHERE projection = 'metrics';
UPDATE projection_checkpoints SET last_seq = 0, updated_at = now() WHERE name = 'metrics';

-- +goose Down
DROP TABLE metric_chunks;
CREATE TABLE metrics (
    run_id    uuid NOT NULL,
    key       text NOT NULL,
    step      bigint NOT NULL,
    ts        bigint NOT NULL,
    value     double precision NOT NULL,
    seq       bigint NOT NULL
);
CREATE INDEX metrics_series ON metrics (run_id, key, step, ts);
TRUNCATE latest_metrics;
DELETE FROM projection_quarantine WHERE projection = 'metrics';
UPDATE projection_checkpoints SET last_seq = 0, updated_at = now() WHERE name = 'metrics';
