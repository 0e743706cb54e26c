-- +goose Up
-- jsonb_path_ops serves only @> (key = value); the tag-key filter uses ?
-- (key exists), which then scanned every model of the project. The default
-- jsonb_ops class serves both.
DROP INDEX models_tags;
CREATE INDEX models_tags ON models USING gin (tags);

-- +goose Down
DROP INDEX models_tags;
CREATE INDEX models_tags ON models USING gin (tags jsonb_path_ops);
