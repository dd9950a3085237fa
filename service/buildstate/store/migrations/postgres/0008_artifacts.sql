-- Artifacts (issue 16): what a build made (an AMI per region, a gallery image version, a GCP image, a
-- vSphere template), recorded by POST /builds/{ref}/artifacts or from a Packer manifest. Recording new
-- ones appends an `artifact` event that lists them in `events.detail`, in the same transaction.
--
-- The events.type check is widened here once for issue 16 ('artifact') and issue 17 ('channel',
-- 'revoked', 'restored'), and `detail` holds what an event carries beyond the build's columns.
ALTER TABLE events DROP CONSTRAINT events_type_check;
ALTER TABLE events ADD CONSTRAINT events_type_check CHECK (
    type IN ('created', 'state', 'failure', 'reset', 'artifact', 'channel', 'revoked', 'restored')
);
ALTER TABLE events ADD COLUMN detail jsonb;

-- (build, attempt, platform, region, kind, external_id) is one artifact: recording it again in the same
-- attempt is a replay; after a reset, the next attempt that records it again makes a row of its own, so
-- an attempt's rows are what that attempt made (the lookup answers only the build's current attempt's).
-- region is '' for region-less targets (a vSphere template, a file). The unique index also finds a
-- build's artifacts (its first column), and an attempt's (its first two). Ids only order the artifacts of one build, whose writes take the build's
-- row lock one after another.
CREATE TABLE artifacts (
    id bigserial PRIMARY KEY,
    build uuid NOT NULL REFERENCES builds (id),
    attempt integer NOT NULL CHECK (attempt >= 1),
    platform text NOT NULL,
    region text NOT NULL DEFAULT '',
    kind text NOT NULL,
    external_id text NOT NULL,
    labels jsonb NOT NULL DEFAULT '{}'::jsonb,
    event_seq bigint NOT NULL REFERENCES events (seq),
    recorded_at timestamptz NOT NULL,
    actor text NOT NULL,
    UNIQUE (build, attempt, platform, region, kind, external_id)
);
CREATE INDEX artifacts_event ON artifacts (event_seq);
-- GET /artifacts/latest: the newest succeeded builds of one platform x OS version x image type, newest
-- first, each probed for a matching artifact through the unique index above (store/artifacts.py). Only
-- succeeded builds are in it, so the writes of running builds do not maintain it.
CREATE INDEX builds_latest_succeeded ON builds (platform_id, os_version_id, image_type_id, updated_at DESC, id DESC)
    WHERE status = 'succeeded';
