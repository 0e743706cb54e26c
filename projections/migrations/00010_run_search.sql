-- +goose Up
-- Run search (projections/run_search.go).
-- A metric as the first order key is read in value order from
-- (key, value) and the scan stops when the page is full; a probe lists the
-- runs of one metric comparison from it (run_id makes both index-only).
CREATE INDEX latest_metrics_key_value ON latest_metrics (key, value, run_id);
-- Params and tags hold up to 6,000 and 8,000 bytes, more than a btree
-- entry takes (~2,700), so their index keeps the first 200 characters in
-- the C collation: equality and LIKE 'prefix%' probes, and ordering by a
-- param or tag (the prefix, then the whole value, is the value's order).
CREATE INDEX run_params_key_value ON run_params (key, (left(value, 200)) COLLATE "C");
CREATE INDEX run_tags_key_value ON run_tags (key, (left(value, 200)) COLLATE "C");
-- The default order (start_time DESC, id ASC) of one experiment's or a
-- whole project's runs (runs_experiment has id DESC, for the run list).
CREATE INDEX runs_experiment_search ON runs (experiment_id, start_time DESC, id);
CREATE INDEX runs_project_search ON runs (project_id, start_time DESC, id);

-- +goose Down
DROP INDEX runs_project_search;
DROP INDEX runs_experiment_search;
DROP INDEX run_tags_key_value;
DROP INDEX run_params_key_value;
DROP INDEX latest_metrics_key_value;
