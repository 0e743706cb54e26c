-- +goose Up
-- Webhook subscriptions (events webhook.*, projection "webhooks"): one row
-- per live subscription. project_id is NULL for a global one. exact and
-- prefixes are the event type patterns split for the delivery matcher
-- (handlers/webhooks Split: a type is delivered when it equals one of
-- exact or starts with one of prefixes). secret and previous_secret are
-- sealed (AES-GCM under a key derived from the platform signing key),
-- never in clear. created_seq is the stream sequence of the creation: a
-- subscription gets the events appended after it.
CREATE TABLE webhooks (
    id               uuid PRIMARY KEY,
    project_id       uuid,
    url              text NOT NULL,
    events           jsonb NOT NULL DEFAULT '[]',
    exact            text[] NOT NULL DEFAULT '{}',
    prefixes         text[] NOT NULL DEFAULT '{}',
    description      text NOT NULL DEFAULT '',
    enabled          boolean NOT NULL DEFAULT true,
    disabled_reason  text NOT NULL DEFAULT '',
    secret           text NOT NULL,
    previous_secret  text NOT NULL DEFAULT '',
    previous_until   timestamptz,
    created_by       text NOT NULL,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    created_seq      bigint NOT NULL,
    seq              bigint NOT NULL
);
CREATE INDEX webhooks_project ON webhooks (project_id, created_at DESC, id DESC);

-- The delivery outbox: one row per (subscription, event), written by the
-- delivery matcher (a watermill reaction) and the dispatcher, NOT by a
-- projection. It is the dispatcher's own durable state (what is due when,
-- how often it was tried, how the receiver answered), so the retry
-- schedule survives restarts; `projections rebuild` leaves it alone. body
-- is the CloudEvent (structured JSON) exactly as delivered every time.
CREATE TABLE webhook_deliveries (
    webhook_id      uuid NOT NULL,
    event_id        text NOT NULL,
    event_type      text NOT NULL,
    event_seq       bigint NOT NULL,
    body            bytea NOT NULL,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed', 'cancelled')),
    attempts        int NOT NULL DEFAULT 0,
    response_code   int,
    last_error      text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_attempt_at timestamptz,
    delivered_at    timestamptz,
    PRIMARY KEY (webhook_id, event_id)
);
-- What is due (the dispatcher's claim).
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
-- A subscription's delivery log, newest first.
CREATE INDEX webhook_deliveries_log ON webhook_deliveries (webhook_id, event_seq DESC, event_id);

-- +goose Down
DROP TABLE webhook_deliveries;
DROP TABLE webhooks;
