"""The bench's history loads into an older checkout's schema too (``python -m bench reference --before``).

An older checkout migrates its own database (its own ``buildstate migrate``), and the bench then loads the
same history into it: the loader writes only the columns that schema has. At version 7 (before issue 16's
migration 0008) events have no ``detail`` and there is no artifacts table; a history without artifacts or
channels loads whole, and one with them is refused instead of half written.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from bench.db import Database
from tests.conftest import _pg_url, pg_admin

from bench import dataset
from buildstate.store.migrate import PostgresMigrator, SqliteMigrator

BUILDS = 200
BEFORE_ARTIFACTS = 7  # the last migration before 0008_artifacts


@pytest.fixture(params=["sqlite", "postgresql"])
def old_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "postgresql":
        name = f"bs_old_{uuid.uuid4().hex[:8]}"
        pg_admin(f'CREATE DATABASE "{name}"')
        try:
            url = _pg_url(name)
            asyncio.run(PostgresMigrator.migrate(url, upto=BEFORE_ARTIFACTS))
            yield Database("postgresql", url, name)
        finally:
            pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    else:
        path = tmp_path / "old.db"
        SqliteMigrator.migrate(path, upto=BEFORE_ARTIFACTS)
        yield Database("sqlite", f"sqlite:///{path}", str(path))


async def _pg_counts(url: str) -> tuple[int, int, int]:
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM builds), (SELECT count(*) FROM events), "
            "(SELECT COALESCE(sum(n), 0) FROM status_counts)"
        )
        return row[0], row[1], row[2]
    finally:
        await conn.close()


def _counts(db: Database) -> tuple[int, int, int]:
    if db.is_pg:
        return asyncio.run(_pg_counts(db.url))
    conn = sqlite3.connect(db.sqlite_path)
    try:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM builds), (SELECT count(*) FROM events), "
            "(SELECT COALESCE(sum(n), 0) FROM status_counts)"
        ).fetchone()
        return row[0], row[1], row[2]
    finally:
        conn.close()


def test_history_and_fresh_builds_load_into_a_schema_without_event_detail(old_database: Database) -> None:
    history = dataset.load(old_database, BUILDS, keep_ids=True)
    fresh = dataset.load(old_database, 10, prefix="fresh", fresh=True, keep_ids=True)
    events = sum(len(dataset.steps_of(i, fresh=False, artifacts=0)) for i in range(BUILDS)) + 10
    assert (history.builds, fresh.builds) == (BUILDS, 10)
    assert _counts(old_database) == (BUILDS + 10, events, BUILDS + 10)


def test_artifacts_into_a_schema_without_them_are_refused_before_anything_is_written(
    old_database: Database,
) -> None:
    with pytest.raises(ValueError, match=r"events\.detail"):
        dataset.load(old_database, BUILDS, artifacts=3)
    assert _counts(old_database) == (0, 0, 0)
