-- Who may call the API: API keys for pipelines, users (signing in for a JWT) for people and dashboards.
-- Secrets are never stored: a key is kept as the SHA-256 of its full text, a password as an argon2 hash.

CREATE TABLE api_keys (
    id bigserial PRIMARY KEY,
    prefix text NOT NULL UNIQUE,
    key_hash text NOT NULL,
    name text NOT NULL,
    scopes jsonb NOT NULL,
    platforms jsonb,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    created_by text NOT NULL,
    expires_at timestamptz,
    last_used_at timestamptz,
    revoked_at timestamptz,
    revoked_by text
);

CREATE TABLE users (
    id bigserial PRIMARY KEY,
    username text NOT NULL UNIQUE,
    password_hash text NOT NULL,
    role text NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    token_version integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    created_by text NOT NULL,
    password_changed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    disabled_at timestamptz
);

CREATE INDEX audit_log_outcome ON audit_log (outcome, id DESC);
