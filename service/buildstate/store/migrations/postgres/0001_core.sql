-- Core schema: builds, their immutable events, and small tables maintained on write so that the
-- dashboard never scans history.

CREATE TABLE platforms (id serial PRIMARY KEY, name text NOT NULL UNIQUE);
CREATE TABLE os_versions (id serial PRIMARY KEY, name text NOT NULL UNIQUE);
CREATE TABLE image_types (id serial PRIMARY KEY, name text NOT NULL UNIQUE);

CREATE TABLE builds (
    id uuid PRIMARY KEY,
    build_id text NOT NULL UNIQUE,
    platform_id integer NOT NULL REFERENCES platforms (id),
    os_version_id integer NOT NULL REFERENCES os_versions (id),
    image_type_id integer NOT NULL REFERENCES image_types (id),
    state_code smallint NOT NULL CHECK (state_code BETWEEN 0 AND 100 AND state_code % 5 = 0),
    status text NOT NULL CHECK (status IN ('running', 'failed', 'succeeded')),
    attempt integer NOT NULL CHECK (attempt >= 1),
    labels jsonb NOT NULL DEFAULT '{}'::jsonb,
    message text,
    failure jsonb,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    last_event_seq bigint NOT NULL DEFAULT 0
);
CREATE INDEX builds_combo_created ON builds (platform_id, os_version_id, image_type_id, created_at DESC);
CREATE INDEX builds_updated ON builds (updated_at DESC, id DESC);
CREATE INDEX builds_platform_updated ON builds (platform_id, updated_at DESC, id DESC);
CREATE INDEX builds_status_updated ON builds (status, updated_at DESC, id DESC);

-- Values are taken only while holding the feed lock (see store/postgres.py), so seq order is commit order.
CREATE SEQUENCE events_seq AS bigint;

CREATE TABLE events (
    seq bigint PRIMARY KEY,
    build_uuid uuid NOT NULL REFERENCES builds (id),
    type text NOT NULL CHECK (type IN ('created', 'state', 'failure', 'reset')),
    attempt integer NOT NULL,
    state_code smallint NOT NULL,
    from_state_code smallint,
    status text NOT NULL,
    message text,
    failure jsonb,
    reason text,
    actor text NOT NULL,
    provenance jsonb,
    duration_ms bigint,
    platform_id integer NOT NULL,
    os_version_id integer NOT NULL,
    image_type_id integer NOT NULL,
    recorded_at timestamptz NOT NULL
);
CREATE INDEX events_build ON events (build_uuid, seq);
CREATE INDEX events_platform ON events (platform_id, seq);
CREATE INDEX events_type_state ON events (type, state_code, seq);
CREATE INDEX events_steps ON events (from_state_code, seq) WHERE type = 'state';

CREATE TABLE failures (
    seq bigint PRIMARY KEY REFERENCES events (seq),
    build_uuid uuid NOT NULL REFERENCES builds (id),
    error_message text NOT NULL,
    error_code text,
    component text,
    details jsonb,
    recorded_at timestamptz NOT NULL
);

CREATE TABLE status_counts (status text PRIMARY KEY, n bigint NOT NULL);
INSERT INTO status_counts (status, n) VALUES ('running', 0), ('failed', 0), ('succeeded', 0);

CREATE TABLE combos (
    platform_id integer NOT NULL,
    os_version_id integer NOT NULL,
    image_type_id integer NOT NULL,
    PRIMARY KEY (platform_id, os_version_id, image_type_id)
);

CREATE TABLE idempotency_keys (
    actor text NOT NULL,
    key text NOT NULL,
    fingerprint text NOT NULL,
    status_code integer,
    body text,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (actor, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
