-- A build reference names one build (issue 13): a reference that reads as a UUID names the build with that
-- id, anything else the build with that build_id, and a build_id that reads as a UUID is refused at
-- creation. Builds created before that rule may carry such a build_id. They are recorded here, not
-- changed: nothing can tell which pipeline meant which build, so this migration does not guess. Each is
-- still reached by its own id; its build_id now names the build whose id it spells (named_build_uuid), or
-- no build. `buildstate migrate` warns while rows remain and `buildstate verify` lists them
-- (docs/operations.md says what to do with them).

-- domain.build_uuid_of in SQL, for this migration only (pg_temp: gone with the session): Python's
-- uuid.UUID drops 'urn:' and 'uuid:', then braces at either end, then every hyphen, and reads the 32
-- characters left with int(text, 16), which also takes a leading '+', a '0x' prefix and '_' between
-- digits. tests/store/test_build_refs.py checks that the two agree.
CREATE FUNCTION pg_temp.buildstate_uuid_of(ref text) RETURNS uuid LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN length(spelled) = 32 AND spelled ~ '^\+?(0[xX]_?)?[0-9A-Fa-f]+(_[0-9A-Fa-f]+)*$'
        THEN lpad(regexp_replace(regexp_replace(spelled, '^\+?(0[xX])?', ''), '_', '', 'g'), 32, '0')::uuid
    END
    FROM (SELECT replace(btrim(replace(replace(ref, 'urn:', ''), 'uuid:', ''), '{}'), '-', '') AS spelled) s
$$;

CREATE TABLE build_ref_conflicts (
    build_uuid uuid PRIMARY KEY REFERENCES builds (id),
    build_id text NOT NULL,
    spells_uuid uuid NOT NULL,
    named_build_uuid uuid REFERENCES builds (id),
    found_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
INSERT INTO build_ref_conflicts (build_uuid, build_id, spells_uuid, named_build_uuid)
SELECT b.id, b.build_id, pg_temp.buildstate_uuid_of(b.build_id), named.id
FROM builds b LEFT JOIN builds named ON named.id = pg_temp.buildstate_uuid_of(b.build_id)
WHERE pg_temp.buildstate_uuid_of(b.build_id) IS NOT NULL;

DROP FUNCTION pg_temp.buildstate_uuid_of(text);
