"""A build reference names exactly one build, whatever the caller sends (issue 13, finding 1).

A reference that reads as a UUID names the build with that id; anything else names the build with that
``build_id``; a ``build_id`` that reads as a UUID is refused at creation (422 saying why); a create never
appends to or answers with another build; and builds stored before the rule whose ``build_id`` reads as
a UUID are recorded by migration 0005, not changed. On both stores.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.conftest import _pg_url, pg_admin
from tests.store.raw import fetch, run_sql, time_value, uuid_value

from buildstate.config import Settings
from buildstate.domain import build_uuid_of
from buildstate.models import BuildCreate
from buildstate.store import Store, create_store
from buildstate.store.migrate import PostgresMigrator, SqliteMigrator, expected_version
from buildstate.store.types import WriteContext
from buildstate.store.verify import verify

CTX = WriteContext(actor="tester")
VICTIM = {"platform": "gcp", "os_version": "ubuntu-24.04", "image_type": "base", "build_id": "victim-1"}
MIGRATIONS = Path(__file__).resolve().parents[2] / "service/buildstate/store/migrations"


def spellings(value: uuid.UUID) -> list[str]:
    """The same UUID as Python's uuid.UUID reads it, in spellings the BuildName pattern lets through."""
    text, plain = str(value), value.hex
    return [
        text,
        text.upper(),
        plain,
        plain.upper(),
        f"urn:uuid:{text}",
        f"uuid:{plain}",
        "-".join(plain[i : i + 4] for i in range(0, 32, 4)),  # PostgreSQL: a hyphen after any 4 digits
        f"{plain[:8]}-{plain[8:16]}-{plain[16:24]}-{plain[24:]}",
        f"{plain[:15]}_{plain[15:31]}",  # int(): '_' between digits (and a leading zero dropped)
        f"0x{plain[2:]}",  # int(): a 0x prefix
        f"0X{plain[2:]}",
        f"urn:uuid:+{plain[1:]}",  # int(): a sign
    ]


async def create_victim(client: TestClient[Any, Any]) -> dict[str, Any]:
    created = await client.post("/builds", json=VICTIM)
    assert created.status == 201
    victim: dict[str, Any] = await created.json()
    for code in (25, 50, 100):
        assert (await client.post(f"/builds/{victim['id']}/state", json={"state_code": code})).status == 200
    return victim


async def history(client: TestClient[Any, Any], ref: str) -> dict[str, Any]:
    answer = await client.get(f"/builds/{ref}/history")
    assert answer.status == 200
    data: dict[str, Any] = await answer.json()
    return data


async def test_a_build_id_that_reads_as_a_uuid_is_refused_and_touches_nothing(
    client: TestClient[Any, Any], store: Store
) -> None:
    victim = await create_victim(client)
    before = await history(client, victim["id"])
    victim_uuid = uuid.UUID(victim["id"])
    for spelling in [*spellings(victim_uuid), *spellings(uuid.uuid4())]:
        assert build_uuid_of(spelling) is not None, spelling
        answer = await client.post("/builds", json={**VICTIM, "platform": "aws", "build_id": spelling})
        body = await answer.json()
        assert answer.status == 422, (spelling, answer.status, body)
        assert body["errors"][0]["loc"] == "build_id"
        assert "may not read as a UUID" in body["errors"][0]["msg"], body
    assert await history(client, victim["id"]) == before  # no created event, back at 100
    listed = await (await client.get("/builds")).json()
    assert [b["build_id"] for b in listed["builds"]] == ["victim-1"]
    report = await verify(store)
    assert report.ok, report.as_dict()


async def test_a_create_never_appends_to_another_build_even_past_validation(
    client: TestClient[Any, Any], store: Store
) -> None:
    """The stores' create paths look a build up by its exact build_id, never as a reference: even a
    request that skipped validation (model_construct) makes its own build and leaves the victim alone."""
    victim = await create_victim(client)
    before = await history(client, victim["id"])
    unchecked = BuildCreate.model_construct(
        platform="aws", os_version="rhel-9", image_type="base", build_id=victim["id"], labels={}
    )
    result = await store.create_build(unchecked, CTX)
    made = json.loads(result.body)
    assert result.status_code == 201
    assert made["id"] != victim["id"]
    assert (made["platform"], made["build_id"]) == ("aws", victim["id"])
    assert await history(client, victim["id"]) == before
    again = await store.create_build(unchecked, CTX)  # a replay answers with that same build
    assert (again.status_code, json.loads(again.body)["id"]) == (200, made["id"])
    report = await verify(store)
    assert report.drift_count == 0, report.as_dict()


async def insert_legacy_build(store: Store, build_id: str, platform: str = "aws") -> str:
    """A build as the code before this rule could store it: its build_id is another build's UUID."""
    ident = str(uuid.uuid4())
    for table, name in (("platforms", platform), ("os_versions", VICTIM["os_version"]),
                        ("image_types", VICTIM["image_type"])):  # fmt: skip
        await run_sql(store, f"INSERT INTO {table} (name) VALUES ({{}}) ON CONFLICT (name) DO NOTHING", name)
    [[row]] = await fetch(
        store,
        "SELECT p.id AS p, o.id AS o, t.id AS t FROM platforms p, os_versions o, image_types t "
        "WHERE p.name = {} AND o.name = {} AND t.name = {}",
        platform,
        VICTIM["os_version"],
        VICTIM["image_type"],
    )
    stamp = time_value(store, datetime(2024, 1, 1, tzinfo=UTC))
    await run_sql(
        store,
        "INSERT INTO builds (id, build_id, platform_id, os_version_id, image_type_id, state_code, status, "
        "attempt, created_at, updated_at) VALUES ({}, {}, {}, {}, {}, 0, 'running', 1, {}, {})",
        uuid_value(store, ident), build_id, row["p"], row["o"], row["t"], stamp, stamp,
    )  # fmt: skip
    return ident


async def test_a_uuid_reference_names_the_build_with_that_id_even_when_a_build_id_spells_it(
    client: TestClient[Any, Any], store: Store
) -> None:
    victim = await create_victim(client)
    legacy = await insert_legacy_build(store, victim["id"])
    for spelling in spellings(uuid.UUID(victim["id"]))[:6]:
        answer = await client.get(f"/builds/{spelling}")
        assert answer.status == 200, spelling
        assert (await answer.json())["id"] == victim["id"], spelling
    feed = await client.get("/events", params={"build_id": victim["id"]})
    assert feed.status == 200  # PostgreSQL answered 500: the subquery named two builds
    assert {e["build"]["id"] for e in (await feed.json())["events"]} == {victim["id"]}
    # A write by that reference lands on the build with that id, and only there.
    reset = await client.post(f"/builds/{victim['id']}/reset", json={"reason": "again"})
    assert reset.status == 200
    assert (await reset.json())["id"] == victim["id"]
    assert (await client.get(f"/builds/{legacy}")).status == 200  # the legacy build keeps its own id
    legacy_history = await history(client, legacy)
    assert legacy_history["events"] == []


async def test_a_platform_bound_key_cannot_reach_another_platforms_build_through_a_build_id(
    client: TestClient[Any, Any], make_client: Any, make_key: Any
) -> None:
    victim = await create_victim(client)
    aws = await make_client(headers={"X-API-Key": await make_key("read", "write", platforms=["aws"])})
    answer = await aws.post("/builds", json={**VICTIM, "platform": "aws", "build_id": victim["id"]})
    assert answer.status == 422
    answer = await aws.post(f"/builds/{victim['id']}/state", json={"state_code": 5})
    assert answer.status == 403
    assert (await history(client, victim["id"]))["build"]["state_code"] == 100


# ---------------------------------------------------------------- the parsers, against a real PostgreSQL

HEX = "0123456789abcdefABCDEF"
# PostgreSQL's uuid input: optional braces around 32 hex digits with an optional hyphen after any four.
pg_spellings = st.builds(
    lambda groups, hyphens, braces: (
        ("{" if braces else "")
        + "".join(g + ("-" if h else "") for g, h in zip(groups, [*hyphens, False], strict=True))
        + ("}" if braces else "")
    ),
    st.lists(st.text(HEX, min_size=4, max_size=4), min_size=8, max_size=8),
    st.lists(st.booleans(), min_size=7, max_size=7),
    st.booleans(),
)
# Strings near a UUID: what a parser might half-accept.
near_uuids = st.lists(
    st.sampled_from([*HEX, "-", "_", "+", "x", "X", "{", "}", ":", ".", "g", "urn:", "uuid:", "0x"]),
    min_size=20,
    max_size=44,
).map("".join)


async def pg_reads_as_uuid(conn: asyncpg.Connection, text: str) -> uuid.UUID | None:
    try:
        value: uuid.UUID | None = await conn.fetchval("SELECT $1::text::uuid", text)
    except asyncpg.exceptions.InvalidTextRepresentationError:
        return None
    return value


@pytest.fixture
def pg_conn(pg_url: str) -> Any:
    loop = asyncio.new_event_loop()
    conn = loop.run_until_complete(asyncpg.connect(pg_url))
    yield loop, conn
    loop.run_until_complete(conn.close())
    loop.close()


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(text=st.one_of(pg_spellings, near_uuids))
def test_every_spelling_postgresql_reads_as_a_uuid_is_one_python_reads_the_same(
    pg_conn: Any, text: str
) -> None:
    loop, conn = pg_conn
    read_by_pg = loop.run_until_complete(pg_reads_as_uuid(conn, text))
    if read_by_pg is not None:
        assert build_uuid_of(text) == read_by_pg, text


def migration_function(name: str) -> str:
    sql = (MIGRATIONS / "postgres/0005_build_refs.sql").read_text()
    match = re.search(r"CREATE FUNCTION pg_temp\.buildstate_uuid_of.*?\$\$;", sql, re.DOTALL)
    assert match is not None
    return match.group(0).replace(
        "CREATE FUNCTION pg_temp.buildstate_uuid_of", f"CREATE OR REPLACE FUNCTION {name}"
    )


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(text=st.one_of(near_uuids, pg_spellings, st.uuids().map(str), st.uuids().map(lambda u: u.hex)))
def test_the_migrations_sql_reads_uuids_exactly_as_the_service_does(pg_conn: Any, text: str) -> None:
    loop, conn = pg_conn
    loop.run_until_complete(conn.execute(migration_function("pg_temp.uuid_of_for_test")))
    in_sql = loop.run_until_complete(conn.fetchval("SELECT pg_temp.uuid_of_for_test($1)", text))
    assert in_sql == build_uuid_of(text), text


# ---------------------------------------------------------------- migration 0005 on data stored before


@pytest.fixture(params=["sqlite", "postgresql"])
def old_database(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """An empty database at schema version 4, the last one before the rule."""
    if request.param == "postgresql":
        name = f"bs_refs_{uuid.uuid4().hex[:8]}"
        pg_admin(f'CREATE DATABASE "{name}"')
        request.addfinalizer(lambda: pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        url = _pg_url(name)
        asyncio.run(PostgresMigrator.migrate(url, upto=4))
    else:
        url = f"sqlite:///{tmp_path / 'old.db'}"
        SqliteMigrator.migrate(tmp_path / "old.db", upto=4)
    return Settings(database_url=url, data_dir=tmp_path)


def test_migration_0005_records_build_ids_that_read_as_uuids_and_changes_nothing(
    old_database: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    assert expected_version("sqlite") >= 5

    async def before() -> dict[str, str]:
        store = create_store(old_database)
        await store.open()
        try:
            victim_id = await insert_legacy_build(store, "victim-1")  # raw rows: the schema of version 4
            return {
                "victim": victim_id,
                "twin": await insert_legacy_build(store, victim_id.upper()),
                "orphan": await insert_legacy_build(store, f"urn:uuid:{uuid.uuid4()}"),
                "lookalike": await insert_legacy_build(store, "0123456789abcdef0123456789abcdeg"),
            }
        finally:
            await store.close()

    # Version 4 has no build_ref_conflicts table: the rows are written as the old code could.
    ids = asyncio.run(before())
    from buildstate.store import migrate

    with caplog.at_level("WARNING", logger="buildstate.store"):
        assert migrate(old_database)[0] == "0005_build_refs"
    assert "2 build(s) have a build_id that reads as a UUID" in caplog.text

    async def after() -> tuple[list[Any], Any]:
        store = create_store(old_database)
        await store.open()
        try:
            [rows] = await store.executor.run_batch(
                [("SELECT build_uuid, build_id, spells_uuid, named_build_uuid FROM build_ref_conflicts "
                  "ORDER BY build_id", [])],
                write=False,
            )  # fmt: skip
            return rows, await verify(store)
        finally:
            await store.close()

    rows, report = asyncio.run(after())
    recorded = {str(r["build_uuid"]): (r["named_build_uuid"] and str(r["named_build_uuid"])) for r in rows}
    assert recorded == {ids["twin"]: ids["victim"], ids["orphan"]: None}
    assert not report.ok
    assert {f.subject for f in report.conflicts} == {f"build {ids['twin']}", f"build {ids['orphan']}"}
