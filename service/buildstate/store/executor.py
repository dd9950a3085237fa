"""What repositories are written over: an ``Executor`` runs a transaction, written once, on either database.

A transaction is a generator that yields ``Statement``s and is sent each one's rows back, and returns its
result::

    def revoke(prefix: str, actor: str, now: datetime) -> Transaction[ApiKeyRecord | None]:
        yield ACCESS.statement("revoke_key", prefix=prefix, actor=actor, now=now)
        rows = yield ACCESS.statement("key_by_prefix", prefix=prefix)
        return decode_key(dialect, rows[0]) if rows else None

The executor of each dialect (``sqlite_executor``, ``postgres_executor``) decides how it runs: SQLite drives
the whole generator on its writer thread (or a reader thread) in one hop, inside ``BEGIN IMMEDIATE`` for a
write; PostgreSQL drives it on one pooled connection inside one transaction. So the repository code, its
rules and its SQL exist once, and what differs between the databases (threads, locks, the pool, outages,
LISTEN) exists once per database, here.

Statements take named parameters (``:name``); ``Json(value)`` marks a JSON value. Times and UUIDs are
passed as Python values: each executor converts them the way its driver wants them. SQL built with
``sql.Params`` (dynamic filters) is a ``Statement`` too, with its values in order.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from buildstate.store.sql import Dialect

T = TypeVar("T")
Row = Any  # sqlite3.Row or asyncpg.Record: both are read as row["column"] and row[0]
# A transaction, written once: yields statements, is sent their rows, returns its result.
Transaction = Generator["Statement", list[Row], T]
# A statement of ``run_batch``: SQL and its values (in order, from ``sql.Params``, or by name).
Batched = tuple[str, Mapping[str, Any] | Sequence[Any]]


@dataclass(frozen=True, slots=True)
class Json:
    """A JSON parameter: text for SQLite, a Python value for asyncpg's jsonb codec."""

    value: Any


@dataclass(frozen=True, slots=True)
class Statement:
    """SQL and its parameters: named (``:name``) from a mapping, or positional from ``sql.Params``."""

    sql: str
    params: Mapping[str, Any] | Sequence[Any] = ()


def one(statement: Statement) -> Transaction[list[Row]]:
    """A transaction of one statement: its rows."""
    rows = yield statement
    return rows


class Executor(Protocol):
    """Connections and transactions of one database (``SqliteExecutor``, ``PostgresExecutor``)."""

    dialect: Dialect

    async def open(self) -> None: ...
    async def close(self) -> None: ...

    async def read(self, work: Transaction[T], *, snapshot: bool = False) -> T:
        """Run a reading transaction (``snapshot``: its statements see one state of the database)."""
        ...

    async def write(self, work: Transaction[T]) -> T:
        """Run a writing transaction: all of it commits, or none of it."""
        ...

    async def run_batch(self, statements: Sequence[Batched], *, write: bool = True) -> list[list[Row]]:
        """Statements built with ``sql.Params(executor.dialect)``, in one transaction; the rows of each."""
        ...


class BatchRunner:
    """``run_batch`` for an executor, from its ``read`` and ``write``."""

    async def read(self, work: Transaction[T], *, snapshot: bool = False) -> T:
        raise NotImplementedError

    async def write(self, work: Transaction[T]) -> T:
        raise NotImplementedError

    async def run_batch(self, statements: Sequence[Batched], *, write: bool = True) -> list[list[Row]]:
        if write:
            return await self.write(batch(statements))
        return await self.read(batch(statements), snapshot=True)


def batch(statements: Sequence[Batched]) -> Transaction[list[list[Row]]]:
    """``run_batch``'s statements as a transaction."""
    results = []
    for query, values in statements:
        results.append((yield Statement(query, values)))
    return results


def drive(work: Transaction[T], execute: Callable[[Statement], list[Row]]) -> T:
    """Run ``work`` to its end with a synchronous ``execute`` (SQLite's threads)."""
    try:
        statement = next(work)
        while True:
            statement = work.send(execute(statement))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
