"""The store ceilings: a state change's transaction run straight from Python, without HTTP.

Same driver and the same concurrency as the service with two workers: two processes, each with an asyncpg
pool of ``pg_pool_max`` (4) connections kept busy by 16 tasks (PostgreSQL), or each with one writer
(SQLite). Every transaction moves a build of its own forward by 5 (after 100, a reset), like the state
scenario, so rows never collide.

Variants
--------
``pg-transaction``   BEGIN; SELECT ... FOR UPDATE of the build; the store's append statement (feed lock,
                     event, build, counters, failures, combos, webhook outbox, NOTIFY) without its audit
                     row; the audit row in an INSERT of its own; COMMIT: the shape of the write path as
                     first built, five round trips.
``pg-one-statement`` the store's append statement with its audit row, alone in autocommit: the best any
                     design doing these writes can do with this driver. The target is 50% of this.
``pg-grouped``       the store's compare-and-set append (``APPEND_EVENT_IF_CURRENT``, audit row included)
                     through its ``StatementGroup``: the appends a process has in flight at once sent in
                     one round trip, one implicit transaction and one COMMIT (group commit).
``pg-no-lock``       ``pg-one-statement`` without the feed lock: what the writes reach when they do not
                     queue on it at all, the bound of a design that orders the feed on the reader's side
                     (a horizon of the oldest writer in flight) instead, before that design's own costs.
``pg-store``         ``PostgresStore.record_state``/``reset_build`` called directly: the service's store code
                     (pydantic, rules, response body) without HTTP, auth or middleware.
``sqlite-transaction`` plain sqlite3 in WAL, ``synchronous=FULL`` as the service: BEGIN IMMEDIATE, the same
                     statements as ``SQLiteStore``, COMMIT, from one process: SQLite lets one writer in at
                     a time, so a second process only adds the hand-over of the write lock.
``sqlite-store``     ``SQLiteStore`` called directly.

Both PostgreSQL ceilings run the store's own statement (``APPEND_EVENT``) with the parameters the store
builds for it (``append_args``) for the change ``pg-store`` makes, so they cannot drift from the store: a
change to the statement or its parameters changes the ceilings with it.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import uvloop

from bench import dataset
from bench.db import Database
from buildstate.store.plan import Draft
from buildstate.store.postgres import APPEND_EVENT, APPEND_EVENT_IF_CURRENT, append_args
from buildstate.store.postgres_executor import PostgresExecutor, StatementGroup
from buildstate.store.types import AuditEntry

PROCESSES = 2
TASKS_PER_PROCESS = 16
POOL_MAX = 4
BUILDS_PER_TASK = 4

ACTOR = "key:bs_bench000"
REQUEST_ID = "rid"
SOURCE = "127.0.0.1"

_LOCK = """
SELECT b.id, b.build_id, b.state_code, b.status, b.attempt, b.updated_at, b.platform_id, b.os_version_id,
       b.image_type_id, b.last_event_seq, p.name AS platform, o.name AS os_version, t.name AS image_type
FROM builds b JOIN platforms p ON p.id = b.platform_id JOIN os_versions o ON o.id = b.os_version_id
JOIN image_types t ON t.id = b.image_type_id
WHERE b.build_id = $1 FOR UPDATE OF b
"""

_AUDIT = (
    "INSERT INTO audit_log (actor, action, target, outcome, status_code, request_id, source, detail) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)"
)


@dataclass
class Build:
    id: Any
    build_id: str
    platform: str
    os_version: str
    image_type: str
    ids: tuple[int, int, int]
    code: int = 0
    status: str = "running"
    attempt: int = 1
    updated_at: datetime | None = None
    seq: int = 0  # the build's last event


def _next(build: Build) -> tuple[str, int, int, str]:
    """The next change of a bench build: +5 up to 100, then a reset. (type, code, attempt, status)"""
    if build.code >= 100:
        return "reset", 0, build.attempt + 1, "running"
    code = build.code + 5
    return "state", code, build.attempt, "succeeded" if code == 100 else "running"


def _draft(build: Build, kind: str, code: int, attempt: int, status: str) -> Draft:
    """What the store's plan makes of the request ``pg-store`` sends for this change: a ``StateChange``
    with the message "bench N", or a ``ResetRequest`` with the reason "cycle"."""
    message, reason = ("cycle", "cycle") if kind == "reset" else (f"bench {code}", None)
    return Draft(
        type=kind,
        attempt=attempt,
        state_code=code,
        from_state_code=build.code,
        status=status,
        message=message,
        failure=None,
        reason=reason,
        provenance=None,
    )


def _audit_action(draft: Draft) -> str:
    return "build.reset" if draft.type == "reset" else "build.state"


def _append_args(build: Build, draft: Draft, *, audited: bool) -> list[Any]:
    """``APPEND_EVENT``'s parameters as ``PostgresStore`` passes them for ``draft`` (with ``audited``,
    the audit row the store's write path hands it; else none): the store's own ``append_args``."""
    audit = (
        AuditEntry(ACTOR, _audit_action(draft), build.build_id, "allowed", 200, REQUEST_ID, SOURCE)
        if audited
        else None
    )
    return append_args(
        draft,
        ACTOR,
        build_uuid=build.id,
        platform=build.platform,
        os_version=build.os_version,
        image_type=build.image_type,
        lookup_ids=build.ids,
        old_status=build.status,
        previous_at=build.updated_at,
        audit=audit,
    )


def _apply(build: Build, kind: str, code: int, attempt: int, status: str, at: datetime, seq: int = 0) -> None:
    build.code, build.attempt, build.status, build.updated_at = code, attempt, status, at
    build.seq = seq


# Without the feed lock: the same writes, nothing queued on one lock (``pg-no-lock``).
_APPEND_NO_LOCK = APPEND_EVENT.replace("pg_advisory_xact_lock($1::bigint)", "$1::bigint", 1)


# ---------------------------------------------------------------------- one process


async def _pool(url: str, size: int) -> asyncpg.Pool:
    """A pool like the service's: JSON codec, no reset query."""

    async def init(conn: asyncpg.Connection) -> None:
        await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")

    async def keep(_conn: asyncpg.Connection) -> None:
        return None

    return await asyncpg.create_pool(url, min_size=size, max_size=size, init=init, reset=keep)


async def _pg_append(conn: asyncpg.Connection, variant: str, build: Build, draft: Draft) -> Any:
    """One change of ``build`` the way ``variant`` writes it on ``conn``: the appended event's row."""
    if variant != "pg-transaction":
        statement = _APPEND_NO_LOCK if variant == "pg-no-lock" else APPEND_EVENT
        return await conn.fetchrow(statement, *_append_args(build, draft, audited=True))
    async with conn.transaction():
        await conn.fetchrow(_LOCK, build.build_id)
        row = await conn.fetchrow(APPEND_EVENT, *_append_args(build, draft, audited=False))
        await conn.execute(
            _AUDIT, ACTOR, _audit_action(draft), build.build_id, "allowed", 200, REQUEST_ID, SOURCE, None
        )
    return row


async def _pg_worker(
    variant: str, url: str, builds: list[Build], start_at: float, seconds: float, tasks: int, pool_max: int
) -> list[float]:
    latencies: list[float] = []
    stop_at = start_at + seconds
    pool = await _pool(url, pool_max)
    store = None
    group = None
    if variant == "pg-store":
        from buildstate.store.postgres import PostgresStore  # noqa: PLC0415

        store = PostgresStore(url, min_size=pool_max, max_size=pool_max)
        await store.open()
    if variant == "pg-grouped":
        executor = PostgresExecutor(url, min_size=pool_max, max_size=pool_max, timeout=5.0)
        await executor.open()
        group = StatementGroup(executor, APPEND_EVENT_IF_CURRENT)

    async def transaction(build: Build) -> None:
        kind, code, attempt, status = _next(build)
        draft = _draft(build, kind, code, attempt, status)
        if group is not None:
            row = await group.fetchrow(*_append_args(build, draft, audited=True), build.seq)
            assert row is not None, "a bench build moved under its own task"
            _apply(build, kind, code, attempt, status, row["recorded_at"], row["seq"])
            return
        async with pool.acquire() as conn:
            row = await _pg_append(conn, variant, build, draft)
        _apply(build, kind, code, attempt, status, row["recorded_at"], row["seq"])

    async def through_store(build: Build) -> None:
        from buildstate.models import ResetRequest, StateChange  # noqa: PLC0415
        from buildstate.store.types import WriteContext  # noqa: PLC0415

        assert store is not None
        kind, code, attempt, status = _next(build)
        ctx = WriteContext(actor=ACTOR, request_id=REQUEST_ID, source=SOURCE)
        if kind == "reset":
            await store.reset_build(build.build_id, ResetRequest(reason="cycle"), ctx)
        else:
            await store.record_state(
                build.build_id, StateChange(state_code=code, message=f"bench {code}"), ctx
            )
        _apply(build, kind, code, attempt, status, datetime.now(UTC))

    step: Callable[[Build], Awaitable[None]] = through_store if store is not None else transaction

    async def task(mine: list[Build]) -> None:
        i = 0
        while time.time() < stop_at:
            began = time.perf_counter()
            await step(mine[i % len(mine)])
            if time.time() >= start_at:
                latencies.append(time.perf_counter() - began)
            i += 1

    per_task = len(builds) // tasks
    await asyncio.sleep(max(0.0, start_at - 0.5 - time.time()))  # warm up for the last half second
    await asyncio.gather(*(task(builds[k * per_task : (k + 1) * per_task]) for k in range(tasks)))
    for closing in (store, executor if group is not None else None, pool):
        if closing is not None:
            await closing.close()
    return latencies


def _sqlite_worker(
    variant: str, path: str, builds: list[Build], start_at: float, seconds: float
) -> list[float]:
    if variant == "sqlite-store":
        return uvloop.run(_sqlite_store_worker(path, builds, start_at, seconds))
    conn = sqlite3.connect(path, timeout=5, isolation_level=None)
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    latencies: list[float] = []
    stop_at = start_at + seconds
    i = 0
    while time.time() < stop_at:
        build = builds[i % len(builds)]
        i += 1
        began = time.perf_counter()
        kind, code, attempt, status = _next(build)
        now = datetime.now(UTC)
        stamp = dataset.format_time(now)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "SELECT b.id, b.state_code, b.status, b.attempt, b.updated_at, b.platform_id, b.os_version_id, "
            "b.image_type_id, p.name, o.name, t.name FROM builds b JOIN platforms p ON p.id = b.platform_id "
            "JOIN os_versions o ON o.id = b.os_version_id JOIN image_types t ON t.id = b.image_type_id "
            "WHERE b.build_id = ?",
            (build.build_id,),
        ).fetchone()
        seq = conn.execute(
            "INSERT INTO events (build_uuid, type, attempt, state_code, from_state_code, status, message, "
            "failure, reason, actor, provenance, duration_ms, platform_id, os_version_id, image_type_id, "
            "recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                str(build.id),
                kind,
                attempt,
                code,
                build.code,
                status,
                f"bench {code}",
                None,
                "cycle" if kind == "reset" else None,
                ACTOR,
                None,
                1,
                *build.ids,
                stamp,
            ),
        ).lastrowid
        conn.execute(
            "UPDATE builds SET state_code = ?, status = ?, attempt = ?, message = ?, failure = ?, "
            "updated_at = ?, last_event_seq = ? WHERE id = ?",
            (code, status, attempt, f"bench {code}", None, stamp, seq, str(build.id)),
        )
        if status != build.status:
            conn.execute("UPDATE status_counts SET n = n + 1 WHERE status = ?", (status,))
            conn.execute("UPDATE status_counts SET n = n - 1 WHERE status = ?", (build.status,))
        token = "reset" if kind == "reset" else str(code)
        conn.execute(
            "INSERT INTO webhook_deliveries (webhook_id, event_seq, message_id, status, next_attempt_at, "
            "created_at) SELECT w.id, ?, 'msg_' || ? || '_' || w.id, 'pending', ?, ? FROM webhooks w "
            "WHERE w.enabled AND (w.platform IS NULL OR w.platform = ?) "
            "AND (w.os_version IS NULL OR w.os_version = ?) AND (w.image_type IS NULL OR w.image_type = ?) "
            "AND (w.event_types IS NULL OR w.event_types LIKE '%,' || ? || ',%') "
            "AND (w.states IS NULL OR w.states LIKE '%,' || ? || ',%' OR w.states LIKE '%,' || ? || ',%')",
            (seq, seq, stamp, stamp, build.platform, build.os_version, build.image_type, kind, token, None),
        )
        conn.execute(
            "INSERT INTO audit_log (at, actor, action, target, outcome, status_code, request_id, source, "
            "detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                stamp,
                ACTOR,
                "build.state",
                build.build_id,
                "allowed",
                200,
                REQUEST_ID,
                SOURCE,
                None,
            ),
        )
        conn.execute("COMMIT")
        _apply(build, kind, code, attempt, status, now)
        if time.time() >= start_at:
            latencies.append(time.perf_counter() - began)
    conn.close()
    return latencies


async def _sqlite_store_worker(
    path: str, builds: list[Build], start_at: float, seconds: float
) -> list[float]:
    from buildstate.models import ResetRequest, StateChange  # noqa: PLC0415
    from buildstate.store.sqlite import SQLiteStore  # noqa: PLC0415
    from buildstate.store.types import WriteContext  # noqa: PLC0415

    store = SQLiteStore(Path(path))
    await store.open()
    ctx = WriteContext(actor=ACTOR, request_id=REQUEST_ID, source=SOURCE)
    latencies: list[float] = []
    stop_at = start_at + seconds

    async def task(mine: list[Build]) -> None:
        i = 0
        while time.time() < stop_at:
            build = mine[i % len(mine)]
            i += 1
            began = time.perf_counter()
            kind, code, attempt, status = _next(build)
            if kind == "reset":
                await store.reset_build(build.build_id, ResetRequest(reason="cycle"), ctx)
            else:
                await store.record_state(build.build_id, StateChange(state_code=code), ctx)
            _apply(build, kind, code, attempt, status, datetime.now(UTC))
            if time.time() >= start_at:
                latencies.append(time.perf_counter() - began)

    per_task = len(builds) // TASKS_PER_PROCESS
    await asyncio.gather(*(task(builds[k * per_task : (k + 1) * per_task]) for k in range(TASKS_PER_PROCESS)))
    await store.close()
    return latencies


def _process(args: tuple[str, str, list[Build], float, float, int, int]) -> list[float]:
    variant, url, builds, start_at, seconds, tasks, pool_max = args
    if variant.startswith("pg-"):
        return uvloop.run(_pg_worker(variant, url, builds, start_at, seconds, tasks, pool_max))
    return _sqlite_worker(variant, url, builds, start_at, seconds)


# ---------------------------------------------------------------------- the parent


def _fresh_builds(db: Database, count: int, prefix: str) -> list[Build]:
    loaded = dataset.load(db, count, prefix=prefix, fresh=True, keep_ids=True)
    if db.is_pg:

        async def fetch() -> list[Any]:
            conn = await asyncpg.connect(db.url)
            try:
                return list(
                    await conn.fetch(
                        _LOCK.replace("FOR UPDATE OF b", "").replace(
                            "b.build_id = $1", "b.build_id = ANY($1::text[])"
                        ),
                        loaded.build_ids,
                    )
                )
            finally:
                await conn.close()

        rows = asyncio.run(fetch())
    else:
        conn = sqlite3.connect(db.sqlite_path)
        conn.row_factory = sqlite3.Row
        marks = ", ".join("?" * len(loaded.build_ids))
        rows = conn.execute(
            _LOCK.replace("FOR UPDATE OF b", "").replace("b.build_id = $1", f"b.build_id IN ({marks})"),
            loaded.build_ids,
        ).fetchall()
        conn.close()
    return [
        Build(
            r["id"],
            r["build_id"],
            r["platform"],
            r["os_version"],
            r["image_type"],
            (r["platform_id"], r["os_version_id"], r["image_type_id"]),
            updated_at=r["updated_at"] if db.is_pg else datetime.fromisoformat(r["updated_at"]),
            seq=r["last_event_seq"],
        )
        for r in rows
    ]


@dataclass(frozen=True)
class Ceiling:
    variant: str
    tps: float
    transactions: int
    seconds: float
    p50_ms: float
    p99_ms: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "tps": round(self.tps, 1),
            "transactions": self.transactions,
            "seconds": self.seconds,
            "p50_ms": round(self.p50_ms, 2),
            "p99_ms": round(self.p99_ms, 2),
        }


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def measure(
    db: Database,
    variant: str,
    seconds: float,
    *,
    tasks: int = TASKS_PER_PROCESS,
    pool_max: int = POOL_MAX,
) -> Ceiling:
    """Run ``variant`` for ``seconds`` in PROCESSES processes started together (the SQLite one in one),
    each with ``tasks`` concurrent tasks over an asyncpg pool of ``pool_max`` (PostgreSQL)."""
    processes = 1 if variant == "sqlite-transaction" else PROCESSES
    builds = _fresh_builds(db, processes * tasks * BUILDS_PER_TASK, f"ceiling-{variant}-{time.time_ns()}")
    per_process = len(builds) // processes
    start_at = time.time() + 3.0  # every process has connected by then
    url = db.url if db.is_pg else str(db.sqlite_path)
    jobs = [
        (variant, url, builds[k * per_process : (k + 1) * per_process], start_at, seconds, tasks, pool_max)
        for k in range(processes)
    ]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        results = pool.map(_process, jobs)
    latencies = [x for r in results for x in r]
    return Ceiling(
        variant,
        len(latencies) / seconds,
        len(latencies),
        seconds,
        percentile(latencies, 50) * 1000,
        percentile(latencies, 99) * 1000,
    )


DESCRIPTIONS = {
    "pg-transaction": "BEGIN, SELECT FOR UPDATE, append CTE, audit INSERT, COMMIT (asyncpg, 2 x pool of 4)",
    "pg-one-statement": "the same writes as one statement in autocommit (asyncpg, 2 x pool of 4)",
    "pg-grouped": "the compare-and-set append through StatementGroup: group commit (2 processes)",
    "pg-no-lock": "pg-one-statement without the feed lock (2 x pool of 4)",
    "pg-store": "PostgresStore.record_state called directly (2 processes x pool of 4)",
    "sqlite-transaction": "plain sqlite3, WAL, synchronous=FULL, BEGIN IMMEDIATE ... COMMIT (one writer)",
    "sqlite-store": "SQLiteStore.record_state called directly (2 processes)",
}
PG_VARIANTS = ("pg-transaction", "pg-one-statement", "pg-grouped", "pg-store")
# Measured over a sweep of concurrency and pool size (``python -m bench store``); pg-no-lock only on request:
# without the feed lock the counter rows deadlock now and then.
SWEPT = ("pg-one-statement", "pg-grouped")
SQLITE_VARIANTS = ("sqlite-transaction", "sqlite-store")
