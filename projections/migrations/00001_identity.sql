-- +goose Up
-- Projection tables are read models: dropped and rebuilt from the event
-- stream at will (maestro projections rebuild). Only projections write them.
CREATE TABLE projection_checkpoints (
    name       text PRIMARY KEY,
    last_seq   bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id          uuid PRIMARY KEY,
    email       text NOT NULL UNIQUE,
    name        text NOT NULL,
    role        text NOT NULL,
    active      boolean NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    created_seq bigint NOT NULL,
    updated_seq bigint NOT NULL
);
CREATE INDEX users_created_seq ON users (created_seq);

CREATE TABLE sessions (
    id                uuid PRIMARY KEY,
    user_id           uuid NOT NULL,
    generation        int NOT NULL,
    started_at        timestamptz NOT NULL,
    last_refreshed_at timestamptz NOT NULL,
    revoked_at        timestamptz,
    revoked_reason    text,
    client_ip         text NOT NULL DEFAULT '',
    user_agent        text NOT NULL DEFAULT ''
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE audit_entries (
    seq            bigint PRIMARY KEY,
    event_id       text NOT NULL,
    time           timestamptz NOT NULL,
    type           text NOT NULL,
    actor          text NOT NULL,
    subject        text NOT NULL,
    correlation_id text NOT NULL,
    causation_id   text NOT NULL DEFAULT '',
    summary        text NOT NULL,
    data           jsonb NOT NULL
);
CREATE INDEX audit_actor ON audit_entries (actor, seq);
CREATE INDEX audit_type ON audit_entries (type, seq);
CREATE INDEX audit_subject ON audit_entries (subject, seq);
CREATE INDEX audit_time ON audit_entries (time, seq);

-- +goose Down
DROP TABLE audit_entries;
DROP TABLE sessions;
DROP TABLE users;
DROP TABLE projection_checkpoints;
