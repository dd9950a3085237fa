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

-- name: latest.sqlite
-- GET /artifacts/latest: among the succeeded builds of one platform x OS version x image type, newest
-- first (builds_latest_succeeded: `status = 'succeeded'` is written out for the partial index to apply),
-- the first with a matching artifact; then its newest matching artifact (the build itself is read
-- after, with build_statement). A filter left NULL matches anything; each of :labels must be the artifact's label, or its build's when the artifact has none of
-- that name.
SELECT a.build, a.platform, a.region, a.kind, a.external_id, a.labels, a.attempt, a.event_seq, a.recorded_at,
       a.actor
FROM artifacts a JOIN builds b ON b.id = a.build
WHERE b.id = (
    SELECT b2.id FROM builds b2
    WHERE b2.platform_id = (SELECT id FROM platforms WHERE name = :platform)
      AND b2.os_version_id = (SELECT id FROM os_versions WHERE name = :os_version)
      AND b2.image_type_id = (SELECT id FROM image_types WHERE name = :image_type)
      AND b2.status = 'succeeded'
      AND EXISTS (
          SELECT 1 FROM artifacts a2
          WHERE a2.build = b2.id AND (:region IS NULL OR a2.region = :region)
            AND (:kind IS NULL OR a2.kind = :kind)
            AND NOT EXISTS (
                SELECT 1 FROM json_each(:labels) f
                WHERE COALESCE(json_extract(a2.labels, '$."' || f.key || '"'),
                               json_extract(b2.labels, '$."' || f.key || '"')) IS NOT f.value))
    ORDER BY b2.updated_at DESC, b2.id DESC LIMIT 1)
  AND (:region IS NULL OR a.region = :region) AND (:kind IS NULL OR a.kind = :kind)
  AND NOT EXISTS (
      SELECT 1 FROM json_each(:labels) f
      WHERE COALESCE(json_extract(a.labels, '$."' || f.key || '"'),
                     json_extract(b.labels, '$."' || f.key || '"')) IS NOT f.value)
ORDER BY a.id DESC LIMIT 1

-- name: latest.postgresql
-- The same walk, written so that PostgreSQL's plan cannot turn it into a sort of the whole bucket: asyncpg
-- runs it as a prepared statement, and after five runs PostgreSQL may keep a generic plan, which estimates
-- the artifact probe (the NULL-or filters, jsonb @>) to match about one build in the bucket, so it reads and
-- sorts every succeeded build of the bucket (linear: 2.5k builds probed for one answer at 300k builds).
-- First the newest 64 succeeded builds (a LIMIT the plan must honour), and only if none of them has the
-- artifact, all of them (COALESCE evaluates its second subquery only then): a hit costs a few index reads
-- however large the bucket; a miss (the 404) still walks the bucket. bench/scale.py times both dialects.
WITH succeeded AS NOT MATERIALIZED (
    SELECT b2.id, b2.labels, b2.updated_at FROM builds b2
    WHERE b2.platform_id = (SELECT id FROM platforms WHERE name = :platform)
      AND b2.os_version_id = (SELECT id FROM os_versions WHERE name = :os_version)
      AND b2.image_type_id = (SELECT id FROM image_types WHERE name = :image_type)
      AND b2.status = 'succeeded'
), newest AS NOT MATERIALIZED (
    SELECT * FROM succeeded ORDER BY updated_at DESC, id DESC LIMIT 64
)
SELECT a.build, a.platform, a.region, a.kind, a.external_id, a.labels, a.attempt, a.event_seq, a.recorded_at,
       a.actor
FROM artifacts a JOIN builds b ON b.id = a.build
WHERE b.id = COALESCE(
    (SELECT c.id FROM newest c WHERE EXISTS (
        SELECT 1 FROM artifacts a2 WHERE a2.build = c.id AND (:region::text IS NULL OR a2.region = :region)
          AND (:kind::text IS NULL OR a2.kind = :kind) AND (c.labels || a2.labels) @> :labels)
     ORDER BY c.updated_at DESC, c.id DESC LIMIT 1),
    (SELECT c.id FROM succeeded c WHERE EXISTS (
        SELECT 1 FROM artifacts a2 WHERE a2.build = c.id AND (:region::text IS NULL OR a2.region = :region)
          AND (:kind::text IS NULL OR a2.kind = :kind) AND (c.labels || a2.labels) @> :labels)
     ORDER BY c.updated_at DESC, c.id DESC LIMIT 1))
  AND (:region::text IS NULL OR a.region = :region) AND (:kind::text IS NULL OR a.kind = :kind)
  AND (b.labels || a.labels) @> :labels
ORDER BY a.id DESC LIMIT 1

-- name: succeeded_in_bucket
-- What a 404 of the lookup says: whether the platform x OS version x image type has a succeeded build.
SELECT 1 AS found FROM builds b
WHERE b.platform_id = (SELECT id FROM platforms WHERE name = :platform)
  AND b.os_version_id = (SELECT id FROM os_versions WHERE name = :os_version)
  AND b.image_type_id = (SELECT id FROM image_types WHERE name = :image_type)
  AND b.status = 'succeeded'
LIMIT 1
