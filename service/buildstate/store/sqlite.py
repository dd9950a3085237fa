"""SQLite store: the zero-configuration default, safe with several gunicorn workers on one file.

- WAL journal, so readers never block the writer nor each other.
- Every write is one ``BEGIN IMMEDIATE`` transaction: it takes the database's write lock up front, so a
  transaction never fails half-way with "database is locked" when it tries to upgrade from read to write.
  Other processes wait for the lock up to the busy timeout.
- With one writer at a time, ``AUTOINCREMENT`` hands out event numbers in commit order: the feed cannot skip.
- Writers of every process queue on an exclusive ``flock`` of ``<database>.write-lock`` before BEGIN
  IMMEDIATE. SQLite's own wait for its write lock sleeps in growing steps (1, 2, 5, 10 ... 100 ms) and
  re-tries, so two busy workers handed the lock back and forth with sleeps in between: the write rate with
  two workers was a fraction of one writer's, with a p99 near a second. The kernel wakes a ``flock``
  waiter as soon as the lock is free. A holder keeps it for one transaction, whose statements wait for
  SQLite at most the busy timeout (then 503); a file that cannot be opened for the lock just leaves
  SQLite's own wait in charge.
- Group commit: the writes of one process that arrive while its writer thread is busy are committed
  together, one ``BEGIN IMMEDIATE`` ... ``COMMIT`` (one fsync, one turn of the lock) for up to
  ``GROUP_COMMIT_MAX`` of them, each inside its own savepoint so a refused write (404, 409) rolls back
  alone. A request is answered only after the COMMIT that holds its write. One transaction per write
  reached 22% of a bare sqlite3 writer's commit rate through the service; groups, 66%
  (docs/performance.md).
- The stdlib driver is synchronous. Each store call runs as *one* function on a thread (writes on a single
  writer thread per process, reads on a small pool), so a transaction costs one hop off the event loop
  rather than one per statement.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from buildstate.errors import NotFound, Problem, ServiceUnavailable
from buildstate.models import (
    Build,
    BuildCreate,
    BuildPage,
    Event,
    EventPage,
    FailureReport,
    History,
    ResetRequest,
    StateChange,
    Summary,
)
from buildstate.store import plan, sql
from buildstate.store.access import AccessStore
from buildstate.store.base import (
    AuditEntry,
    BuildCursor,
    BuildFilter,
    EventFilter,
    Idempotency,
    SchemaStatus,
    WriteContext,
    WriteResult,
    replay,
)
from buildstate.store.migrate import SqliteMigrator
from buildstate.store.sqlite_access import SqliteAccess

T = TypeVar("T")
log = logging.getLogger("buildstate.store")
_DIALECT = sql.SqliteDialect()


def _now() -> datetime:
    return datetime.now(UTC)


def _unavailable(exc: sqlite3.OperationalError) -> Exception:
    """What a failed statement means to the caller: 503 when the database is busy or cannot be written."""
    message = str(exc)
    if "locked" in message or "busy" in message:
        return ServiceUnavailable(
            "the database stayed busy past the timeout; retry shortly",
            slug="database-busy",
            headers={"Retry-After": "1"},
        )
    if "readonly" in message or "disk" in message or "unable to open" in message:
        return ServiceUnavailable(f"the database cannot be written: {message}", slug="database-unavailable")
    return exc


# Writes committed together at most: bounds how long the last of a group waits for the first ones.
GROUP_COMMIT_MAX = 64


@dataclass(slots=True)
class _Queued:
    """One write waiting for the next group commit: its statements, and where its outcome goes."""

    body: Callable[[sqlite3.Connection], WriteResult]
    future: asyncio.Future[WriteResult]
    outcome: WriteResult | None = None
    error: BaseException | None = None


def _group_failed(exc: Exception) -> Exception:
    """A fresh exception for each write of a group that could not commit (503 when the database is busy
    or cannot be written; anything else as it is, a bug to see in the log)."""
    if isinstance(exc, sqlite3.OperationalError):
        return _unavailable(exc)
    if isinstance(exc, Problem):
        return type(exc)(exc.detail, slug=exc.type_slug, extra=dict(exc.extra), headers=dict(exc.headers))
    return exc


def _settle(queued: _Queued) -> None:
    """On the event loop: hand the write's outcome to its request (unless the request is gone)."""
    if queued.future.done():
        return
    if queued.error is not None:
        queued.future.set_exception(queued.error)
    elif queued.outcome is not None:
        queued.future.set_result(queued.outcome)


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection, begin: str = "BEGIN IMMEDIATE") -> Iterator[None]:
    """``begin`` ... COMMIT, or ROLLBACK when the block raises (unless SQLite already rolled back, as it
    does after a full disk or an I/O error)."""
    conn.execute(begin)
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


@contextlib.contextmanager
def _holding(lock: int | None) -> Iterator[None]:
    """The writers' ``flock`` of all processes, held for the block (no lock file: nothing to hold). The
    kernel queues the waiters and wakes one as soon as the holder lets go. The wait is bounded by what a
    holder does with it: one transaction, whose statements wait for SQLite at most the busy timeout; a
    holder that dies releases it at once."""
    if lock is None:
        yield
        return
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


class SQLiteStore:
    kind = "sqlite"
    dialect: sql.Dialect = _DIALECT
    transaction = staticmethod(transaction)  # for SqliteAccess, which this module imports

    def __init__(
        self, path: Path, *, timeout: float = 5.0, readers: int = 4, synchronous: str = "FULL"
    ) -> None:
        self.path = path
        self._timeout = timeout
        self._synchronous = synchronous
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._writer: ThreadPoolExecutor | None = None
        self._write_lock: int | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._reader_count = readers
        # Writes waiting for the writer thread (appended on the event loop, taken on the thread), and
        # whether the thread has been handed the queue already.
        self._queue: deque[_Queued] = deque()
        self._draining = False
        self.access: AccessStore = SqliteAccess(self)

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        if not self.path.exists():
            raise ServiceUnavailable(f"SQLite database {self.path} does not exist; run buildstate migrate")
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        try:
            self._write_lock = os.open(f"{self.path}.write-lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            self._write_lock = None
        self._readers = ThreadPoolExecutor(self._reader_count, thread_name_prefix="sqlite-reader")

    async def close(self) -> None:
        for pool in (self._writer, self._readers):
            if pool is not None:
                pool.shutdown(wait=True)
        self._writer = self._readers = None
        if self._write_lock is not None:
            os.close(self._write_lock)
            self._write_lock = None
        with self._connections_lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            self._local.conn = conn
            with self._connections_lock:
                self._connections.append(conn)
        return conn

    async def _run(self, pool: ThreadPoolExecutor | None, work: Callable[[sqlite3.Connection], T]) -> T:
        if pool is None:
            raise RuntimeError("store is not open")

        lock = self._write_lock if pool is self._writer else None

        def call() -> T:
            try:
                with _holding(lock):
                    return work(self._conn())
            except sqlite3.OperationalError as exc:
                mapped = _unavailable(exc)
                if mapped is exc:
                    raise
                raise mapped from exc

        return await asyncio.get_running_loop().run_in_executor(pool, call)

    async def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await self._run(self._readers, work)

    async def schema_status(self) -> SchemaStatus:
        return await self._read(SqliteMigrator.status_on)

    # ------------------------------------------------------------------ writes

    async def _write(
        self,
        ctx: WriteContext,
        action_name: str,
        target: str,
        action: Callable[[sqlite3.Connection], WriteResult],
    ) -> WriteResult:
        """Run one write with its idempotency record and its audit row, committed with whatever other
        writes of this process are waiting at the same moment (``_commit_group``)."""
        idem = ctx.idem

        def body(conn: sqlite3.Connection) -> WriteResult:
            outcome = self._claim(conn, idem) if idem is not None else None
            if outcome is None:
                outcome = action(conn)
                if idem is not None:
                    conn.execute(
                        "UPDATE idempotency_keys SET status_code = ?, body = ? WHERE actor = ? AND key = ?",
                        (outcome.status_code, outcome.body.decode(), idem.actor, idem.key),
                    )
            kind = "replayed" if outcome.replayed else "allowed"
            self._insert_audit(conn, AuditEntry.of(ctx, action_name, target, outcome.status_code, kind))
            return outcome

        if self._writer is None:
            raise RuntimeError("store is not open")
        loop = asyncio.get_running_loop()
        queued = _Queued(body, loop.create_future())
        self._queue.append(queued)
        if not self._draining:
            self._start_draining(loop)
        try:
            return await queued.future
        except Problem as refused:
            if refused.status < 500:
                await self.record_audit(AuditEntry.of(ctx, action_name, target, refused.status, "refused"))
            raise

    def _start_draining(self, loop: asyncio.AbstractEventLoop) -> None:
        """Hand the queue to the writer thread; when it returns, start again if more writes came in."""
        self._draining = True

        def drained(done: asyncio.Future[None]) -> None:
            self._draining = False
            if not done.cancelled() and done.exception() is not None:  # the loop closing under it
                log.error("SQLite writer stopped", exc_info=done.exception())
            if self._queue and self._writer is not None:
                self._start_draining(loop)

        loop.run_in_executor(self._writer, self._drain, loop).add_done_callback(drained)

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the writer thread: commit the queued writes (at most ``GROUP_COMMIT_MAX``) as one group.

        One group per turn: the hop back to the event loop before the next group leaves the other
        processes' writers, woken when this one let go of the lock, the time to take it."""
        group = [self._queue.popleft() for _ in range(min(len(self._queue), GROUP_COMMIT_MAX))]
        self._commit_group(group)
        for queued in group:
            loop.call_soon_threadsafe(_settle, queued)

    def _commit_group(self, group: list[_Queued]) -> None:
        """One ``BEGIN IMMEDIATE`` ... ``COMMIT`` for the whole group, each write inside its own savepoint:
        a write refused half-way (404, 409, 422) is rolled back alone and the others still commit. One
        commit (one fsync) and one turn of the writers' lock then serve every write of the group, which is
        what lets concurrent requests go faster than one transaction each. A write whose outcome is set
        is acknowledged only after the COMMIT succeeded; if the COMMIT or the transaction fails, every
        write of the group gets the error and none of them is acknowledged."""
        try:
            with _holding(self._write_lock):
                conn = self._conn()
                with transaction(conn):
                    for queued in group:
                        conn.execute("SAVEPOINT write")
                        try:
                            queued.outcome = queued.body(conn)
                        except Exception as exc:
                            if not conn.in_transaction:  # SQLite rolled everything back (disk full, I/O)
                                raise
                            conn.execute("ROLLBACK TO write")
                            queued.error = (
                                _unavailable(exc) if isinstance(exc, sqlite3.OperationalError) else exc
                            )
                        conn.execute("RELEASE write")
        except Exception as exc:
            for queued in group:  # each request its own exception: handlers add their own headers to it
                queued.outcome, queued.error = None, _group_failed(exc)

    @staticmethod
    def _insert_audit(conn: sqlite3.Connection, entry: AuditEntry) -> None:
        conn.execute(
            "INSERT INTO audit_log (at, actor, action, target, outcome, status_code, request_id, source, "
            "detail, repeat_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (repeat_key) DO UPDATE SET repeats = audit_log.repeats + 1, last_at = excluded.at",
            (
                sql.format_time(_now()),
                entry.actor,
                entry.action,
                entry.target,
                entry.outcome,
                entry.status_code,
                entry.request_id,
                entry.source,
                _dumps(entry.detail),
                entry.repeat_key,
            ),
        )

    async def record_audit(self, entry: AuditEntry) -> None:
        await self._run(self._writer, lambda conn: self._insert_audit(conn, entry))

    @staticmethod
    def _claim(conn: sqlite3.Connection, idem: Idempotency) -> WriteResult | None:
        row = conn.execute(
            "SELECT fingerprint, status_code, body FROM idempotency_keys WHERE actor = ? AND key = ?",
            (idem.actor, idem.key),
        ).fetchone()
        if row is not None:
            return replay(idem, row["fingerprint"], row["status_code"], row["body"])
        conn.execute(
            "INSERT INTO idempotency_keys (actor, key, fingerprint, created_at) VALUES (?, ?, ?, ?)",
            (idem.actor, idem.key, idem.fingerprint, sql.format_time(_now())),
        )
        return None

    @staticmethod
    def _lookup_id(conn: sqlite3.Connection, column: str, name: str) -> int:
        table = sql.LOOKUP_TABLES[column]
        conn.execute(f"INSERT INTO {table} (name) VALUES (?) ON CONFLICT (name) DO NOTHING", (name,))
        row = conn.execute(f"SELECT id FROM {table} WHERE name = ?", (name,)).fetchone()
        return int(row[0])

    @staticmethod
    def _append(
        conn: sqlite3.Connection,
        row: sqlite3.Row,
        build: Build,
        draft: plan.Draft,
        actor: str,
        *,
        old_status: str | None,
        previous_at: datetime | None,
    ) -> WriteResult:
        recorded_at = _now()
        stamp = sql.format_time(recorded_at)
        duration_ms = None
        if previous_at is not None:
            duration_ms = int((recorded_at - previous_at).total_seconds() * 1000)
        build_uuid = str(build.id)
        seq = conn.execute(
            "INSERT INTO events (build_uuid, type, attempt, state_code, from_state_code, status, "
            "message, failure, reason, actor, provenance, duration_ms, platform_id, os_version_id, "
            "image_type_id, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                build_uuid,
                draft.type,
                draft.attempt,
                draft.state_code,
                draft.from_state_code,
                draft.status,
                draft.message,
                _dumps(draft.failure),
                draft.reason,
                actor,
                _dumps(draft.provenance),
                duration_ms,
                row["platform_id"],
                row["os_version_id"],
                row["image_type_id"],
                stamp,
            ),
        ).lastrowid
        if seq is None:  # pragma: no cover - an INSERT always sets lastrowid
            raise RuntimeError("event insert returned no seq")
        conn.execute(
            "UPDATE builds SET state_code = ?, status = ?, attempt = ?, message = ?, failure = ?, "
            "updated_at = ?, last_event_seq = ? WHERE id = ?",
            (
                draft.state_code,
                draft.status,
                draft.attempt,
                draft.message,
                _dumps(draft.failure),
                stamp,
                seq,
                build_uuid,
            ),
        )
        if old_status != draft.status:
            conn.execute("UPDATE status_counts SET n = n + 1 WHERE status = ?", (draft.status,))
            if old_status is not None:
                conn.execute("UPDATE status_counts SET n = n - 1 WHERE status = ?", (old_status,))
        if draft.type == "failure" and draft.failure is not None:
            conn.execute(
                "INSERT INTO failures (seq, build_uuid, error_message, error_code, component, details, "
                "recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    seq,
                    build_uuid,
                    draft.failure["error_message"],
                    draft.failure["error_code"],
                    draft.failure["component"],
                    _dumps(draft.failure["details"]),
                    stamp,
                ),
            )
        token, extra_token = plan.state_tokens(draft)
        conn.execute(
            "INSERT INTO webhook_deliveries (webhook_id, event_seq, message_id, status, next_attempt_at, "
            "created_at) SELECT w.id, ?, 'msg_' || ? || '_' || w.id, 'pending', ?, ? FROM webhooks w "
            "WHERE w.enabled AND (w.platform IS NULL OR w.platform = ?) "
            "AND (w.os_version IS NULL OR w.os_version = ?) AND (w.image_type IS NULL OR w.image_type = ?) "
            "AND (w.event_types IS NULL OR w.event_types LIKE '%,' || ? || ',%') "
            "AND (w.states IS NULL OR w.states LIKE '%,' || ? || ',%' OR w.states LIKE '%,' || ? || ',%')",
            (
                seq, seq, stamp, stamp, build.platform, build.os_version, build.image_type,
                draft.type, token, extra_token,
            ),
        )  # fmt: skip
        if draft.type == "created":
            conn.execute(
                "INSERT INTO combos (platform_id, os_version_id, image_type_id) VALUES (?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (row["platform_id"], row["os_version_id"], row["image_type_id"]),
            )
        written = plan.result(
            build, draft, actor=actor, seq=seq, recorded_at=recorded_at, duration_ms=duration_ms
        )
        return WriteResult.of(written, created=draft.type == "created")

    @staticmethod
    def _lock_build(
        conn: sqlite3.Connection, ref: str, *, by_build_id: bool = False
    ) -> tuple[sqlite3.Row, Build]:
        """The build ``ref`` names (``by_build_id``: the build with exactly that ``build_id``, as a create
        looks for it). Inside BEGIN IMMEDIATE this process already holds the write lock: the row cannot
        change."""
        p = sql.Params(_DIALECT)
        condition = sql.build_id_condition(p, ref) if by_build_id else sql.ref_condition(p, ref)
        row = conn.execute(
            f"SELECT {sql.BUILD_COLUMNS}, b.platform_id, b.os_version_id, b.image_type_id "
            f"{sql.BUILD_FROM} WHERE {condition}",
            p.values,
        ).fetchone()
        if row is None:
            raise NotFound(f"no build {ref!r}", slug="build-not-found")
        return row, sql.decode_build(_DIALECT, row)

    @staticmethod
    def _event(conn: sqlite3.Connection, seq: int) -> Event:
        p = sql.Params(_DIALECT)
        row = conn.execute(sql.event_query(p, seq), p.values).fetchone()
        if row is None:
            raise NotFound(f"no event {seq}", slug="event-not-found")
        return sql.decode_event(_DIALECT, row)

    async def create_build(self, request: BuildCreate, ctx: WriteContext) -> WriteResult:
        prepared = plan.prepare(request)  # here, not on the writer thread

        def action(conn: sqlite3.Connection) -> WriteResult:
            existing = conn.execute("SELECT 1 FROM builds WHERE build_id = ?", (request.build_id,)).fetchone()
            if existing is None:
                ids = [self._lookup_id(conn, col, getattr(request, col)) for col in sql.LOOKUP_TABLES]
                stamp = sql.format_time(_now())
                conn.execute(
                    "INSERT INTO builds (id, build_id, platform_id, os_version_id, image_type_id, "
                    "state_code, status, attempt, labels, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, 0, 'running', 1, ?, ?, ?)",
                    (
                        str(uuid.uuid4()),
                        request.build_id,
                        *ids,
                        _dumps(request.labels),
                        stamp,
                        stamp,
                    ),
                )
            # The build with this very build_id, never one its text may spell (an id): a create
            # never appends to, or answers with, another build.
            row, build = self._lock_build(conn, request.build_id, by_build_id=True)
            if existing is not None:
                plan.same_build(build, request)
                seq = conn.execute(
                    "SELECT min(seq) FROM events WHERE build_uuid = ? AND type = 'created'",
                    (str(build.id),),
                ).fetchone()[0]
                return WriteResult.of(plan.with_event(build, self._event(conn, seq)))
            return self._append(
                conn, row, build, plan.created(prepared), ctx.actor, old_status=None, previous_at=None
            )

        return await self._write(ctx, "build.create", request.build_id, action)

    async def _transition(
        self,
        ref: str,
        ctx: WriteContext,
        action_name: str,
        decide: Callable[[Build], plan.Draft | None],
    ) -> WriteResult:
        def action(conn: sqlite3.Connection) -> WriteResult:
            row, build = self._lock_build(conn, ref)
            draft = decide(build)
            if draft is None:
                return WriteResult.of(plan.with_event(build, self._event(conn, build.last_event_seq)))
            return self._append(
                conn,
                row,
                build,
                draft,
                ctx.actor,
                old_status=build.status,
                previous_at=build.updated_at,
            )

        return await self._write(ctx, action_name, ref, action)

    async def record_state(self, ref: str, request: StateChange, ctx: WriteContext) -> WriteResult:
        prepared = plan.prepare(request)  # here, not on the writer or under a lock
        return await self._transition(ref, ctx, "build.state", lambda b: plan.state(b, prepared))

    async def record_failure(self, ref: str, request: FailureReport, ctx: WriteContext) -> WriteResult:
        prepared = plan.prepare(request)
        return await self._transition(ref, ctx, "build.failure", lambda b: plan.failure(b, prepared))

    async def reset_build(self, ref: str, request: ResetRequest, ctx: WriteContext) -> WriteResult:
        prepared = plan.prepare(request)
        return await self._transition(ref, ctx, "build.reset", lambda b: plan.reset(b, prepared))

    # ------------------------------------------------------------------ reads

    async def get_build(self, ref: str) -> Build:
        def work(conn: sqlite3.Connection) -> Build:
            p = sql.Params(_DIALECT)
            row = conn.execute(sql.build_query(p, ref), p.values).fetchone()
            if row is None:
                raise NotFound(f"no build {ref!r}", slug="build-not-found")
            return sql.decode_build(_DIALECT, row)

        return await self._read(work)

    async def list_builds(self, where: BuildFilter, limit: int, cursor: BuildCursor | None) -> BuildPage:
        def work(conn: sqlite3.Connection) -> BuildPage:
            p = sql.Params(_DIALECT)
            rows = conn.execute(sql.build_list_query(p, where, limit + 1, cursor), p.values).fetchall()
            builds = [sql.decode_build(_DIALECT, row) for row in rows[:limit]]
            next_cursor = None
            if len(rows) > limit:
                next_cursor = BuildCursor(builds[-1].updated_at, builds[-1].id).encode()
            return BuildPage(builds=builds, next_cursor=next_cursor)

        return await self._read(work)

    async def history(self, ref: str) -> History:
        def work(conn: sqlite3.Connection) -> History:
            conn.execute("BEGIN")  # one snapshot for the build and its events
            try:
                p = sql.Params(_DIALECT)
                row = conn.execute(sql.build_query(p, ref), p.values).fetchone()
                if row is None:
                    raise NotFound(f"no build {ref!r}", slug="build-not-found")
                build = sql.decode_build(_DIALECT, row)
                p = sql.Params(_DIALECT)
                rows = conn.execute(sql.history_query(p, str(build.id)), p.values).fetchall()
            finally:
                conn.execute("COMMIT")
            return History(build=build, events=[sql.decode_event(_DIALECT, r) for r in rows])

        return await self._read(work)

    async def list_events(
        self, where: EventFilter, *, after: int, before: int | None, limit: int, newest_first: bool
    ) -> EventPage:
        def work(conn: sqlite3.Connection) -> EventPage:
            p = sql.Params(_DIALECT)
            query = sql.event_list_query(
                p, where, after=after, before=before, limit=limit + 1, newest_first=newest_first
            )
            rows = conn.execute(query, p.values).fetchall()
            events = [sql.decode_event(_DIALECT, row) for row in rows[:limit]]
            return EventPage(
                events=events,
                next_after=events[-1].seq if events else after,
                has_more=len(rows) > limit,
            )

        return await self._read(work)

    async def get_event(self, seq: int) -> Event:
        return await self._read(lambda conn: self._event(conn, seq))

    async def summary(self, window_hours: int) -> Summary:
        since = _now() - timedelta(hours=window_hours)

        def work(conn: sqlite3.Connection) -> Summary:
            conn.execute("BEGIN")
            try:
                counts = conn.execute("SELECT status, n FROM status_counts").fetchall()
                matrix = conn.execute(sql.MATRIX_QUERY).fetchall()
                p = sql.Params(_DIALECT)
                groups = conn.execute(sql.failure_groups_query(p, since), p.values).fetchall()
                steps: list[dict[str, int]] = []
                for code in range(0, 100, 5):
                    steps.extend(
                        {"state_code": code, "to_state_code": r[1], "duration_ms": r[0]}
                        for r in conn.execute(
                            "SELECT duration_ms, state_code FROM events WHERE type = 'state' "
                            "AND from_state_code = ? AND duration_ms IS NOT NULL "
                            "ORDER BY seq DESC LIMIT ?",
                            (code, sql.STEP_SAMPLES),
                        )
                    )
            finally:
                conn.execute("COMMIT")
            return sql.build_summary(_DIALECT, counts, matrix, groups, steps, window_hours)

        return await self._read(work)

    async def run_batch(
        self, statements: Sequence[tuple[str, Sequence[Any]]], *, write: bool = True
    ) -> list[list[Any]]:
        """Statements built with ``sql.Params(store.dialect)``, run in one transaction; rows of each."""

        def work(conn: sqlite3.Connection) -> list[list[Any]]:
            with transaction(conn, "BEGIN IMMEDIATE" if write else "BEGIN"):
                return [conn.execute(query, values).fetchall() for query, values in statements]

        return await self._run(self._writer if write else self._readers, work)

    async def max_seq(self) -> int:
        row = await self._read(
            lambda conn: conn.execute("SELECT COALESCE(max(seq), 0) FROM events").fetchone()
        )
        return int(row[0])

    async def purge_idempotency_keys(self, older_than: datetime) -> int:
        def work(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "DELETE FROM idempotency_keys WHERE created_at < ?", (sql.format_time(older_than),)
            )
            return cursor.rowcount

        return await self._run(self._writer, work)
