"""Read paths against data size: 10k, 100k, 1M builds of history (about 8 events each, and 3 artifacts
recorded by one more event) in either store.

Each size gets a fresh database, loaded by ``bench.dataset``; then the store's own read methods are timed
(median of repeated calls after a warm-up, decoding included, bounded in count and time):

``feed``       a Concourse check near the head of the feed: ``after`` = 2000 events back, filtered by
               platform, OS and image type (one resource), limit 1000
``feed_page``  an unfiltered page of 100 from the middle of the feed (a consumer catching up)
``list``       the build list filtered by platform and status, newest first, limit 50
``summary``    the dashboard summary (counts, matrix, failure groups, step durations)
``artifact``   ``GET /artifacts/latest``'s lookup (``ArtifactStore.latest``): the newest succeeded build's
               AMI in one region of one platform x OS x image type
``artifact_labels``  the same with ``kind=ami`` and a label (``label.arch=x86_64``)
``channel``    ``GET /channels/production?platform=&os_version=&image_type=`` (``ReleaseStore.channel``):
               the head and the newest ``CHANNEL_HISTORY`` moves of one channel among 120, whose
               histories grow with the data (a move every second succeeded build)
``ancestry``   ``GET /builds/{ref}/ancestry`` (``ReleaseStore.ancestry``) of the build with three
               generations of 100 descendants, among parent links on three builds in four

The plans come with them: every statement one more call of each sends (recorded on its way to the
executor, so it is the store's own SQL with its parameters), under ``EXPLAIN (ANALYZE, BUFFERS)`` on
PostgreSQL and ``EXPLAIN QUERY PLAN`` on SQLite.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg

from bench import dataset
from bench.db import Database, temporary
from bench.store_ceiling import percentile
from buildstate.store import postgres_executor, sqlite_executor
from buildstate.store.artifacts import ArtifactLookup
from buildstate.store.executor import Statement, Transaction
from buildstate.store.types import BuildFilter, EventFilter

REPEATS = 15
MAX_SECONDS_PER_QUERY = 20.0
ARTIFACTS_PER_BUILD = 3
# What a deployer asks for: the AMI in one region (the second of aws's in bench.dataset.REGIONS).
ARTIFACT = ArtifactLookup(platform="aws", os_version="ubuntu-22.04", image_type="cis", region="eu-west-1")
ARTIFACT_LABELS = ArtifactLookup(
    platform="aws", os_version="ubuntu-22.04", image_type="cis", region="eu-west-1", kind="ami",
    labels=(("arch", "x86_64"),),
)  # fmt: skip
BUCKET = {"platform": "aws", "os_version": "ubuntu-22.04", "image_type": "cis"}
# History rows the channel lookup answers: fewer than the smallest dataset's channels have (29 at 10k).
CHANNEL_HISTORY = 20
Call = Callable[[Any], Awaitable[Any]]


def _store(db: Database) -> Any:
    if db.is_pg:
        from buildstate.store.postgres import PostgresStore  # noqa: PLC0415

        return PostgresStore(db.url)
    from buildstate.store.sqlite import SQLiteStore  # noqa: PLC0415

    return SQLiteStore(db.sqlite_path)


def _queries(head: int, size: int) -> dict[str, Call]:
    check = EventFilter(platform="aws", os_version="ubuntu-22.04", image_type="cis")
    after = max(0, head - 2000)
    middle = head // 2
    listing = BuildFilter(platform="azure", status="failed")
    family_root = dataset.build_id_of(dataset.NAMES, "hist", dataset.family_root(size))
    return {
        "feed": lambda s: s.list_events(check, after=after, before=None, limit=1000, newest_first=False),
        "feed_page": lambda s: s.list_events(
            EventFilter(), after=middle, before=None, limit=100, newest_first=False
        ),
        "list": lambda s: s.list_builds(listing, 50, None),
        "summary": lambda s: s.summary(168),
        "artifact": lambda s: s.artifacts.latest(ARTIFACT),
        "artifact_labels": lambda s: s.artifacts.latest(ARTIFACT_LABELS),
        "channel": lambda s: s.release.channel(dataset.CHANNEL, BUCKET, CHANNEL_HISTORY),
        "ancestry": lambda s: s.release.ancestry(family_root),
    }


async def _time_queries(db: Database, size: int) -> tuple[dict[str, Any], dict[str, str]]:
    store = _store(db)
    await store.open()
    timings: dict[str, Any] = {}
    plans: dict[str, str] = {}
    try:
        head = await store.max_seq()
        for name, call in _queries(head, size).items():
            for _ in range(3):
                await call(store)
            samples = []
            deadline = time.monotonic() + MAX_SECONDS_PER_QUERY
            while len(samples) < REPEATS and time.monotonic() < deadline:
                began = time.perf_counter()
                await call(store)
                samples.append(time.perf_counter() - began)
            timings[name] = {
                "median_ms": round(percentile(samples, 50) * 1000, 2),
                "p90_ms": round(percentile(samples, 90) * 1000, 2),
                "samples": len(samples),
            }
            plans[name] = await _explain(db, await _statements(store, call))
    finally:
        await store.close()
    return timings, plans


async def _statements(store: Any, call: Call) -> list[Statement]:
    """What one more ``call`` sends to the database: each statement of its reads, once, as the store's
    code made it (its SQL and parameters), recorded on the way to the executor."""
    executor = store.executor
    seen: list[Statement] = []
    read = executor.read

    async def recording(work: Transaction[Any], *, snapshot: bool = False) -> Any:
        return await read(_recorded(work, seen), snapshot=snapshot)

    executor.read = recording
    try:
        await call(store)
    finally:
        del executor.read  # the class's method again
    unique = {(s.sql, repr(s.params)): s for s in seen}
    return list(unique.values())


def _recorded(work: Transaction[Any], seen: list[Statement]) -> Transaction[Any]:
    rows = None
    while True:
        try:
            statement = work.send(rows)
        except StopIteration as done:
            return done.value
        seen.append(statement)
        rows = yield statement


async def _explain(db: Database, statements: list[Statement]) -> str:
    """Each statement's plan, through the executor's own statement code (named parameters, JSON):
    ``EXPLAIN (ANALYZE, BUFFERS)`` on PostgreSQL, ``EXPLAIN QUERY PLAN`` on SQLite."""
    if not db.is_pg:
        conn = sqlite3.connect(db.sqlite_path)
        try:
            return "\n\n".join(
                _sqlite_tree(sqlite_executor.execute(conn, _prefixed("EXPLAIN QUERY PLAN", s)))
                for s in statements
            )
        finally:
            conn.close()
    pg = await asyncpg.connect(db.url)
    try:
        await pg.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
        plans = []
        for statement in statements:
            rows = await postgres_executor.execute(pg, _prefixed("EXPLAIN (ANALYZE, BUFFERS)", statement))
            plans.append("\n".join(r[0] for r in rows))
    finally:
        await pg.close()
    return "\n\n".join(plans)


def _prefixed(prefix: str, statement: Statement) -> Statement:
    return Statement(f"{prefix} {statement.sql}", statement.params)


def _sqlite_tree(rows: list[Any]) -> str:
    """EXPLAIN QUERY PLAN's rows (id, parent, notused, detail) drawn as the sqlite3 shell draws them."""
    depth: dict[int, int] = {0: -1}
    lines = []
    for node, parent, _, detail in rows:
        depth[node] = depth.get(parent, -1) + 1
        lines.append("  " * depth[node] + detail)
    return "\n".join(lines)


def run(kind: str, sizes: list[int], workdir: Path) -> dict[str, Any]:
    """For each size: load time, rows, and the read timings (and PostgreSQL plans)."""
    results: dict[str, Any] = {}
    for size in sizes:
        with temporary(kind, workdir) as db:
            began = time.perf_counter()
            loaded = dataset.load(db, size, artifacts=ARTIFACTS_PER_BUILD, release=True)
            load_seconds = time.perf_counter() - began
            timings, plans = asyncio.run(_time_queries(db, size))
        results[str(size)] = {
            "builds": loaded.builds,
            "events": loaded.events,
            "artifacts": loaded.artifacts,
            "parents": loaded.parents,
            "channel_moves": loaded.channel_moves,
            "load_seconds": round(load_seconds, 1),
            "queries": timings,
            "plans": plans,
        }
    return results
