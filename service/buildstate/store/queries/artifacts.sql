-- Artifacts: what builds made (store/artifacts.py), and the `artifact` events that record them.

-- name: of_build
-- A build's artifacts in the order they were recorded (the unique index's first column finds them).
SELECT platform, region, kind, external_id, labels, attempt, event_seq, recorded_at, actor
FROM artifacts WHERE build = :build ORDER BY id

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

-- name: append_event.sqlite
-- The event of new artifacts. It changes no state: it copies the build's, and the build row stays as it
-- is. One writer at a time, so AUTOINCREMENT hands out seq in commit order (store/sqlite.py).
INSERT INTO events (build_uuid, type, attempt, state_code, from_state_code, status, actor, provenance,
                    platform_id, os_version_id, image_type_id, recorded_at, detail)
VALUES (:build, :type, :attempt, :state_code, :state_code, :status, :actor, :provenance,
        :platform_id, :os_version_id, :image_type_id, :now, :detail)
RETURNING seq, recorded_at

-- name: append_event.postgresql
-- The same, under the feed lock that orders every append (store/postgres.py): the seq is drawn after it is
-- taken and the lock is held until COMMIT, so readers never see a later seq before an earlier one. The
-- build row is locked before (the lock order), and what follows it in this transaction is the artifacts'
-- one insert, the outbox's and the idempotency answer.
WITH feed_lock AS (SELECT pg_advisory_xact_lock(:feed_lock)),
ev AS (
    INSERT INTO events (seq, build_uuid, type, attempt, state_code, from_state_code, status, actor,
                        provenance, platform_id, os_version_id, image_type_id, recorded_at, detail)
    SELECT nextval('events_seq'), :build, :type, :attempt, :state_code, :state_code, :status, :actor,
           :provenance, :platform_id, :os_version_id, :image_type_id, clock_timestamp(), :detail
    FROM feed_lock
    RETURNING seq, recorded_at
),
wake AS (SELECT pg_notify('buildstate_events', seq::text) FROM ev)
SELECT ev.seq, ev.recorded_at FROM ev CROSS JOIN wake

-- name: insert_artifacts.sqlite
-- The new artifacts (a JSON list, the event's detail), each with the event that recorded them.
INSERT INTO artifacts (build, attempt, platform, region, kind, external_id, labels, event_seq, recorded_at,
                       actor)
SELECT :build, :attempt, json_extract(j.value, '$.platform'), json_extract(j.value, '$.region'),
       json_extract(j.value, '$.kind'), json_extract(j.value, '$.external_id'),
       json_extract(j.value, '$.labels'), :seq, :recorded_at, :actor
FROM json_each(:artifacts) j ORDER BY j.key

-- name: insert_artifacts.postgresql
INSERT INTO artifacts (build, attempt, platform, region, kind, external_id, labels, event_seq, recorded_at,
                       actor)
SELECT :build, :attempt, j.value ->> 'platform', j.value ->> 'region', j.value ->> 'kind',
       j.value ->> 'external_id', j.value -> 'labels', :seq, :recorded_at, :actor
FROM jsonb_array_elements(:artifacts) WITH ORDINALITY AS j (value, n) ORDER BY j.n

-- name: outbox
-- A delivery per enabled webhook that wants the event (its platform, OS version, image type and event
-- types; a `states` filter never matches an event that changes no state), queued with it.
INSERT INTO webhook_deliveries (webhook_id, event_seq, message_id, status, next_attempt_at, created_at)
SELECT w.id, e.seq, 'msg_' || e.seq || '_' || w.id, 'pending', e.recorded_at, e.recorded_at
FROM events e JOIN webhooks w ON w.enabled
    AND (w.platform IS NULL OR w.platform = :platform)
    AND (w.os_version IS NULL OR w.os_version = :os_version)
    AND (w.image_type IS NULL OR w.image_type = :image_type)
    AND (w.event_types IS NULL OR w.event_types LIKE '%,' || e.type || ',%')
    AND w.states IS NULL
WHERE e.seq = :seq

-- name: latest.sqlite
-- GET /artifacts/latest: the succeeded builds of one platform x OS version x image type, newest first
-- (builds_latest_succeeded: `status = 'succeeded'` is written out for the partial index to apply), each
-- probed for matching artifacts through the unique index; the first build's newest match. The sort of its
-- last key (a.id) is of one build's artifacts at a time, so the LIMIT stops the walk at the first build
-- with a match (SQLite: "TEMP B-TREE FOR RIGHT PART OF ORDER BY"; PostgreSQL: an incremental sort). A
-- filter left NULL matches anything; each of :labels must be the artifact's label, or its build's when
-- the artifact has none of that name. The build itself is read after, with build_statement.
SELECT a.build, a.platform, a.region, a.kind, a.external_id, a.labels, a.attempt, a.event_seq, a.recorded_at,
       a.actor
FROM builds b JOIN artifacts a ON a.build = b.id
WHERE b.platform_id = (SELECT id FROM platforms WHERE name = :platform)
  AND b.os_version_id = (SELECT id FROM os_versions WHERE name = :os_version)
  AND b.image_type_id = (SELECT id FROM image_types WHERE name = :image_type)
  AND b.status = 'succeeded'
  AND (:region IS NULL OR a.region = :region) AND (:kind IS NULL OR a.kind = :kind)
  AND NOT EXISTS (
      SELECT 1 FROM json_each(:labels) f
      WHERE COALESCE(json_extract(a.labels, '$."' || f.key || '"'),
                     json_extract(b.labels, '$."' || f.key || '"')) IS NOT f.value)
ORDER BY b.updated_at DESC, b.id DESC, a.id DESC LIMIT 1

-- name: latest.postgresql
-- The same; the artifact's labels over its build's are `b.labels || a.labels`.
SELECT a.build, a.platform, a.region, a.kind, a.external_id, a.labels, a.attempt, a.event_seq, a.recorded_at,
       a.actor
FROM builds b JOIN artifacts a ON a.build = b.id
WHERE b.platform_id = (SELECT id FROM platforms WHERE name = :platform)
  AND b.os_version_id = (SELECT id FROM os_versions WHERE name = :os_version)
  AND b.image_type_id = (SELECT id FROM image_types WHERE name = :image_type)
  AND b.status = 'succeeded'
  AND (:region::text IS NULL OR a.region = :region) AND (:kind::text IS NULL OR a.kind = :kind)
  AND (b.labels || a.labels) @> :labels
ORDER BY b.updated_at DESC, b.id DESC, a.id DESC LIMIT 1

-- name: succeeded_in_bucket
-- What a 404 of the lookup says: whether the platform x OS version x image type has a succeeded build.
SELECT 1 AS found FROM builds b
WHERE b.platform_id = (SELECT id FROM platforms WHERE name = :platform)
  AND b.os_version_id = (SELECT id FROM os_versions WHERE name = :os_version)
  AND b.image_type_id = (SELECT id FROM image_types WHERE name = :image_type)
  AND b.status = 'succeeded'
LIMIT 1
