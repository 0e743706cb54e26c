-- +goose Up
CREATE TABLE projects (
    id          uuid PRIMARY KEY,
    slug        text COLLATE "C" NOT NULL UNIQUE,
    name        text NOT NULL,
    description text NOT NULL,
    archived    boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);

CREATE TABLE project_members (
    project_id uuid NOT NULL,
    user_id    uuid NOT NULL,
    role       text NOT NULL,
    added_at   timestamptz NOT NULL,
    PRIMARY KEY (project_id, user_id)
);
CREATE INDEX project_members_user ON project_members (user_id, project_id);

CREATE TABLE models (
    id             uuid PRIMARY KEY,
    project_id     uuid NOT NULL,
    name           text NOT NULL,
    name_lower     text COLLATE "C" NOT NULL, -- "C" so LIKE 'prefix%' uses the index
    description    text NOT NULL,
    tags           jsonb NOT NULL DEFAULT '{}',
    deleted        boolean NOT NULL DEFAULT false,
    latest_version int NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    updated_seq    bigint NOT NULL,
    UNIQUE (project_id, name_lower)
);
CREATE INDEX models_project_updated ON models (project_id, updated_seq DESC, id);
CREATE INDEX models_tags ON models USING gin (tags jsonb_path_ops);

CREATE TABLE model_versions (
    model_id    uuid NOT NULL,
    version     int NOT NULL,
    description text NOT NULL,
    tags        jsonb NOT NULL DEFAULT '{}',
    source      text NOT NULL,
    run_id      text NOT NULL,
    metrics     jsonb,
    signature   jsonb,
    stage       text NOT NULL,
    deleted     boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (model_id, version)
);

CREATE TABLE model_aliases (
    model_id uuid NOT NULL,
    alias    text NOT NULL,
    version  int NOT NULL,
    PRIMARY KEY (model_id, alias)
);

CREATE TABLE model_artifacts (
    model_id     uuid NOT NULL,
    version      int NOT NULL,
    path         text COLLATE "C" NOT NULL,
    digest       text NOT NULL,
    size         bigint NOT NULL,
    content_type text NOT NULL,
    recorded_at  timestamptz NOT NULL,
    PRIMARY KEY (model_id, version, path)
);
CREATE INDEX model_artifacts_digest ON model_artifacts (digest);

-- +goose Down
DROP TABLE model_artifacts;
DROP TABLE model_aliases;
DROP TABLE model_versions;
DROP TABLE models;
DROP TABLE project_members;
DROP TABLE projects;
