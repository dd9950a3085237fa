"""The PostgreSQL executor: the asyncpg pool, connections, outage mapping and LISTEN, for every store.

A database that is down, restarting or refusing connections is a 503 (``ServiceUnavailable``) to the caller,
never a 500, and a connection that failed mid-exchange is dropped rather than handed to the next request
(the pool skips its reset query on release: connections hold no session state).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import asyncpg

from buildstate import __version__
from buildstate.errors import Problem, ServiceUnavailable
from buildstate.store.executor import BatchRunner, Json, Statement, Transaction
from buildstate.store.sql import Dialect, PostgresDialect
from buildstate.store.types import PoolStats

T = TypeVar("T")

# What a database that is down, restarting or shutting down looks like to asyncpg: 503, never 500.
_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08, and a connection closed under us
    asyncpg.exceptions.OperatorInterventionError,  # class 57: admin or crash shutdown, starting up
    asyncpg.InterfaceError,
    # A query on a connection the server dropped while it was idle in the pool ("cannot switch to
    # state ...; another operation is in progress"), seen when PostgreSQL restarts under load.
    asyncpg.exceptions.InternalClientError,
)


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Connections hold no session state (advisory locks are transaction-level), so skip the reset."""


_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


@functools.lru_cache(maxsize=512)
def _numbered(sql: str) -> tuple[str, tuple[str, ...]]:
    """``:name`` parameters as asyncpg's ``$1``, ``$2``... (each name one number), and the names in order.
    ``::jsonb`` casts are left alone."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match[1]
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return _NAMED.sub(number, sql), tuple(names)


def _arguments(statement: Statement) -> tuple[str, list[Any]]:
    params = statement.params
    if not isinstance(params, Mapping):
        return statement.sql, list(params)
    query, names = _numbered(statement.sql)
    return query, [_param(params[name]) for name in names]


def _param(value: Any) -> Any:
    return value.value if isinstance(value, Json) else value


async def execute(conn: asyncpg.Connection, statement: Statement) -> list[Any]:
    """One statement on ``conn``: its rows."""
    query, args = _arguments(statement)
    rows: list[Any] = await conn.fetch(query, *args)
    return rows


async def drive_async(work: Transaction[T], conn: asyncpg.Connection) -> T:
    """Run ``work`` to its end on ``conn``."""
    try:
        statement = next(work)
        while True:
            statement = work.send(await execute(conn, statement))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


class PostgresExecutor(BatchRunner):
    """One database: a pool sized per worker, and a connection of its own per LISTEN."""

    dialect: Dialect = PostgresDialect()

    def __init__(self, dsn: str, *, min_size: int, max_size: int, timeout: float) -> None:
        self._dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self._timeout = timeout
        self._pool: asyncpg.Pool | None = None
        self._listening: asyncio.Future[tuple[asyncpg.Connection, asyncio.Event]] | None = None
        self._keeping: asyncio.Task[None] | None = None
        self._talking = asyncio.Lock()

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(
            self._dsn,
            min_size=self._min_size,
            max_size=self._max_size,
            init=_init_connection,
            reset=_keep_session,
            timeout=self._timeout,
            command_timeout=self._timeout * 6,
            server_settings={"application_name": f"buildstate/{__version__}"},
        )

    async def close(self) -> None:
        await self._stop_listening()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _stop_listening(self) -> None:
        """Drop the shared LISTEN connection; one still being made is let finish, then dropped (asyncpg
        would leave a connection cancelled mid-connect open)."""
        listening, self._listening = self._listening, None
        if listening is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._timeout):
                    conn, _lost = await asyncio.shield(listening)
                conn.terminate()
        if self._keeping is not None:
            self._keeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeping
            self._keeping = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("store is not open")
        return self._pool

    async def run(self, work: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Any:
        acquired = False
        try:
            async with self.pool.acquire(timeout=self._timeout) as conn:
                acquired = True
                try:
                    return await work(conn)
                except _UNAVAILABLE:
                    # The pool skips its reset query on release (``_keep_session``), so it would not
                    # notice a connection left mid-exchange: never hand one on to the next request.
                    conn.terminate()
                    raise
        except _UNAVAILABLE as exc:
            raise ServiceUnavailable(
                "the database is unreachable; retry shortly", slug="database-unavailable"
            ) from exc
        except asyncpg.PostgresError as exc:
            if acquired:
                raise
            # The server refused a new connection: too many clients, the database not accepting any,
            # gone or renamed. Not this request's fault: 503 like any other outage, never a 500.
            raise ServiceUnavailable(
                "the database refuses connections; retry shortly", slug="database-unavailable"
            ) from exc

    async def read(self, work: Transaction[T], *, snapshot: bool = False) -> T:
        async def run(conn: asyncpg.Connection) -> T:
            if not snapshot:
                return await drive_async(work, conn)
            async with conn.transaction(readonly=True, isolation="repeatable_read"):
                return await drive_async(work, conn)

        result: T = await self.run(run)
        return result

    async def write(self, work: Transaction[T]) -> T:
        async def run(conn: asyncpg.Connection) -> T:
            async with conn.transaction():
                return await drive_async(work, conn)

        result: T = await self.run(run)
        return result

    def pool_stats(self) -> PoolStats | None:
        """The pool's connections in use, idle and at most (None when it is not open)."""
        if self._pool is None:
            return None
        size, idle = self._pool.get_size(), self._pool.get_idle_size()
        return PoolStats(in_use=size - idle, idle=idle, maximum=self._pool.get_max_size())

    async def listen(
        self, channel: str, heard: Callable[[str], None], *, ready: Callable[[], None] | None = None
    ) -> None:
        """Call ``heard(payload)`` for each NOTIFY on ``channel`` until the connection is lost (and
        ``ready()`` once the LISTEN is in place).

        Every channel of this executor shares one connection, outside the pool (a LISTEN ties up its
        connection): the event feed and the key cache cost one connection per worker, not two.
        """
        conn, lost = await self._listener()

        def callback(_conn: object, _pid: int, _channel: str, payload: str) -> None:
            heard(payload)

        try:
            async with self._talking:  # one query at a time on the shared connection
                await conn.add_listener(channel, callback)
            if ready is not None:
                ready()
            await lost.wait()
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise ServiceUnavailable("event notifications lost: database unreachable") from exc
        finally:
            if not conn.is_closed():
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._unlisten(conn, channel, callback))

    async def _unlisten(self, conn: asyncpg.Connection, channel: str, callback: Any) -> None:
        async with self._talking:
            await conn.remove_listener(channel, callback)

    async def _listener(self) -> tuple[asyncpg.Connection, asyncio.Event]:
        """The shared LISTEN connection and the event set when it is lost: connected by the first caller
        (shielded: a caller that goes away does not leave a half-made connection behind)."""
        if self._listening is None or _gone(self._listening):
            self._listening = asyncio.ensure_future(self._connect_listener())
        try:
            return await asyncio.shield(self._listening)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise ServiceUnavailable("cannot listen for events: database unreachable") from exc

    async def _connect_listener(self) -> tuple[asyncpg.Connection, asyncio.Event]:
        conn = await asyncpg.connect(self._dsn, timeout=self._timeout)
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        self._keeping = asyncio.create_task(self._keep_listening(conn, lost))
        return conn, lost

    async def _keep_listening(self, conn: asyncpg.Connection, lost: asyncio.Event) -> None:
        """A dead server goes unnoticed on an idle connection: ask it something now and then."""
        try:
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(10):
                        await lost.wait()
                if not lost.is_set():
                    async with self._talking:
                        await conn.execute("SELECT 1", timeout=self._timeout)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            pass
        finally:
            lost.set()
            # terminate(), not close(): it never waits. A close() awaited while the worker shuts down can be
            # cancelled itself (or stall behind a cancelled query) and leave the socket open.
            conn.terminate()


def _gone(listening: asyncio.Future[tuple[asyncpg.Connection, asyncio.Event]]) -> bool:
    """Whether a shared LISTEN connection failed to connect or has been lost since."""
    if not listening.done():
        return False
    if listening.cancelled() or listening.exception() is not None:
        return True
    return listening.result()[1].is_set()


# Statements sent together at most (``StatementGroup``): bounds how long the last of a group waits.
GROUP_MAX = 64


def _fresh(exc: Exception) -> Exception:
    """A fresh copy of ``exc`` for each member of a group (handlers add their own headers to it)."""
    if isinstance(exc, Problem):
        return type(exc)(exc.detail, slug=exc.type_slug, extra=dict(exc.extra), headers=dict(exc.headers))
    return exc


class StatementGroup:
    """Concurrent runs of one statement in this process, sent to PostgreSQL together: group commit.

    While a group is on its way, the runs that arrive wait; the next group takes all of them (at most
    ``GROUP_MAX``) and sends them with ``fetchmany``: one round trip, one implicit transaction (the
    extended protocol's statements up to one Sync), one COMMIT and one fsync for all. A run is answered
    only after that COMMIT. The statement gets each run's position in its group as its last parameter
    and must return it as ``slot``; a run it returns no row for gets None. If one statement of a group
    fails, the group is rolled back and each of its runs sent again alone, so only that run fails; a
    lost connection fails the whole group (503)."""

    def __init__(self, executor: PostgresExecutor, query: str, *, most: int = GROUP_MAX) -> None:
        self._executor = executor
        self._query = query
        self._most = most
        self._waiting: list[tuple[Sequence[Any], asyncio.Future[asyncpg.Record | None]]] = []
        self._sending: asyncio.Task[None] | None = None

    async def fetchrow(self, *args: Any) -> asyncpg.Record | None:
        future: asyncio.Future[asyncpg.Record | None] = asyncio.get_running_loop().create_future()
        self._waiting.append((args, future))
        if self._sending is None:
            self._sending = asyncio.create_task(self._send())
        return await future

    async def _send(self) -> None:
        group: list[tuple[Sequence[Any], asyncio.Future[asyncpg.Record | None]]] = []
        try:
            while self._waiting:
                group, self._waiting = self._waiting[: self._most], self._waiting[self._most :]
                await self._run(group)
        except asyncio.CancelledError:  # the worker stopping: nobody is left waiting for an answer
            for _args, future in group + self._waiting:
                _settle(future, error=ServiceUnavailable("the service is stopping; retry shortly"))
            self._waiting = []
            raise
        finally:
            self._sending = None

    async def _run(self, group: list[tuple[Sequence[Any], asyncio.Future[asyncpg.Record | None]]]) -> None:
        live = [(args, future) for args, future in group if not future.done()]
        if not live:
            return
        batch = [(*args, slot) for slot, (args, _future) in enumerate(live)]

        async def send(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            rows: list[asyncpg.Record] = await conn.fetchmany(self._query, batch)
            return rows

        try:
            rows = await self._executor.run(send)
        except asyncpg.PostgresError as refused:
            if len(live) == 1:
                _settle(live[0][1], error=refused)
                return
            for member in live:  # rolled back: each alone, so that only the one refused fails
                await self._run([member])
            return
        except Exception as exc:  # every member gets it, as its own request would have
            for _args, future in live:
                _settle(future, error=_fresh(exc))
            return
        by_slot = {row["slot"]: row for row in rows}
        for slot, (_args, future) in enumerate(live):
            _settle(future, row=by_slot.get(slot))


def _settle(
    future: asyncio.Future[asyncpg.Record | None],
    *,
    row: asyncpg.Record | None = None,
    error: BaseException | None = None,
) -> None:
    """Hand a run its row or its error (unless its request is gone)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(row)
