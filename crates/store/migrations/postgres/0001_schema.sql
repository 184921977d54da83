-- The schema SQLite reached with its migrations 0001-0003, for PostgreSQL.
-- Later changes get a numbered migration here and in migrations/sqlite.
--
-- Times are Unix milliseconds (UTC) in BIGINT, as on SQLite, so that one set
-- of queries (crates/store/src/sql/) serves both backends. Integers are BIGINT
-- throughout (the code reads them as i64). Names that SQLite compares with
-- COLLATE NOCASE are unique here by lower(name), and queries compare lower().

CREATE TABLE jobs (
    id              BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            TEXT    NOT NULL UNIQUE,
    enabled         BOOLEAN NOT NULL,
    -- The whole JobDefinition as JSON text; name and enabled are copied out.
    definition      TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    -- The latest scheduled occurrence that was recorded; missed-run detection
    -- starts after it. NULL until the first occurrence.
    schedule_cursor BIGINT
);

CREATE TABLE runs (
    id               BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id           BIGINT  NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    status           TEXT    NOT NULL CHECK (status IN ('queued','running','succeeded','failed','timed_out','cancelled','abandoned','skipped')),
    trigger_kind     TEXT    NOT NULL CHECK (trigger_kind IN ('schedule','manual','retry','chain')),
    scheduled_for    BIGINT,
    not_before       BIGINT,
    attempt          BIGINT  NOT NULL DEFAULT 1,
    parent_run_id    BIGINT  REFERENCES runs(id) ON DELETE SET NULL,
    created_at       BIGINT  NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT,
    exit_code        BIGINT,
    signal           BIGINT,
    http_status      BIGINT,
    error            TEXT,
    process_group    BIGINT,
    output_truncated BOOLEAN NOT NULL DEFAULT FALSE,
    cancel_requested_at BIGINT,
    output           TEXT
);
-- Exactly once per occurrence: one scheduled run per job and instant.
CREATE UNIQUE INDEX runs_occurrence ON runs(job_id, scheduled_for) WHERE trigger_kind = 'schedule';
CREATE INDEX runs_job ON runs(job_id, id);
CREATE INDEX runs_status ON runs(status, id);
CREATE INDEX runs_created ON runs(created_at);
CREATE INDEX runs_parent ON runs(parent_run_id);

CREATE TABLE job_secrets (
    job_id BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    secret TEXT   NOT NULL,
    PRIMARY KEY (job_id, secret)
);
CREATE INDEX job_secrets_by_secret ON job_secrets(secret);

CREATE TABLE users (
    id            BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username      TEXT    NOT NULL,
    email         TEXT,
    -- Argon2id PHC string.
    password_hash TEXT    NOT NULL,
    must_change   BOOLEAN NOT NULL DEFAULT FALSE,
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL
);
CREATE UNIQUE INDEX users_username ON users (lower(username));
CREATE INDEX users_email ON users (lower(email));

CREATE TABLE roles (
    id          BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT    NOT NULL,
    builtin     BOOLEAN NOT NULL DEFAULT FALSE,
    -- JSON list such as ["jobs:write","runs:read"]; built-in roles' sets come
    -- from the code, this copy is informational.
    permissions TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL
);
CREATE UNIQUE INDEX roles_name ON roles (lower(name));
INSERT INTO roles (name, builtin, permissions, created_at) VALUES
    ('admin', TRUE, '[]', 0), ('operator', TRUE, '[]', 0), ('viewer', TRUE, '[]', 0);

CREATE TABLE groups (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX groups_name ON groups (lower(name));

CREATE TABLE group_members (
    group_id BIGINT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    user_id  BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_user ON group_members(user_id);

-- A role granted to a user or to a group (exactly one of the two).
CREATE TABLE role_grants (
    role_id  BIGINT NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
    user_id  BIGINT REFERENCES users(id) ON DELETE CASCADE,
    group_id BIGINT REFERENCES groups(id) ON DELETE CASCADE,
    CHECK ((user_id IS NULL) <> (group_id IS NULL))
);
CREATE UNIQUE INDEX role_grants_user ON role_grants(user_id, role_id) WHERE user_id IS NOT NULL;
CREATE UNIQUE INDEX role_grants_group ON role_grants(group_id, role_id) WHERE group_id IS NOT NULL;

CREATE TABLE sessions (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- SHA-256 of the cookie's random id; the id itself is never stored.
    token_hash   BYTEA  NOT NULL UNIQUE,
    user_id      BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    address      TEXT,
    user_agent   TEXT
);
CREATE INDEX sessions_user ON sessions(user_id);

CREATE TABLE api_tokens (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash   BYTEA  NOT NULL UNIQUE,
    hint         TEXT   NOT NULL,
    user_id      BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT   NOT NULL,
    scopes       TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT,
    last_used_at BIGINT,
    revoked_at   BIGINT
);
CREATE INDEX api_tokens_user ON api_tokens(user_id);

CREATE TABLE password_resets (
    token_hash BYTEA  PRIMARY KEY,
    user_id    BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);

-- Named secrets jobs reference as ${secret:NAME}; `value` is sealed with the
-- associated data secrets/value/<name>.
CREATE TABLE secrets (
    name        TEXT   PRIMARY KEY,
    description TEXT   NOT NULL DEFAULT '',
    value       TEXT   NOT NULL,
    key_version BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE settings (
    key         TEXT   PRIMARY KEY,
    value       TEXT   NOT NULL,
    sealed      TEXT,
    key_version BIGINT,
    updated_at  BIGINT NOT NULL
);

-- Append-only, hash-chained: hash = SHA-256(canonical row ‖ prev_hash). Ids
-- are given by the chain (head + 1), never by a sequence, and no two rows may
-- name the same predecessor: a fork is refused by the database itself.
CREATE TABLE audit_log (
    id         BIGINT PRIMARY KEY,
    at         BIGINT NOT NULL,
    actor_kind TEXT   NOT NULL,
    actor_id   BIGINT,
    actor_name TEXT   NOT NULL,
    address    TEXT,
    user_agent TEXT,
    event      TEXT   NOT NULL,
    target     TEXT   NOT NULL,
    diff       TEXT   NOT NULL,
    prev_hash  TEXT   NOT NULL UNIQUE,
    hash       TEXT   NOT NULL
);
CREATE INDEX audit_log_at ON audit_log(at);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
