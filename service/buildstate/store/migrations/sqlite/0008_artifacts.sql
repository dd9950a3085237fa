-- Artifacts (issue 16): what a build made (an AMI per region, a gallery image version, a GCP image, a
-- vSphere template), recorded by POST /builds/{ref}/artifacts or from a Packer manifest. Recording new
-- ones appends an `artifact` event that lists them in `events.detail`, in the same transaction.
--
-- The events.type check is widened here once for issue 16 ('artifact') and issue 17 ('channel',
-- 'revoked', 'restored'), and `detail` holds what an event carries beyond the build's columns (JSON
-- text). SQLite cannot change a CHECK in place: the table is rebuilt with the same columns, the same
-- indexes, and the same AUTOINCREMENT high-water mark, so no seq is ever handed out twice. The
-- migrator's connection leaves foreign keys off, as the rebuild needs (failures and webhook_deliveries
-- refer to events by name, and find the new table under the old name).
CREATE TABLE events_0008 (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    build_uuid TEXT NOT NULL REFERENCES builds (id),
    type TEXT NOT NULL CHECK (
        type IN ('created', 'state', 'failure', 'reset', 'artifact', 'channel', 'revoked', 'restored')
    ),
    attempt INTEGER NOT NULL,
    state_code INTEGER NOT NULL,
    from_state_code INTEGER,
    status TEXT NOT NULL,
    message TEXT,
    failure TEXT,
    reason TEXT,
    actor TEXT NOT NULL,
    provenance TEXT,
    duration_ms INTEGER,
    platform_id INTEGER NOT NULL,
    os_version_id INTEGER NOT NULL,
    image_type_id INTEGER NOT NULL,
    recorded_at TEXT NOT NULL,
    detail TEXT
);
INSERT INTO events_0008 (seq, build_uuid, type, attempt, state_code, from_state_code, status, message,
                         failure, reason, actor, provenance, duration_ms, platform_id, os_version_id,
                         image_type_id, recorded_at)
SELECT seq, build_uuid, type, attempt, state_code, from_state_code, status, message, failure, reason, actor,
       provenance, duration_ms, platform_id, os_version_id, image_type_id, recorded_at
FROM events ORDER BY seq;
-- The copy's high-water mark is its largest seq; the old table's may be higher (never lower).
DELETE FROM sqlite_sequence WHERE name = 'events_0008';
INSERT INTO sqlite_sequence (name, seq) SELECT 'events_0008', seq FROM sqlite_sequence WHERE name = 'events';
DROP TABLE events;
ALTER TABLE events_0008 RENAME TO events;
CREATE INDEX events_build ON events (build_uuid, seq);
CREATE INDEX events_platform ON events (platform_id, seq);
CREATE INDEX events_type_state ON events (type, state_code, seq);
CREATE INDEX events_steps ON events (from_state_code, seq) WHERE type = 'state';

-- (build, attempt, platform, region, kind, external_id) is one artifact: recording it again in the same
-- attempt is a replay; after a reset, the next attempt that records it again makes a row of its own, so
-- an attempt's rows are what that attempt made (the lookup answers only the build's current attempt's).
-- region is '' for region-less targets (a vSphere template, a file). The unique index also finds a
-- build's artifacts (its first column), and an attempt's (its first two).
CREATE TABLE artifacts (
    id INTEGER PRIMARY KEY,
    build TEXT NOT NULL REFERENCES builds (id),
    attempt INTEGER NOT NULL CHECK (attempt >= 1),
    platform TEXT NOT NULL,
    region TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL,
    external_id TEXT NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}',
    event_seq INTEGER NOT NULL REFERENCES events (seq),
    recorded_at TEXT NOT NULL,
    actor TEXT NOT NULL,
    UNIQUE (build, attempt, platform, region, kind, external_id)
);
CREATE INDEX artifacts_event ON artifacts (event_seq);
-- GET /artifacts/latest: the newest succeeded builds of one platform x OS version x image type, newest
-- first, each probed for a matching artifact through the unique index above (store/artifacts.py). Only
-- succeeded builds are in it, so the writes of running builds do not maintain it.
CREATE INDEX builds_latest_succeeded ON builds (platform_id, os_version_id, image_type_id, updated_at DESC, id DESC)
    WHERE status = 'succeeded';
