-- A build reference names one build (issue 13): a reference that reads as a UUID names the build with that
-- id, anything else the build with that build_id, and a build_id that reads as a UUID is refused at
-- creation. Builds created before that rule may carry such a build_id. They are recorded here, not
-- changed: nothing can tell which pipeline meant which build, so this migration does not guess. Each is
-- still reached by its own id; its build_id now names the build whose id it spells (named_build_uuid), or
-- no build. `buildstate migrate` warns while rows remain and `buildstate verify` lists them
-- (docs/operations.md says what to do with them).
-- buildstate_uuid_of(text) is registered by the migrator: domain.build_uuid_of, as canonical text.
CREATE TABLE build_ref_conflicts (
    build_uuid TEXT PRIMARY KEY REFERENCES builds (id),
    build_id TEXT NOT NULL,
    spells_uuid TEXT NOT NULL,
    named_build_uuid TEXT REFERENCES builds (id),
    found_at TEXT NOT NULL
);
INSERT INTO build_ref_conflicts (build_uuid, build_id, spells_uuid, named_build_uuid, found_at)
SELECT b.id, b.build_id, buildstate_uuid_of(b.build_id), named.id, strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')
FROM builds b LEFT JOIN builds named ON named.id = buildstate_uuid_of(b.build_id)
WHERE buildstate_uuid_of(b.build_id) IS NOT NULL;
