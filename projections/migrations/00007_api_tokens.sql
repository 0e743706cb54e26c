-- +goose Up
-- API tokens (events token.*) and service accounts: users that have no
-- e-mail (kind 'service_account') and act only through tokens.
ALTER TABLE users ALTER COLUMN email DROP NOT NULL;
ALTER TABLE users ADD COLUMN kind text NOT NULL DEFAULT 'user';
-- The latest deactivation: credentials issued before it stay dead after a
-- reactivation (sessions are revoked; API tokens are checked against it).
ALTER TABLE users ADD COLUMN deactivated_at timestamptz;

CREATE TABLE api_tokens (
    id           uuid PRIMARY KEY,
    user_id      uuid NOT NULL,
    name         text NOT NULL,
    prefix       text NOT NULL,
    -- hex SHA-256 of the secret; the authenticator looks tokens up by it
    hash         text NOT NULL UNIQUE,
    project_id   uuid,
    role         text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz,
    last_used_ip text NOT NULL DEFAULT '',
    -- recent client addresses, newest last (bounded by the write side)
    addresses    text[] NOT NULL DEFAULT '{}',
    created_seq  bigint NOT NULL
);
CREATE INDEX api_tokens_user ON api_tokens (user_id, created_seq);

-- +goose Down
DROP TABLE api_tokens;
ALTER TABLE users DROP COLUMN deactivated_at;
ALTER TABLE users DROP COLUMN kind;
DELETE FROM users WHERE email IS NULL;
ALTER TABLE users ALTER COLUMN email SET NOT NULL;
