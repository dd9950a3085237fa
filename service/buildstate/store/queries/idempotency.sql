-- Idempotency-Key records of the writes written once over the executor (store/idempotency.py: artifacts,
-- release); the build appends of store/sqlite.py and store/postgres.py keep theirs on their hot path.

-- name: claim_key
-- An Idempotency-Key, taken for this transaction; no row back: it was taken before (on PostgreSQL a
-- concurrent request with the same key waits here until the first one commits or rolls back).
INSERT INTO idempotency_keys (actor, key, fingerprint, created_at)
VALUES (:actor, :key, :fingerprint, :now)
ON CONFLICT DO NOTHING
RETURNING 1 AS claimed

-- name: key_answer
SELECT fingerprint, status_code, body FROM idempotency_keys WHERE actor = :actor AND key = :key

-- name: record_answer
UPDATE idempotency_keys SET status_code = :status_code, body = :body WHERE actor = :actor AND key = :key
