-- Ancestry, channels and revocations (store/release.py). Times come from the service's clock on both
-- databases. Every write of this area runs under the release lock (release_lock), so the rules checked in
-- it (a head is never revoked, a revocation is fired once) cannot be raced.

-- name: release_lock.postgresql
-- One at a time across every worker and instance; taken first, before any row lock.
SELECT pg_advisory_xact_lock(:lock::bigint)

-- name: release_lock.sqlite
-- SQLite's writer is one at a time already (BEGIN IMMEDIATE and the writers' flock).
SELECT 1

-- name: hold_builds.postgresql
-- Before a transaction's first event: the builds it appends events for, held against a change that locks
-- one of them (FOR UPDATE) and then waits for the feed lock this transaction is about to take. Lock order:
-- builds before the feed lock, as every write.
SELECT id FROM builds WHERE id = ANY(:uuids::uuid[]) ORDER BY id FOR KEY SHARE

-- name: hold_builds.sqlite
-- One writer at a time: nothing to hold.
SELECT 1

-- ------------------------------------------------------------------ ancestry

-- name: add_parent
INSERT INTO build_parents (child_uuid, parent_uuid, channel, source, actor, created_at)
VALUES (:child, :parent, :channel, :source, :actor, :now)
ON CONFLICT DO NOTHING RETURNING parent_uuid

-- name: parents_of
SELECT parent_uuid FROM build_parents WHERE child_uuid = :child

-- name: sources.postgresql
-- For each of these external ids, the build that recorded it first (artifacts_external_id): only that one.
-- Anyone may record an artifact with an id copied from another (another platform's key, another
-- provider's file path); were every build with that id a parent, the copy's build would become a parent of
-- the child and its revocation would reach a build its owner may not touch.
SELECT DISTINCT build FROM artifacts WHERE id IN (
    SELECT min(id) FROM artifacts WHERE external_id = ANY(:ids::text[]) GROUP BY external_id)
ORDER BY build

-- name: sources.sqlite
SELECT DISTINCT build FROM artifacts WHERE id IN (
    SELECT min(id) FROM artifacts WHERE external_id IN (SELECT value FROM json_each(:ids)) GROUP BY external_id)
ORDER BY build

-- name: parent_count
SELECT count(*) AS n FROM build_parents WHERE child_uuid = :child

-- name: is_ancestor
-- Whether :candidate is :of itself or one of its ancestors (adding :of as a parent of :candidate would
-- close a cycle). UNION drops rows already seen, so the walk ends on any graph.
WITH RECURSIVE up(uuid) AS (
    SELECT id FROM builds WHERE id = :of
    UNION
    SELECT p.parent_uuid FROM build_parents p JOIN up ON p.child_uuid = up.uuid
)
SELECT 1 AS found FROM up WHERE uuid = :candidate LIMIT 1

-- name: subtree_size
-- A build and its descendants, counted up to :limit.
WITH RECURSIVE down(uuid) AS (
    SELECT id FROM builds WHERE id = :root
    UNION
    SELECT p.child_uuid FROM build_parents p JOIN down ON p.parent_uuid = down.uuid
)
SELECT count(*) AS n FROM (SELECT uuid FROM down LIMIT :limit) d

-- name: ancestry
-- The build, its ancestors and its descendants (generations away: the shortest path), at most :limit.
WITH RECURSIVE up(uuid, depth) AS (
    SELECT parent_uuid, 1 FROM build_parents WHERE child_uuid = :build
    UNION
    SELECT p.parent_uuid, up.depth + 1 FROM build_parents p JOIN up ON p.child_uuid = up.uuid
    WHERE up.depth < :max_depth
), down(uuid, depth) AS (
    SELECT child_uuid, 1 FROM build_parents WHERE parent_uuid = :build
    UNION
    SELECT p.child_uuid, down.depth + 1 FROM build_parents p JOIN down ON p.parent_uuid = down.uuid
    WHERE down.depth < :max_depth
), nodes AS (
    SELECT id AS uuid, 'self' AS relation, 0 AS depth FROM builds WHERE id = :build
    UNION ALL SELECT uuid, 'ancestor', min(depth) FROM up GROUP BY uuid
    UNION ALL SELECT uuid, 'descendant', min(depth) FROM down GROUP BY uuid
)
SELECT uuid, relation, depth FROM nodes ORDER BY relation DESC, depth, uuid LIMIT :limit

-- name: edges_of.postgresql
SELECT child_uuid, parent_uuid, channel, source, created_at FROM build_parents
WHERE child_uuid = ANY(:uuids::uuid[]) AND parent_uuid = ANY(:uuids::uuid[])
ORDER BY child_uuid, created_at, parent_uuid

-- name: edges_of.sqlite
SELECT child_uuid, parent_uuid, channel, source, created_at FROM build_parents
WHERE child_uuid IN (SELECT value FROM json_each(:uuids)) AND parent_uuid IN (SELECT value FROM json_each(:uuids))
ORDER BY child_uuid, created_at, parent_uuid

-- name: stale_edges.postgresql
-- The edges whose parent no longer heads the channel (of its bucket) it was taken from.
SELECT e.child_uuid, e.parent_uuid FROM build_parents e JOIN builds p ON p.id = e.parent_uuid
WHERE e.child_uuid = ANY(:uuids::uuid[]) AND e.channel IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM channels c WHERE c.name = e.channel AND c.platform_id = p.platform_id
      AND c.os_version_id = p.os_version_id AND c.image_type_id = p.image_type_id AND c.head_uuid = p.id)

-- name: stale_edges.sqlite
SELECT e.child_uuid, e.parent_uuid FROM build_parents e JOIN builds p ON p.id = e.parent_uuid
WHERE e.child_uuid IN (SELECT value FROM json_each(:uuids)) AND e.channel IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM channels c WHERE c.name = e.channel AND c.platform_id = p.platform_id
      AND c.os_version_id = p.os_version_id AND c.image_type_id = p.image_type_id AND c.head_uuid = p.id)

-- ------------------------------------------------------------------ revocations

-- name: live_revocations.postgresql
-- The revocations in force of these builds: own ones first.
SELECT r.*, b.build_id AS revoked_by_build_id FROM revocations r JOIN builds b ON b.id = r.revoked_by
WHERE r.build_uuid = ANY(:uuids::uuid[]) AND r.fired_at IS NOT NULL AND r.lifted_at IS NULL
ORDER BY r.build_uuid, (r.cause_id IS NULL) DESC, r.id

-- name: live_revocations.sqlite
SELECT r.*, b.build_id AS revoked_by_build_id FROM revocations r JOIN builds b ON b.id = r.revoked_by
WHERE r.build_uuid IN (SELECT value FROM json_each(:uuids)) AND r.fired_at IS NOT NULL AND r.lifted_at IS NULL
ORDER BY r.build_uuid, (r.cause_id IS NULL) DESC, r.id

-- name: own_revocation
-- The build's own revocation that is not lifted (in force, or scheduled); at most one.
SELECT r.*, b.build_id AS revoked_by_build_id FROM revocations r JOIN builds b ON b.id = r.revoked_by
WHERE r.build_uuid = :build AND r.cause_id IS NULL AND r.lifted_at IS NULL

-- name: last_own_revocation
SELECT r.*, b.build_id AS revoked_by_build_id FROM revocations r JOIN builds b ON b.id = r.revoked_by
WHERE r.build_uuid = :build AND r.cause_id IS NULL ORDER BY r.id DESC LIMIT 1

-- name: revocation
SELECT r.*, b.build_id AS revoked_by_build_id FROM revocations r JOIN builds b ON b.id = r.revoked_by
WHERE r.id = :id

-- name: insert_revocation
INSERT INTO revocations (build_uuid, revoked_by, reason, actor, at, created_at)
VALUES (:build, :build, :reason, :actor, :at, :now) RETURNING id

-- name: bring_forward
-- A scheduled revocation asked for again now (the same reason, no later time): due now.
UPDATE revocations SET at = :now WHERE id = :id AND fired_at IS NULL AND lifted_at IS NULL

-- name: fire_revocation
UPDATE revocations SET fired_at = :now WHERE id = :id AND fired_at IS NULL AND lifted_at IS NULL RETURNING id

-- name: inherit
-- The revocation :cause (of the build :revoked_by) reaches :root and its descendants, but never :revoked_by
-- itself, nor a build that has it already.
WITH RECURSIVE down(uuid) AS (
    SELECT id FROM builds WHERE id = :root
    UNION
    SELECT p.child_uuid FROM build_parents p JOIN down ON p.parent_uuid = down.uuid
)
INSERT INTO revocations (build_uuid, revoked_by, cause_id, reason, actor, at, created_at, fired_at)
SELECT d.uuid, :revoked_by, :cause, :reason, :actor, :at, :now, :now FROM down d
WHERE d.uuid <> :revoked_by AND NOT EXISTS (
    SELECT 1 FROM revocations r WHERE r.build_uuid = d.uuid AND r.cause_id = :cause AND r.lifted_at IS NULL)
RETURNING id, build_uuid

-- name: causes_of
-- What a build passes on to a new child: each revocation in force, by the own revocation it comes from.
SELECT COALESCE(r.cause_id, r.id) AS cause, r.revoked_by, r.reason, r.actor, r.at
FROM revocations r WHERE r.build_uuid = :build AND r.fired_at IS NOT NULL AND r.lifted_at IS NULL
ORDER BY r.id

-- name: unannounced
-- Revocations in force that have no event yet: the ones this transaction fired.
SELECT r.*, b.build_id AS revoked_by_build_id FROM revocations r JOIN builds b ON b.id = r.revoked_by
WHERE r.event_seq IS NULL AND r.fired_at IS NOT NULL AND r.lifted_at IS NULL ORDER BY r.id

-- name: set_event
UPDATE revocations SET event_seq = :seq WHERE id = :id

-- name: lift
UPDATE revocations SET lifted_at = :now, lifted_by = :actor, lift_reason = :reason
WHERE (id = :id OR cause_id = :id) AND lifted_at IS NULL
RETURNING id, build_uuid, fired_at

-- name: still_revoked.postgresql
SELECT DISTINCT build_uuid FROM revocations
WHERE build_uuid = ANY(:uuids::uuid[]) AND fired_at IS NOT NULL AND lifted_at IS NULL

-- name: still_revoked.sqlite
SELECT DISTINCT build_uuid FROM revocations
WHERE build_uuid IN (SELECT value FROM json_each(:uuids)) AND fired_at IS NOT NULL AND lifted_at IS NULL

-- name: due
SELECT id, build_uuid FROM revocations
WHERE fired_at IS NULL AND lifted_at IS NULL AND cause_id IS NULL AND at <= :now ORDER BY at, id LIMIT :limit

-- ------------------------------------------------------------------ channels

-- name: ensure_channel
INSERT INTO channels (name, platform_id, os_version_id, image_type_id, created_at, updated_at)
SELECT :name, b.platform_id, b.os_version_id, b.image_type_id, :now, :now FROM builds b WHERE b.id = :build
ON CONFLICT DO NOTHING

-- name: channel_of_build
SELECT c.id, c.head_uuid, c.required_labels FROM channels c JOIN builds b ON b.id = :build
WHERE c.name = :name AND c.platform_id = b.platform_id AND c.os_version_id = b.os_version_id
  AND c.image_type_id = b.image_type_id

-- name: set_head
UPDATE channels SET head_uuid = :head, required_labels = :labels, moves = moves + 1, updated_at = :now
WHERE id = :id

-- name: set_requirements
UPDATE channels SET required_labels = :labels, updated_at = :now WHERE id = :id

-- name: add_move
INSERT INTO channel_history (channel_id, from_uuid, to_uuid, cause, reason, actor, at)
VALUES (:channel, :from_build, :to_build, :cause, :reason, :actor, :now) RETURNING id

-- name: set_move_event
UPDATE channel_history SET event_seq = :seq WHERE id = :id

-- name: revoked_heads
-- Channels whose head has a revocation in force (what a revocation empties).
SELECT c.id, c.name, c.head_uuid FROM channels c
WHERE c.head_uuid IS NOT NULL AND EXISTS (
    SELECT 1 FROM revocations r WHERE r.build_uuid = c.head_uuid AND r.fired_at IS NOT NULL
      AND r.lifted_at IS NULL)
ORDER BY c.id

-- name: empty_channel
UPDATE channels SET head_uuid = NULL, moves = moves + 1, updated_at = :now WHERE id = :id

-- name: channels
-- Followed by the caller's WHERE, ORDER BY and LIMIT.
SELECT c.id, c.name, pl.name AS platform, o.name AS os_version, t.name AS image_type, c.head_uuid,
       c.required_labels, c.moves, c.created_at, c.updated_at
FROM channels c
JOIN platforms pl ON pl.id = c.platform_id
JOIN os_versions o ON o.id = c.os_version_id
JOIN image_types t ON t.id = c.image_type_id

-- name: history
SELECT h.id, h.from_uuid, f.build_id AS from_build_id, h.to_uuid, t.build_id AS to_build_id, h.cause,
       h.reason, h.actor, h.at, h.event_seq
FROM channel_history h
LEFT JOIN builds f ON f.id = h.from_uuid
LEFT JOIN builds t ON t.id = h.to_uuid
WHERE h.channel_id = :channel ORDER BY h.id DESC LIMIT :limit
