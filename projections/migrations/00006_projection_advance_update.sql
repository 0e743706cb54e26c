-- +goose Up
-- projection_advance as one compare-and-set UPDATE instead of a locking
-- read and an UPDATE: half the heap and WAL work per batch on the hottest
-- row of the read models. The rules of 00005 hold: the UPDATE takes the row
-- lock (a second writer waits, and after the first commits finds the
-- checkpoint moved), the lock-session probe follows it, and either failure
-- raises, so the batch rolls back: MA002 when the runner's lock session is
-- gone (checked first, as before), MA001 when the checkpoint is not at
-- p_expected.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION projection_advance(p_name text, p_expected bigint, p_last bigint, p_holder bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    moved boolean;
BEGIN
    UPDATE projection_checkpoints SET last_seq = p_last, updated_at = now()
     WHERE name = p_name AND last_seq = p_expected;
    moved := NOT FOUND;
    IF p_holder <> 0 AND pg_try_advisory_xact_lock_shared(p_holder) THEN
        RAISE EXCEPTION 'projection % lock session is gone', p_name USING ERRCODE = 'MA002';
    END IF;
    IF moved THEN
        RAISE EXCEPTION 'projection % checkpoint is not at %', p_name, p_expected USING ERRCODE = 'MA001';
    END IF;
END
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION projection_advance(p_name text, p_expected bigint, p_last bigint, p_holder bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    cur bigint;
BEGIN
    SELECT last_seq INTO cur FROM projection_checkpoints WHERE name = p_name FOR UPDATE;
    IF p_holder <> 0 AND pg_try_advisory_xact_lock_shared(p_holder) THEN
        RAISE EXCEPTION 'projection % lock session is gone', p_name USING ERRCODE = 'MA002';
    END IF;
    IF cur IS DISTINCT FROM p_expected THEN
        RAISE EXCEPTION 'projection % checkpoint is not at %', p_name, p_expected USING ERRCODE = 'MA001';
    END IF;
    UPDATE projection_checkpoints SET last_seq = p_last, updated_at = now() WHERE name = p_name;
END
$$;
-- +goose StatementEnd
