-- Identity, access, sealed values and the audit log. Times are Unix ms (UTC).

CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    username      TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    email         TEXT    COLLATE NOCASE,
    -- Argon2id PHC string.
    password_hash TEXT    NOT NULL,
    must_change   INTEGER NOT NULL DEFAULT 0,
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
) STRICT;

CREATE TABLE roles (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    builtin     INTEGER NOT NULL DEFAULT 0,
    -- JSON list such as ["jobs:write","runs:read"]; built-in roles' sets come
    -- from the code, this copy is informational.
    permissions TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;

INSERT INTO roles (name, builtin, permissions, created_at) VALUES
    ('admin', 1, '[]', 0), ('operator', 1, '[]', 0), ('viewer', 1, '[]', 0);

CREATE TABLE groups (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE group_members (
    group_id INTEGER NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    user_id  INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
) STRICT;
CREATE INDEX group_members_user ON group_members(user_id);

-- A role granted to a user or to a group (exactly one of the two).
CREATE TABLE role_grants (
    role_id  INTEGER NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
    user_id  INTEGER REFERENCES users(id) ON DELETE CASCADE,
    group_id INTEGER REFERENCES groups(id) ON DELETE CASCADE,
    CHECK ((user_id IS NULL) <> (group_id IS NULL))
) STRICT;
CREATE UNIQUE INDEX role_grants_user ON role_grants(user_id, role_id) WHERE user_id IS NOT NULL;
CREATE UNIQUE INDEX role_grants_group ON role_grants(group_id, role_id) WHERE group_id IS NOT NULL;

CREATE TABLE sessions (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    -- SHA-256 of the cookie's random id; the id itself is never stored.
    token_hash   BLOB    NOT NULL UNIQUE,
    user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    -- Absolute end of life; the idle limit is checked against last_seen_at.
    expires_at   INTEGER NOT NULL,
    address      TEXT,
    user_agent   TEXT
) STRICT;
CREATE INDEX sessions_user ON sessions(user_id);

CREATE TABLE api_tokens (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    token_hash   BLOB    NOT NULL UNIQUE,
    -- The first characters of the token, to recognise it in lists.
    hint         TEXT    NOT NULL,
    user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    scopes       TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    last_used_at INTEGER,
    revoked_at   INTEGER
) STRICT;
CREATE INDEX api_tokens_user ON api_tokens(user_id);

CREATE TABLE password_resets (
    token_hash BLOB    PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
) STRICT;

-- Named secrets jobs reference as ${secret:NAME}. `value` is sealed with the
-- associated data secrets/value/<name>.
CREATE TABLE secrets (
    name        TEXT    PRIMARY KEY,
    description TEXT    NOT NULL DEFAULT '',
    value       TEXT    NOT NULL,
    key_version INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) STRICT;

-- Settings documents (JSON) with at most one sealed field each
-- (associated data settings/sealed/<key>).
CREATE TABLE settings (
    key         TEXT    PRIMARY KEY,
    value       TEXT    NOT NULL,
    sealed      TEXT,
    key_version INTEGER,
    updated_at  INTEGER NOT NULL
) STRICT;

-- Append-only, hash-chained: hash = SHA-256(canonical row ‖ prev_hash).
CREATE TABLE audit_log (
    id         INTEGER PRIMARY KEY,
    at         INTEGER NOT NULL,
    actor_kind TEXT    NOT NULL,
    actor_id   INTEGER,
    actor_name TEXT    NOT NULL,
    address    TEXT,
    user_agent TEXT,
    event      TEXT    NOT NULL,
    target     TEXT    NOT NULL,
    diff       TEXT    NOT NULL,
    prev_hash  TEXT    NOT NULL,
    hash       TEXT    NOT NULL
) STRICT;
CREATE INDEX audit_log_at ON audit_log(at);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
