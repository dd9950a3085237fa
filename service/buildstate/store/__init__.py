"""Storage: ``Store`` (the interface) and ``create_store``/``migrate`` (pick SQLite or PostgreSQL by URL).

- ``base``, ``types``      the interface, and the values that cross it
- ``executor``             how repositories are written: transactions as generators of ``Statement``s
- ``sqlite_executor``, ``postgres_executor``   connections, threads, locks, the pool, LISTEN, group commit
- ``key_changes``          the key epoch that lets workers keep API keys in memory (NOTIFY, or a file)
- ``builds``, ``access``, ``audit``            repositories written once; their SQL in ``queries/<area>.sql``
- ``sqlstore``             what both stores share; ``sqlite``, ``postgres``: the event append, per database
- ``plan``, ``sql``        a write's event from the rules; the query builders of the filtered reads
- ``migrate``, ``migrations/``, ``verify``   schema versions, their SQL, and the consistency check
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from buildstate.config import Settings, SettingsError
from buildstate.files import unwritable
from buildstate.redaction import redact
from buildstate.store.base import Store
from buildstate.store.migrate import PostgresMigrator, SqliteMigrator

__all__ = ["Store", "create_store", "describe_url", "migrate", "sqlite_path"]


def sqlite_path(url: str) -> Path:
    """``sqlite:///relative/path`` or ``sqlite:////absolute/path``, as SQLAlchemy spells them."""
    return Path(url.removeprefix("sqlite:///"))


def _is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def create_store(settings: Settings) -> Store:
    url = settings.effective_database_url
    if _is_postgres(url):
        from buildstate.store.postgres import PostgresStore  # noqa: PLC0415 - optional driver

        return PostgresStore(
            url,
            min_size=settings.pg_pool_min,
            max_size=settings.pg_pool_max,
            timeout=settings.db_timeout_seconds,
        )
    if url.startswith("sqlite:///"):
        from buildstate.store.sqlite import SQLiteStore  # noqa: PLC0415

        return SQLiteStore(sqlite_path(url), timeout=settings.db_timeout_seconds)
    raise _unknown_scheme(url)


def _unknown_scheme(url: str) -> SettingsError:
    return SettingsError(
        f"BUILDSTATE_DATABASE_URL must start with sqlite:/// or postgresql://, not {describe_url(url)!r}"
    )


def migrate(settings: Settings) -> list[str]:
    """Apply pending migrations; safe to run from several processes at once."""
    url = settings.effective_database_url
    if _is_postgres(url):
        return asyncio.run(PostgresMigrator.migrate(url))
    if not url.startswith("sqlite:///"):
        raise _unknown_scheme(url)  # never a SQLite file named like the URL (its password in the name)
    path = sqlite_path(url)
    try:
        return SqliteMigrator.migrate(path)
    except (OSError, sqlite3.OperationalError) as exc:
        hint = unwritable(path.parent.absolute(), exc)
        if hint is None:
            raise
        raise hint from exc


def describe_url(url: str) -> str:
    """The database URL without its passwords (``user:***@``, ``?sslpassword=***``), for logs and stderr."""
    return redact(url)


def describe_store(settings: Settings) -> str:
    """The store ``settings`` name, without a password, and which setting chose it (for the CLI to say)."""
    if settings.database_url:
        return f"{describe_url(settings.database_url)} (BUILDSTATE_DATABASE_URL)"
    if "data_dir" in settings.model_fields_set:
        return f"{settings.effective_database_url} (BUILDSTATE_DATA_DIR)"
    return f"{settings.effective_database_url} (the default data dir; BUILDSTATE_DATA_DIR changes it)"
