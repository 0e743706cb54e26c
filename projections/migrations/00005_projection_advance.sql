-- +goose Up
-- projection_advance moves a projection's checkpoint from p_expected to
-- p_last (the runner announces it at the end of the batch, after the rows'
-- own notifications). The runner sends it first in the one pipelined,
-- implicit transaction that applies a batch: the row lock it takes makes a
-- second writer wait, and its failure rolls the batch's statements back
-- (rule 4). It fails with SQLSTATE MA001 when the checkpoint is not at
-- p_expected (a rebuild reset it, or another instance moved it), and with
-- MA002 when the runner's lock session is gone: besides the projection's
-- advisory lock, that session holds a second one on a random key of its
-- own (p_holder; 0 for none), and if that key can be taken here, nobody
-- holds it any more. A session-level lock lasts as long as its session (the
-- runner only unlocks after its last batch), so a runner whose lock session
-- has ended must not commit: a standby may have taken over. The check comes
-- after the row lock, so once a new holder has committed, the old one never
-- commits again. (One lock-table probe; pg_locks or pg_stat_activity would
-- copy a whole table of the server on every batch.)
-- +goose StatementBegin
CREATE FUNCTION projection_advance(p_name text, p_expected bigint, p_last bigint, p_holder bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    cur bigint;
BEGIN
    SELECT last_seq INTO cur FROM projection_checkpoints WHERE name = p_name FOR UPDATE;
    -- The lock first: an orphan whose lock session is gone must say so,
    -- not just restart because the new holder moved the checkpoint.
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

-- +goose Down
DROP FUNCTION projection_advance(text, bigint, bigint, bigint);
