-- Events that leave their build as it is (EventRule.changes_state false: artifacts, channel moves,
-- revocations, restores; store/builds.py append_side_event). The row copies the build's state code, status
-- and attempt (from_state_code is the same code: nothing moved), and the build row, its updated_at and
-- last_event_seq stay as they are.

-- name: append_side.sqlite
-- One writer at a time, so AUTOINCREMENT hands out seq in commit order (store/sqlite.py).
INSERT INTO events (build_uuid, type, attempt, state_code, from_state_code, status, reason, actor, provenance,
                    platform_id, os_version_id, image_type_id, recorded_at, detail)
SELECT b.id, :type, b.attempt, b.state_code, b.state_code, b.status, :reason, :actor, :provenance,
       b.platform_id, b.os_version_id, b.image_type_id, :now, :detail
FROM builds b WHERE b.id = :build
RETURNING seq, recorded_at

-- name: append_side.postgresql
-- Under the feed lock that orders every append (store/postgres.py): the seq is drawn after it is taken and
-- the lock is held until COMMIT, so readers never see a later seq before an earlier one. Whatever build row
-- the transaction locks or refers to is locked before this (the lock order), and little follows it.
WITH feed_lock AS (SELECT pg_advisory_xact_lock(:feed_lock::bigint)),
ev AS (
    INSERT INTO events (seq, build_uuid, type, attempt, state_code, from_state_code, status, reason, actor,
                        provenance, platform_id, os_version_id, image_type_id, recorded_at, detail)
    SELECT nextval('events_seq'), b.id, :type, b.attempt, b.state_code, b.state_code, b.status, :reason,
           :actor, :provenance, b.platform_id, b.os_version_id, b.image_type_id, clock_timestamp(), :detail
    FROM feed_lock, builds b WHERE b.id = :build
    RETURNING seq, recorded_at
),
wake AS (SELECT pg_notify('buildstate_events', seq::text) FROM ev)
SELECT ev.seq, ev.recorded_at FROM ev CROSS JOIN wake

-- name: outbox
-- A delivery per enabled webhook that wants the event: its platform, OS version, image type, event types,
-- and states (an event without a word of its own, an artifact, matches no `states` filter: states=100 asks
-- for the moment a build reached 100, not for what was recorded about it afterwards).
INSERT INTO webhook_deliveries (webhook_id, event_seq, message_id, status, next_attempt_at, created_at)
SELECT w.id, e.seq, 'msg_' || e.seq || '_' || w.id, 'pending', e.recorded_at, e.recorded_at
FROM events e JOIN webhooks w ON w.enabled
    AND (w.platform IS NULL OR w.platform = :platform)
    AND (w.os_version IS NULL OR w.os_version = :os_version)
    AND (w.image_type IS NULL OR w.image_type = :image_type)
    AND (w.event_types IS NULL OR w.event_types LIKE '%,' || e.type || ',%')
    AND (w.states IS NULL OR w.states LIKE '%,' || :word || ',%')
WHERE e.seq = :seq
