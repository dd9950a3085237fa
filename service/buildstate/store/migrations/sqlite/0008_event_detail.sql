-- Event types of artifacts (issue 16) and of channels and revocations (issue 17), and `events.detail` for
-- what such an event carries beyond the build columns. SQLite changes a CHECK only by rebuilding the table:
-- the rows, their seq, the AUTOINCREMENT counter and the indexes are kept as they were.
CREATE TABLE events_new (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    build_uuid TEXT NOT NULL REFERENCES builds (id),
    type TEXT NOT NULL CHECK (type IN ('created', 'state', 'failure', 'reset', 'artifact', 'channel', 'revoked',
                                       'restored')),
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
INSERT INTO events_new (seq, build_uuid, type, attempt, state_code, from_state_code, status, message, failure,
                        reason, actor, provenance, duration_ms, platform_id, os_version_id, image_type_id,
                        recorded_at)
SELECT seq, build_uuid, type, attempt, state_code, from_state_code, status, message, failure, reason, actor,
       provenance, duration_ms, platform_id, os_version_id, image_type_id, recorded_at
FROM events ORDER BY seq;
-- The counter goes with the table: what the old one had handed out is never handed out again.
DELETE FROM sqlite_sequence WHERE name = 'events_new';
UPDATE sqlite_sequence SET name = 'events_new' WHERE name = 'events';
DROP TABLE events;
ALTER TABLE events_new RENAME TO events;
CREATE INDEX events_build ON events (build_uuid, seq);
CREATE INDEX events_platform ON events (platform_id, seq);
CREATE INDEX events_type_state ON events (type, state_code, seq);
CREATE INDEX events_steps ON events (from_state_code, seq) WHERE type = 'state';
