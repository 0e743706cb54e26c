-- +goose Up
-- The verifiable audit trail (docs/ARCHITECTURE.md, "Audit trail: hash
-- chain"). Every entry stores hash = SHA-256(prev_hash || SHA-256(canonical(entry))),
-- prev_hash being the hash of the entry before it in stream order (32 zero
-- bytes for the first), and the project it concerns (the subject's id for a
-- project aggregate, the data's project_id otherwise; '' for none). The
-- projection applies its events again to fill both columns.
TRUNCATE audit_entries;
DELETE FROM projection_quarantine WHERE projection = 'audit';
UPDATE projection_checkpoints SET last_seq = 0, updated_at = now() WHERE name = 'audit';
ALTER TABLE audit_entries
    ADD COLUMN project_id text NOT NULL DEFAULT '',
    ADD COLUMN hash bytea NOT NULL;
-- Owners export and filter their project's entries; the other filters
-- (actor, type, subject, time) have their indexes since 00001, and the
-- correlation id filter scans (every index costs a rebuild 0.3-0.45 s per
-- 100k entries; an investigation by correlation id is rare).
CREATE INDEX audit_project ON audit_entries (project_id, seq) WHERE project_id <> '';

-- audit_chain folds the digests (SHA-256 of the canonical form, computed
-- in Go) of a batch's entries (in stream
-- order, the first at sequence p_first) onto the hash of the entry stored
-- before p_first, and returns their hashes. The audit projection's INSERT
-- calls it, so the chain is computed inside the batch's one transaction
-- from what is stored there (behind the checkpoint advance's row lock, so
-- no other writer interleaves): Queue never reads, and a restart, a
-- redelivery, the quarantine path (each event in its own savepoint, the
-- previous events of the batch already stored) and a rebuild (from an empty
-- table: the zero hash) all chain from the entry actually stored before.
-- "seq < p_first", not the highest stored: a row written with a higher
-- sequence (by hand) must not become the predecessor of later entries.
-- +goose StatementBegin
CREATE FUNCTION audit_chain(p_first bigint, p_canon bytea[]) RETURNS bytea[]
LANGUAGE plpgsql AS $$
DECLARE
    prev bytea;
    out bytea[] := '{}';
BEGIN
    SELECT hash INTO prev FROM audit_entries WHERE seq < p_first ORDER BY seq DESC LIMIT 1;
    IF prev IS NULL THEN
        prev := decode(repeat('00', 32), 'hex');
    END IF;
    FOR i IN 1 .. coalesce(array_length(p_canon, 1), 0) LOOP
        prev := sha256(prev || p_canon[i]);
        out[i] := prev;
    END LOOP;
    RETURN out;
END
$$;
-- +goose StatementEnd

-- Signed checkpoints: the chain's hash at seq, signed (Ed25519) by the key
-- key_id over "maestro-audit-checkpoint/v1\n<seq>\n<hex hash>". Written by
-- the worker's audit sealer, not by the projection (a projection cannot
-- sign inside its transaction): an attestation about the trail rather than
-- a read model, so a rebuild keeps them, and the rebuilt chain, being a
-- function of the stream alone, must reproduce every sealed hash (which
-- `maestro audit verify` checks).
CREATE TABLE audit_checkpoints (
    seq        bigint PRIMARY KEY,
    hash       bytea NOT NULL,
    key_id     text NOT NULL,
    signature  bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- Every public key that signed a checkpoint (published at
-- GET /api/v1/audit/keys), so checkpoints signed before a key change stay
-- verifiable.
CREATE TABLE audit_keys (
    key_id     text PRIMARY KEY,
    public_key bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE audit_keys;
DROP TABLE audit_checkpoints;
DROP FUNCTION audit_chain(bigint, bytea[]);
DROP INDEX audit_project;
ALTER TABLE audit_entries DROP COLUMN hash, DROP COLUMN project_id;
