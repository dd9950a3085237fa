-- Ancestry, channels and revocations (issue 17; store/release.py, queries/release.sql).

-- A build's parents: the images it was built from. Edges only ever join two existing builds, never a build
-- with itself; cycles are refused by the write that adds an edge. `channel`: the channel the parent was
-- taken from (the child is out of date once the parent no longer heads it); `source`: 'api' or 'artifact'
-- (linked from an artifact's source_image_id).
CREATE TABLE build_parents (
    child_uuid uuid NOT NULL REFERENCES builds (id),
    parent_uuid uuid NOT NULL REFERENCES builds (id),
    channel text,
    source text NOT NULL CHECK (source IN ('api', 'artifact')),
    actor text NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (child_uuid, parent_uuid),
    CHECK (child_uuid <> parent_uuid)
);
CREATE INDEX build_parents_parent ON build_parents (parent_uuid, child_uuid);

-- A named pointer within a bucket (platform x OS version x image type) to the build to use. `head_uuid` is
-- NULL when nothing may be used (never assigned, or its head was revoked). `required_labels`: labels a build
-- must carry to be assigned. `moves` counts its history rows.
CREATE TABLE channels (
    id serial PRIMARY KEY,
    name text NOT NULL,
    platform_id integer NOT NULL REFERENCES platforms (id),
    os_version_id integer NOT NULL REFERENCES os_versions (id),
    image_type_id integer NOT NULL REFERENCES image_types (id),
    head_uuid uuid REFERENCES builds (id),
    required_labels jsonb NOT NULL DEFAULT '{}'::jsonb,
    moves bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    UNIQUE (name, platform_id, os_version_id, image_type_id)
);
CREATE INDEX channels_head ON channels (head_uuid) WHERE head_uuid IS NOT NULL;
CREATE INDEX channels_name ON channels (name, id);

-- Every move of a channel, in order: an assignment ('assign') or a revocation that emptied it ('revoked').
CREATE TABLE channel_history (
    id bigserial PRIMARY KEY,
    channel_id integer NOT NULL REFERENCES channels (id),
    from_uuid uuid REFERENCES builds (id),
    to_uuid uuid REFERENCES builds (id),
    cause text NOT NULL CHECK (cause IN ('assign', 'revoked')),
    reason text NOT NULL,
    actor text NOT NULL,
    at timestamptz NOT NULL,
    event_seq bigint REFERENCES events (seq)
);
CREATE INDEX channel_history_channel ON channel_history (channel_id, id);
CREATE INDEX channel_history_to ON channel_history (to_uuid);

-- Revocations. Own (cause_id NULL): asked for by someone, now or at a scheduled `at` (fired_at NULL until
-- then). Inherited (cause_id set): a descendant of the build revoked by cause_id, revoked_by naming that
-- build. A build is revoked while it has a fired revocation that is not lifted; restoring a build lifts its
-- own revocation and exactly the inherited ones it caused.
CREATE TABLE revocations (
    id bigserial PRIMARY KEY,
    build_uuid uuid NOT NULL REFERENCES builds (id),
    revoked_by uuid NOT NULL REFERENCES builds (id),
    cause_id bigint REFERENCES revocations (id),
    reason text NOT NULL,
    actor text NOT NULL,
    at timestamptz NOT NULL,
    created_at timestamptz NOT NULL,
    fired_at timestamptz,
    event_seq bigint REFERENCES events (seq),
    lifted_at timestamptz,
    lifted_by text,
    lift_reason text,
    CHECK ((cause_id IS NULL) = (revoked_by = build_uuid))
);
CREATE UNIQUE INDEX revocations_own ON revocations (build_uuid) WHERE cause_id IS NULL AND lifted_at IS NULL;
CREATE UNIQUE INDEX revocations_inherited ON revocations (build_uuid, cause_id)
    WHERE cause_id IS NOT NULL AND lifted_at IS NULL;
CREATE INDEX revocations_live ON revocations (build_uuid) WHERE fired_at IS NOT NULL AND lifted_at IS NULL;
CREATE INDEX revocations_due ON revocations (at) WHERE fired_at IS NULL AND lifted_at IS NULL;
CREATE INDEX revocations_cause ON revocations (cause_id) WHERE lifted_at IS NULL;
CREATE INDEX revocations_unannounced ON revocations (id) WHERE event_seq IS NULL AND fired_at IS NOT NULL;

-- An artifact that names its source image (source_image_id) finds the build that recorded it by this.
CREATE INDEX artifacts_external_id ON artifacts (external_id);
