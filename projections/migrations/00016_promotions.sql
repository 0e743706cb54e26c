-- +goose Up
-- Approval policies (events project.policy_*, projection "promotions"):
-- one row per governed target of a project, the policy as its event
-- carries it (events.PolicyData).
CREATE TABLE project_policies (
    project_id  uuid NOT NULL,
    target      text COLLATE "C" NOT NULL,
    policy      jsonb NOT NULL,
    updated_at  timestamptz NOT NULL,
    updated_seq bigint NOT NULL,
    PRIMARY KEY (project_id, target)
);

-- Promotion requests (events promotion.*): one row per request, the
-- picture handlers/approvals Evolve gives. approvals is the array of
-- {"user_id", "comment", "at"} in order; approver_ids the same users, for
-- the inbox query. expired is not a stored state: a pending request past
-- expires_at is expired (the queries compute it).
CREATE TABLE promotions (
    id           uuid PRIMARY KEY,
    project_id   uuid NOT NULL,
    model_id     uuid NOT NULL,
    model_name   text NOT NULL,
    version      int NOT NULL,
    target       text NOT NULL,
    comment      text NOT NULL,
    requester_id text NOT NULL,
    author_id    text NOT NULL,
    policy       jsonb NOT NULL,
    gate         jsonb NOT NULL,
    state        text NOT NULL CHECK (state IN ('pending', 'approved', 'rejected', 'cancelled', 'completed', 'failed')),
    reason       text NOT NULL DEFAULT '',
    approvals    jsonb NOT NULL DEFAULT '[]',
    approver_ids text[] NOT NULL DEFAULT '{}',
    requested_at timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    created_seq  bigint NOT NULL,
    updated_seq  bigint NOT NULL
);
CREATE INDEX promotions_project ON promotions (project_id, created_seq);

-- +goose Down
DROP TABLE promotions;
DROP TABLE project_policies;
