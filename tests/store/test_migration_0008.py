"""Migration 0008 on a SQLite store that holds data: the events table is rebuilt (its CHECK widened), and
the rebuild must keep every row, every index, the references of failures and webhook deliveries, and the
AUTOINCREMENT high-water mark (a seq is never handed out twice, even one whose event is gone)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from buildstate.config import Settings
from buildstate.models import ArtifactIn, ArtifactsRecord
from buildstate.store import create_store, migrate
from buildstate.store.migrate import SqliteMigrator
from buildstate.store.types import WriteContext

BUILD = "0b5e6a1c-58c4-4f8e-9a35-d1f2a2d3c4b5"
STAMP = "2024-01-01T00:00:00.000000Z"
HIGH_WATER = 40  # events 4..40 were handed out and are gone: none of those seqs may come back


def _fill_version_7(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for table in ("platforms", "os_versions", "image_types"):
            conn.execute(
                f"INSERT INTO {table} (id, name) VALUES (1, ?)", ({"platforms": "aws"}.get(table, "x"),)
            )
        conn.execute(
            "INSERT INTO builds (id, build_id, platform_id, os_version_id, image_type_id, state_code, "
            "status, attempt, labels, created_at, updated_at, last_event_seq) "
            "VALUES (?, 'old-1', 1, 1, 1, 10, 'running', 1, '{}', ?, ?, 3)",
            (BUILD, STAMP, STAMP),
        )
        for seq, kind in ((1, "created"), (2, "failure"), (3, "reset")):
            conn.execute(
                "INSERT INTO events (seq, build_uuid, type, attempt, state_code, status, actor, "
                "platform_id, os_version_id, image_type_id, recorded_at) "
                "VALUES (?, ?, ?, 1, 10, 'running', 'old', 1, 1, 1, ?)",
                (seq, BUILD, kind, STAMP),
            )
        conn.execute(
            "INSERT INTO failures (seq, build_uuid, error_message, recorded_at) VALUES (2, ?, 'packer', ?)",
            (BUILD, STAMP),
        )
        conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'events'", (HIGH_WATER,))
    finally:
        conn.close()


def _schema(path: Path) -> tuple[list[tuple[str, str]], list[object], list[object], int]:
    conn = sqlite3.connect(path)
    try:
        indexes = conn.execute(
            "SELECT name, sql FROM sqlite_master "
            "WHERE type = 'index' AND tbl_name = 'events' AND sql IS NOT NULL ORDER BY name"
        ).fetchall()
        fk = conn.execute("PRAGMA foreign_key_check").fetchall()
        integrity = conn.execute("PRAGMA integrity_check").fetchall()
        [high] = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        return indexes, fk, integrity, high
    finally:
        conn.close()


def test_migration_0008_keeps_the_events_rows_indexes_references_and_high_water_mark(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    SqliteMigrator.migrate(path, upto=7)
    _fill_version_7(path)
    before_indexes, _, _, _ = _schema(path)
    settings = Settings(database_url=f"sqlite:///{path}", data_dir=tmp_path)
    assert "0008_artifacts" in migrate(settings)

    indexes, fk, integrity, high = _schema(path)
    assert indexes == before_indexes  # the same names, the same definitions
    assert fk == [] and integrity == [("ok",)]
    assert high == HIGH_WATER

    async def after() -> tuple[int, list[int]]:
        store = create_store(settings)
        await store.open()
        try:
            record = ArtifactsRecord(
                artifacts=[ArtifactIn(region="eu-west-1", kind="ami", external_id="ami-1")]
            )
            written = await store.artifacts.record("old-1", record, WriteContext(actor="test"))
            history = await store.history("old-1")
            return written.status_code, [event.seq for event in history.events]
        finally:
            await store.close()

    status, seqs = asyncio.run(after())
    assert status == 200
    assert seqs == [1, 2, 3, HIGH_WATER + 1]  # the old events kept, the new one past the high-water mark
    assert _schema(path)[1] == []  # artifacts.event_seq and failures.seq point at rows that exist
