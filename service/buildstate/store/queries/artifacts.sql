-- Artifacts: what builds made (store/artifacts.py), and the `artifact` events that record them.

-- name: of_build
-- A build's artifacts in the order they were recorded (the unique index's first column finds them).
SELECT platform, region, kind, external_id, labels, attempt, event_seq, recorded_at, actor
FROM artifacts WHERE build = :build ORDER BY id

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
-- GET /artifacts/latest: the succeeded builds of one platform x OS version x image type, newest first
-- (builds_latest_succeeded: `status = 'succeeded'` is written out for the partial index to apply), each
-- probed for matching artifacts through the unique index; the first build's newest match. The sort of its
-- last key (a.id) is of one build's artifacts at a time, so the LIMIT stops the walk at the first build
-- with a match (SQLite: "TEMP B-TREE FOR RIGHT PART OF ORDER BY"; PostgreSQL: see below). A
-- filter left NULL matches anything; each of :labels must be the artifact's label, or its build's when
-- the artifact has none of that name. The build itself is read after, with build_statement. {builds} is
-- latest_builds (the bucket's succeeded builds), or head_build for ?channel= (the channel's head). With
-- ?channel=, :assigned is the event seq of the move that made the head: only the artifacts it had then
-- count (one recorded later, by a write key with no release scope and no move, is not what the channel was
-- pointed at); NULL without.
SELECT a.build, a.platform, a.region, a.kind, a.external_id, a.labels, a.attempt, a.event_seq, a.recorded_at,
       a.actor
FROM builds b JOIN artifacts a ON a.build = b.id
WHERE {builds}
  AND (:region IS NULL OR a.region = :region) AND (:kind IS NULL OR a.kind = :kind)
  AND (:assigned IS NULL OR a.event_seq < :assigned)
  AND NOT EXISTS (
      SELECT 1 FROM json_each(:labels) f
      WHERE COALESCE(json_extract(a.labels, '$."' || f.key || '"'),
                     json_extract(b.labels, '$."' || f.key || '"')) IS NOT f.value)
ORDER BY b.updated_at DESC, b.id DESC, a.id DESC LIMIT 1

-- name: latest.postgresql
-- The same walk, in a form PostgreSQL cannot turn into a sort of the whole combination. asyncpg runs it as
-- a prepared statement, and after five runs PostgreSQL may keep a generic plan; that plan (and a custom
-- one when labels are asked for) estimates the probe (the NULL-or filters, jsonb @>) to match about one
-- artifact in the combination, so it reads every succeeded build of it and sorts them: 12.5k buffers for
-- one answer at 300k builds, 13 ms at 1M. So the newest 64 succeeded builds first (a LIMIT every plan
-- honours), and all of them only when none of those has a match: an Append under LIMIT 1 runs its second
-- branch only if the first returns nothing. A hit costs a few index reads however many builds there
-- are; a miss (the 404) still walks the combination. bench/scale.py times it, with its plan. For
-- ?channel= ({builds} is head_build) both branches read the one head build.
WITH succeeded AS NOT MATERIALIZED (
    SELECT b.id, b.labels, b.updated_at FROM builds b WHERE {builds}
), newest AS NOT MATERIALIZED (
    SELECT * FROM succeeded ORDER BY updated_at DESC, id DESC LIMIT 64
)
(SELECT a.build, a.platform, a.region, a.kind, a.external_id, a.labels, a.attempt, a.event_seq,
        a.recorded_at, a.actor
 FROM newest b JOIN artifacts a ON a.build = b.id
 WHERE (:region::text IS NULL OR a.region = :region) AND (:kind::text IS NULL OR a.kind = :kind)
   AND (:assigned::bigint IS NULL OR a.event_seq < :assigned)
   AND (b.labels || a.labels) @> :labels
 ORDER BY b.updated_at DESC, b.id DESC, a.id DESC LIMIT 1)
UNION ALL
(SELECT a.build, a.platform, a.region, a.kind, a.external_id, a.labels, a.attempt, a.event_seq,
        a.recorded_at, a.actor
 FROM succeeded b JOIN artifacts a ON a.build = b.id
 WHERE (:region::text IS NULL OR a.region = :region) AND (:kind::text IS NULL OR a.kind = :kind)
   AND (:assigned::bigint IS NULL OR a.event_seq < :assigned)
   AND (b.labels || a.labels) @> :labels
 ORDER BY b.updated_at DESC, b.id DESC, a.id DESC LIMIT 1)
LIMIT 1

-- name: latest_builds
b.platform_id = (SELECT id FROM platforms WHERE name = :platform)
  AND b.os_version_id = (SELECT id FROM os_versions WHERE name = :os_version)
  AND b.image_type_id = (SELECT id FROM image_types WHERE name = :image_type)
  AND b.status = 'succeeded'

-- name: head_build
b.id = :head

-- name: channel_head
-- GET /artifacts/latest?channel=: the head of that channel of the platform x OS version x image type (NULL
-- when it has none); no row: no such channel. With the head's status: a head reset since it was assigned
-- (running again, or failed) is no image to deploy.
SELECT c.head_uuid AS build, h.build_id AS head_build_id, h.status AS head_status,
       -- The newest move is the one that made the head (any later move changed it): channel_history_channel.
       (SELECT m.event_seq FROM channel_history m WHERE m.channel_id = c.id ORDER BY m.id DESC LIMIT 1)
           AS assigned
FROM channels c
LEFT JOIN builds h ON h.id = c.head_uuid
WHERE c.name = :channel
  AND c.platform_id = (SELECT id FROM platforms WHERE name = :platform)
  AND c.os_version_id = (SELECT id FROM os_versions WHERE name = :os_version)
  AND c.image_type_id = (SELECT id FROM image_types WHERE name = :image_type)

-- name: succeeded_in_bucket
-- What a 404 of the lookup says: whether the platform x OS version x image type has a succeeded build.
SELECT 1 AS found FROM builds b
WHERE b.platform_id = (SELECT id FROM platforms WHERE name = :platform)
  AND b.os_version_id = (SELECT id FROM os_versions WHERE name = :os_version)
  AND b.image_type_id = (SELECT id FROM image_types WHERE name = :image_type)
  AND b.status = 'succeeded'
LIMIT 1
