-- Event types of artifacts (issue 16) and of channels and revocations (issue 17), and `events.detail` for
-- what such an event carries beyond the build columns.
ALTER TABLE events DROP CONSTRAINT events_type_check;
ALTER TABLE events ADD CONSTRAINT events_type_check
    CHECK (type IN ('created', 'state', 'failure', 'reset', 'artifact', 'channel', 'revoked', 'restored'));
ALTER TABLE events ADD COLUMN detail jsonb;
