"""Read paths against data size: 10k, 100k, 1M builds of history (about 8 events each) in either store.

Each size gets a fresh database, loaded by ``bench.dataset``; then the store's own read methods are timed
(median of repeated calls after a warm-up, decoding included, bounded in count and time):

``feed``       a Concourse check near the head of the feed: ``after`` = 2000 events back, filtered by
               platform, OS and image type (one resource), limit 1000
``feed_page``  an unfiltered page of 100 from the middle of the feed (a consumer catching up)
``list``       the build list filtered by platform and status, newest first, limit 50
``summary``    the dashboard summary (counts, matrix, failure groups, step durations)

On PostgreSQL the plans come with them (``EXPLAIN (ANALYZE, BUFFERS)``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from bench import dataset
from bench.db import Database, temporary
from bench.store_ceiling import percentile
from buildstate.store import sql
from buildstate.store.types import BuildFilter, EventFilter

REPEATS = 15
MAX_SECONDS_PER_QUERY = 20.0


def _store(db: Database) -> Any:
    if db.is_pg:
        from buildstate.store.postgres import PostgresStore  # noqa: PLC0415

        return PostgresStore(db.url)
    from buildstate.store.sqlite import SQLiteStore  # noqa: PLC0415

    return SQLiteStore(db.sqlite_path)


def _queries(head: int) -> dict[str, tuple[Callable[[Any], Awaitable[Any]], Callable[[sql.Params], str]]]:
    check = EventFilter(platform="aws", os_version="ubuntu-22.04", image_type="cis")
    after = max(0, head - 2000)
    middle = head // 2
    listing = BuildFilter(platform="azure", status="failed")
    return {
        "feed": (
            lambda s: s.list_events(check, after=after, before=None, limit=1000, newest_first=False),
            lambda p: sql.event_list_query(
                p, check, after=after, before=None, limit=1001, newest_first=False
            ),
        ),
        "feed_page": (
            lambda s: s.list_events(EventFilter(), after=middle, before=None, limit=100, newest_first=False),
            lambda p: sql.event_list_query(
                p, EventFilter(), after=middle, before=None, limit=101, newest_first=False
            ),
        ),
        "list": (
            lambda s: s.list_builds(listing, 50, None),
            lambda p: sql.build_list_query(p, listing, 51, None),
        ),
        "summary": (lambda s: s.summary(168), _summary_sql),
    }


def _summary_sql(p: sql.Params) -> str:
    """The summary's queries that can grow with the data (status_counts is three rows)."""
    from buildstate.store.builds import STEP_SAMPLES  # noqa: PLC0415 - the store's own query

    since = datetime.now(UTC) - timedelta(hours=168)
    return ";".join(
        [
            sql.MATRIX_QUERY,
            sql.MATRIX_ARTIFACTS_QUERY,
            sql.MATRIX_REVOCATIONS_QUERY,
            sql.failure_groups_query(p, since),
            STEP_SAMPLES,
        ]
    )


async def _time_queries(db: Database) -> tuple[dict[str, Any], dict[str, str]]:
    store = _store(db)
    await store.open()
    timings: dict[str, Any] = {}
    plans: dict[str, str] = {}
    try:
        head = await store.max_seq()
        for name, (call, build_sql) in _queries(head).items():
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
            if db.is_pg:
                plans[name] = await _explain(db, build_sql)
    finally:
        await store.close()
    return timings, plans


async def _explain(db: Database, build_sql: Callable[[sql.Params], str]) -> str:
    p = sql.Params(sql.PostgresDialect())
    queries = build_sql(p).split(";")
    conn = await asyncpg.connect(db.url)
    plans = []
    try:
        for query in queries:
            used = [v for i, v in enumerate(p.values, 1) if f"${i}" in query]
            renumbered = query
            for new, (old, _) in enumerate(
                ((i, v) for i, v in enumerate(p.values, 1) if f"${i}" in query), 1
            ):
                renumbered = renumbered.replace(f"${old}", f"${new}")
            rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {renumbered}", *used)
            plans.append("\n".join(r[0] for r in rows))
    finally:
        await conn.close()
    return "\n\n".join(plans)


def run(kind: str, sizes: list[int], workdir: Path) -> dict[str, Any]:
    """For each size: load time, rows, and the read timings (and PostgreSQL plans)."""
    results: dict[str, Any] = {}
    for size in sizes:
        with temporary(kind, workdir) as db:
            began = time.perf_counter()
            loaded = dataset.load(db, size)
            load_seconds = time.perf_counter() - began
            timings, plans = asyncio.run(_time_queries(db))
        results[str(size)] = {
            "builds": loaded.builds,
            "events": loaded.events,
            "load_seconds": round(load_seconds, 1),
            "queries": timings,
            "plans": plans,
        }
    return results
