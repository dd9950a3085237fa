"""Numbered SQL migrations, one folder per store: ``migrations/{sqlite,postgres}/NNNN_name.sql``.

They run once, before gunicorn forks its workers (``buildstate serve``) or explicitly
(``buildstate migrate``).
Concurrent starts are safe: PostgreSQL serialises migrators with a session advisory lock, SQLite with an
immediate transaction around the whole run. Workers only compare the applied version with the expected one
and refuse to start on a mismatch.

A migration that finds data it must not guess about records it instead (``0005_build_refs``: builds
whose ``build_id`` reads as a UUID): every run of the migrator then warns while such rows remain, and
``buildstate verify`` lists them.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from buildstate.domain import build_uuid_of
from buildstate.files import private_file
from buildstate.store.types import SchemaStatus

MIGRATE_LOCK = 0x6D69677261  # "migra"
log = logging.getLogger("buildstate.store")
CONFLICTS_TABLE = "build_ref_conflicts"


def _warn_conflicts(count: int) -> None:
    if count:
        log.warning(
            "%d build(s) have a build_id that reads as a UUID (recorded by migration 0005 in %s): such a "
            "build_id now names the build with that id, or none; run `buildstate verify` for the list",
            count,
            CONFLICTS_TABLE,
        )


def _uuid_text(ref: object) -> str | None:
    """``domain.build_uuid_of`` for SQLite's SQL (``buildstate_uuid_of``), as the text ids are kept in."""
    if not isinstance(ref, str):
        return None
    build_uuid = build_uuid_of(ref)
    return None if build_uuid is None else str(build_uuid)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load(dialect: str) -> list[Migration]:
    folder = resources.files("buildstate.store.migrations") / dialect
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            number, _, rest = entry.name.partition("_")
            found.append(Migration(int(number), rest.removesuffix(".sql"), entry.read_text()))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"{dialect} migrations are not numbered 1..N: {[m.version for m in found]}")
    return found


def expected_version(dialect: str) -> int:
    return len(load(dialect))


def _status(current: int | None, dialect: str) -> SchemaStatus:
    migrations = load(dialect)
    pending = [f"{m.version:04d}_{m.name}" for m in migrations if m.version > (current or 0)]
    return SchemaStatus(current=current, expected=len(migrations), pending=pending)


class PostgresMigrator:
    @staticmethod
    async def status_on(conn: Any) -> SchemaStatus:
        exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
        current = await conn.fetchval("SELECT max(version) FROM schema_migrations") if exists else None
        return _status(current, "postgres")

    @staticmethod
    async def migrate(dsn: str, upto: int | None = None) -> list[str]:
        """Apply pending migrations (up to version ``upto``, for tests of a migration's data handling)."""
        import asyncpg  # noqa: PLC0415 - the SQLite path must not need the driver

        conn = await asyncpg.connect(dsn)
        applied: list[str] = []
        try:
            await conn.execute("SELECT pg_advisory_lock($1)", MIGRATE_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, "
                "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for migration in load("postgres")[:upto]:
                if migration.version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        migration.version,
                        migration.name,
                    )
                applied.append(f"{migration.version:04d}_{migration.name}")
            if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", CONFLICTS_TABLE):
                _warn_conflicts(await conn.fetchval(f"SELECT count(*) FROM {CONFLICTS_TABLE}"))
        finally:
            await conn.close()  # also releases the session advisory lock
        return applied


class SqliteMigrator:
    @staticmethod
    def status_on(conn: sqlite3.Connection) -> SchemaStatus:
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        ).fetchone()
        current = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()[0] if exists else None
        return _status(current, "sqlite")

    @staticmethod
    def migrate(path: Path, upto: int | None = None) -> list[str]:
        """Apply pending migrations (up to version ``upto``, for tests of a migration's data handling)."""
        # Made 0600 before SQLite opens it: SQLite gives -wal and -shm the database file's permissions.
        private_file(path)
        conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        conn.create_function("buildstate_uuid_of", 1, _uuid_text, deterministic=True)
        applied: list[str] = []
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                    "name TEXT NOT NULL, applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
                )
                done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
                for migration in load("sqlite")[:upto]:
                    if migration.version in done:
                        continue
                    # executescript would COMMIT first; run statement by statement inside our transaction.
                    for statement in _split(migration.sql):
                        conn.execute(statement)
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
                        (migration.version, migration.name),
                    )
                    applied.append(f"{migration.version:04d}_{migration.name}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            exists = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (CONFLICTS_TABLE,)
            ).fetchone()
            if exists:
                _warn_conflicts(conn.execute(f"SELECT count(*) FROM {CONFLICTS_TABLE}").fetchone()[0])
        finally:
            conn.close()
        for companion in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if companion.exists():  # made by an older version with the umask's permissions: tighten
                private_file(companion)
        return applied


def _split(script: str) -> list[str]:
    """Split a migration into statements (our migrations have no semicolons inside literals)."""
    statements, current = [], []
    for line in script.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("--"):
            continue
        current.append(line)
        if sqlite3.complete_statement("\n".join(current)):
            statements.append("\n".join(current))
            current = []
    if current:
        raise RuntimeError("migration ends in an incomplete statement")
    return statements
