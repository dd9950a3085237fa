-- Core schema: builds, their immutable events, and small tables maintained on write so that the
-- dashboard never scans history. Times are ISO-8601 UTC text with microseconds ('...Z'), which sort
-- correctly as text.

CREATE TABLE platforms (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE os_versions (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE image_types (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);

CREATE TABLE builds (
    id TEXT PRIMARY KEY,
    build_id TEXT NOT NULL UNIQUE,
    platform_id INTEGER NOT NULL REFERENCES platforms (id),
    os_version_id INTEGER NOT NULL REFERENCES os_versions (id),
    image_type_id INTEGER NOT NULL REFERENCES image_types (id),
    state_code INTEGER NOT NULL CHECK (state_code BETWEEN 0 AND 100 AND state_code % 5 = 0),
    status TEXT NOT NULL CHECK (status IN ('running', 'failed', 'succeeded')),
    attempt INTEGER NOT NULL CHECK (attempt >= 1),
    labels TEXT NOT NULL DEFAULT '{}',
    message TEXT,
    failure TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    last_event_seq INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX builds_combo_created ON builds (platform_id, os_version_id, image_type_id, created_at DESC);
CREATE INDEX builds_updated ON builds (updated_at DESC, id DESC);
CREATE INDEX builds_platform_updated ON builds (platform_id, updated_at DESC, id DESC);
CREATE INDEX builds_status_updated ON builds (status, updated_at DESC, id DESC);

-- One writer at a time (BEGIN IMMEDIATE), so AUTOINCREMENT order is commit order.
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    build_uuid TEXT NOT NULL REFERENCES builds (id),
    type TEXT NOT NULL CHECK (type IN ('created', 'state', 'failure', 'reset')),
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
    recorded_at TEXT NOT NULL
);
CREATE INDEX events_build ON events (build_uuid, seq);
CREATE INDEX events_platform ON events (platform_id, seq);
CREATE INDEX events_type_state ON events (type, state_code, seq);
CREATE INDEX events_steps ON events (from_state_code, seq) WHERE type = 'state';

CREATE TABLE failures (
    seq INTEGER PRIMARY KEY REFERENCES events (seq),
    build_uuid TEXT NOT NULL REFERENCES builds (id),
    error_message TEXT NOT NULL,
    error_code TEXT,
    component TEXT,
    details TEXT,
    recorded_at TEXT NOT NULL
);

CREATE TABLE status_counts (status TEXT PRIMARY KEY, n INTEGER NOT NULL);
INSERT INTO status_counts (status, n) VALUES ('running', 0), ('failed', 0), ('succeeded', 0);

CREATE TABLE combos (
    platform_id INTEGER NOT NULL,
    os_version_id INTEGER NOT NULL,
    image_type_id INTEGER NOT NULL,
    PRIMARY KEY (platform_id, os_version_id, image_type_id)
) WITHOUT ROWID;

CREATE TABLE idempotency_keys (
    actor TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status_code INTEGER,
    body TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (actor, key)
) WITHOUT ROWID;
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
