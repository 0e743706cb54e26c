-- +goose Up
-- projection_advance moves a projection's checkpoint from p_expected to
-- p_last and announces it. The runner sends it first in the one pipelined,
-- implicit transaction that applies a batch: the row lock it takes makes a
-- second writer wait, and its failure rolls the batch's statements back
-- (rule 4). It fails with SQLSTATE MA001 when the checkpoint is not at
-- p_expected (a rebuild reset it, or another instance moved it), and with
-- MA002 when p_holder (the backend pid of the runner's lock session; 0 for
-- none) no longer holds the projection's advisory lock (classid, objid): a
-- runner whose lock session is gone must not commit, since a standby may
-- have taken over. The check comes after the row lock, so once a new holder
-- has committed, the old one never commits again.
-- +goose StatementBegin
CREATE FUNCTION projection_advance(p_name text, p_expected bigint, p_last bigint,
                                   p_holder integer, p_classid bigint, p_objid bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE projection_checkpoints SET last_seq = p_last, updated_at = now()
        WHERE name = p_name AND last_seq = p_expected;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'projection % checkpoint is not at %', p_name, p_expected USING ERRCODE = 'MA001';
    END IF;
    IF p_holder <> 0 AND NOT EXISTS (
        SELECT 1 FROM pg_locks
        WHERE locktype = 'advisory' AND pid = p_holder AND granted
          AND classid = p_classid::oid AND objid = p_objid::oid AND objsubid = 1) THEN
        RAISE EXCEPTION 'projection % lock session % no longer holds the lock', p_name, p_holder USING ERRCODE = 'MA002';
    END IF;
    PERFORM pg_notify('maestro_checkpoints', p_name || ':' || p_last);
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION projection_advance(text, bigint, bigint, integer, bigint, bigint);
