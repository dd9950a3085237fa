-- API keys and users (store/access.py). Times come from the service's clock on both databases.

-- name: create_key
-- No row back: the prefix is taken (KeyPrefixTaken; the caller draws another key).
INSERT INTO api_keys (prefix, key_hash, name, scopes, platforms, created_at, created_by, expires_at)
VALUES (:prefix, :key_hash, :name, :scopes, :platforms, :now, :actor, :expires_at)
ON CONFLICT (prefix) DO NOTHING
RETURNING id, prefix, key_hash, name, scopes, platforms, created_at, created_by, expires_at, last_used_at,
          revoked_at, revoked_by

-- name: key_by_prefix
SELECT id, prefix, key_hash, name, scopes, platforms, created_at, created_by, expires_at, last_used_at,
       revoked_at, revoked_by
FROM api_keys WHERE prefix = :prefix

-- name: all_keys
SELECT id, prefix, key_hash, name, scopes, platforms, created_at, created_by, expires_at, last_used_at,
       revoked_at, revoked_by
FROM api_keys WHERE :include_revoked OR revoked_at IS NULL ORDER BY id

-- name: revoke_key
-- Revoking twice keeps the first revocation. (:token is PostgreSQL's, below.)
UPDATE api_keys SET revoked_at = :now, revoked_by = :actor WHERE prefix = :prefix AND revoked_at IS NULL

-- name: revoke_key.postgresql
-- The same, and NOTIFY every worker's key cache (store/key_changes.py), delivered at COMMIT; whenever the
-- key exists, so that a repeated revocation is heard back too.
WITH revoked AS (
    UPDATE api_keys SET revoked_at = :now, revoked_by = :actor WHERE prefix = :prefix AND revoked_at IS NULL
)
SELECT pg_notify('buildstate_keys', :token) FROM api_keys WHERE prefix = :prefix

-- name: touch_key
-- At most one write per key per interval (the authenticator passes unless_since).
UPDATE api_keys SET last_used_at = :at WHERE id = :id AND (last_used_at IS NULL OR last_used_at < :unless_since)

-- name: create_user
-- No row back: the username is taken.
INSERT INTO users (username, password_hash, role, created_at, created_by, password_changed_at)
VALUES (:username, :password_hash, :role, :now, :actor, :now)
ON CONFLICT (username) DO NOTHING
RETURNING id, username, password_hash, role, token_version, created_at, created_by, password_changed_at,
          disabled_at

-- name: user_by_name
SELECT id, username, password_hash, role, token_version, created_at, created_by, password_changed_at,
       disabled_at
FROM users WHERE username = :username

-- name: all_users
SELECT id, username, password_hash, role, token_version, created_at, created_by, password_changed_at,
       disabled_at
FROM users ORDER BY username

-- name: disable_user
-- Disabling twice keeps the first time and does not bump the token version again.
UPDATE users SET disabled_at = coalesce(disabled_at, :now),
                 token_version = token_version + (CASE WHEN disabled_at IS NULL THEN 1 ELSE 0 END)
WHERE username = :username
RETURNING id, username, password_hash, role, token_version, created_at, created_by, password_changed_at,
          disabled_at

-- name: enable_user
UPDATE users SET disabled_at = NULL WHERE username = :username
RETURNING id, username, password_hash, role, token_version, created_at, created_by, password_changed_at,
          disabled_at

-- name: set_password
-- A new password withdraws every token issued before it (token_version).
UPDATE users SET password_hash = :password_hash, password_changed_at = :now, token_version = token_version + 1
WHERE username = :username
RETURNING id, username, password_hash, role, token_version, created_at, created_by, password_changed_at,
          disabled_at

-- name: has_admin
-- Someone can still administer: an active admin key or an enabled admin user. The scopes are a JSON array.
SELECT (EXISTS (SELECT 1 FROM api_keys WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > :now)
                AND EXISTS (SELECT 1 FROM json_each(api_keys.scopes) WHERE value = 'admin'))
        OR EXISTS (SELECT 1 FROM users WHERE role = 'admin' AND disabled_at IS NULL)) AS found

-- name: has_admin.postgresql
SELECT (EXISTS (SELECT 1 FROM api_keys WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > :now)
                AND scopes ? 'admin')
        OR EXISTS (SELECT 1 FROM users WHERE role = 'admin' AND disabled_at IS NULL)) AS found
