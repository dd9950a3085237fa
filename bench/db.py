"""Throwaway databases for one bench run: a PostgreSQL database of its own, or a SQLite file."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from buildstate.config import Settings
from buildstate.store import migrate

PG_ADMIN = os.environ.get("BUILDSTATE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def use_server(admin_url: str) -> None:
    """Point every database of this run at another PostgreSQL server (``bench.pg``'s private one)."""
    global PG_ADMIN  # noqa: PLW0603 - one server per run
    PG_ADMIN = admin_url


@dataclass(frozen=True)
class Database:
    kind: str  # "postgresql" or "sqlite"
    url: str
    name: str  # the PostgreSQL database, or the SQLite file

    @property
    def is_pg(self) -> bool:
        return self.kind == "postgresql"

    @property
    def sqlite_path(self) -> Path:
        return Path(self.url.removeprefix("sqlite:///"))


async def _admin(statement: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN, timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def pg_available() -> bool:
    try:
        asyncio.run(_admin("SELECT 1"))
    except (OSError, asyncpg.PostgresError):
        return False
    return True


def create(kind: str, workdir: Path, *, migrated: bool = True) -> Database:
    """A new database of ``kind``, migrated by this checkout (``migrated=False``: empty, for another
    checkout's ``buildstate migrate``)."""
    if kind == "postgresql":
        name = f"bs_bench_{secrets.token_hex(4)}"
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
        base, _, _ = PG_ADMIN.rpartition("/")
        db = Database(kind, f"{base}/{name}", name)
    else:
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / f"bench-{secrets.token_hex(4)}.db"
        db = Database(kind, f"sqlite:///{path}", str(path))
    if migrated:
        migrate(Settings(database_url=db.url))
    return db


def drop(db: Database) -> None:
    if db.is_pg:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)'))
    else:
        for suffix in ("", "-wal", "-shm"):
            Path(db.name + suffix).unlink(missing_ok=True)


@contextlib.contextmanager
def temporary(kind: str, workdir: Path) -> Iterator[Database]:
    db = create(kind, workdir)
    try:
        yield db
    finally:
        drop(db)
