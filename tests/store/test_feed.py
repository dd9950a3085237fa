"""The event feed: order, filters, paging, and the guarantee that a reader never skips an event."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import asyncpg
import pytest
from tests.store.test_rules import CTX, create, state

from buildstate.models import FailureReport, ResetRequest, StateChange
from buildstate.store import Store, sql
from buildstate.store.postgres import PostgresStore
from buildstate.store.types import EventFilter

ALL = EventFilter()


async def feed(store: Store, where: EventFilter = ALL, after: int = 0, limit: int = 1000) -> list[Any]:
    page = await store.list_events(where, after=after, before=None, limit=limit, newest_first=False)
    return page.events


async def seed(store: Store) -> dict[str, dict[str, Any]]:
    builds = {
        "aws-1": await create(store, "aws-1", platform="aws"),
        "azure-1": await create(store, "azure-1", platform="azure", os_version="ubuntu-22.04"),
        "aws-2": await create(store, "aws-2", platform="aws", image_type="cis"),
    }
    await state(store, "aws-1", 50)
    await state(store, "azure-1", 100)
    await store.record_failure("aws-2", FailureReport(error_message="x", component="ansible"), CTX)
    await store.reset_build("aws-2", ResetRequest(reason="retry"), CTX)
    await state(store, "aws-1", 100)
    return builds


async def test_feed_is_ordered_by_strictly_increasing_seq(store: Store) -> None:
    await seed(store)
    events = await feed(store)
    seqs = [e.seq for e in events]
    assert seqs == sorted(set(seqs))
    assert len(events) == 8
    assert [e.type for e in events] == [
        "created", "created", "created", "state", "state", "failure", "reset", "state",
    ]  # fmt: skip
    assert all(events[i].recorded_at <= events[i + 1].recorded_at for i in range(len(events) - 1))


async def test_feed_filters(store: Store) -> None:
    await seed(store)

    async def pick(**where: Any) -> list[tuple[str, str, int]]:
        return [(e.build.build_id, e.type, e.state_code) for e in await feed(store, EventFilter(**where))]

    assert await pick(platform="aws", types=("state",)) == [("aws-1", "state", 50), ("aws-1", "state", 100)]
    assert await pick(states=(100,)) == [("azure-1", "state", 100), ("aws-1", "state", 100)]
    assert await pick(states=("succeeded",)) == await pick(states=(100,))
    assert await pick(states=("failed", "reset")) == [("aws-2", "failure", 0), ("aws-2", "reset", 0)]
    assert await pick(states=(0,)) == [
        ("aws-1", "created", 0),
        ("azure-1", "created", 0),
        ("aws-2", "created", 0),
    ]
    assert await pick(build_id="azure-1") == [("azure-1", "created", 0), ("azure-1", "state", 100)]
    assert await pick(image_type="cis", status="running") == [("aws-2", "created", 0), ("aws-2", "reset", 0)]
    assert await pick(os_version="ubuntu-22.04", min_state=50) == [("azure-1", "state", 100)]
    assert await pick(platform="gcp") == []
    assert await pick(build_id="no-such-build") == []


async def test_feed_pages_forward_and_backward(store: Store) -> None:
    await seed(store)
    everything = [e.seq for e in await feed(store)]
    collected, after = [], 0
    while True:
        page = await store.list_events(ALL, after=after, before=None, limit=3, newest_first=False)
        collected.extend(e.seq for e in page.events)
        after = page.next_after
        if not page.has_more:
            break
    assert collected == everything
    newest = await store.list_events(ALL, after=0, before=None, limit=1, newest_first=True)
    assert [e.seq for e in newest.events] == [everything[-1]]
    older = await store.list_events(ALL, after=0, before=everything[-1], limit=2, newest_first=True)
    assert [e.seq for e in older.events] == everything[-3:-1][::-1]
    one = await store.get_event(everything[3])
    assert one.seq == everything[3]
    assert one.build.build_id == "aws-1"


async def test_a_polling_reader_sees_every_event_exactly_once_under_concurrent_writes(store: Store) -> None:
    """Many writers on many builds; a reader paging with ``after`` all along must collect the full feed."""
    ids = [(await create(store, f"b-{i}"))["id"] for i in range(6)]
    rng = random.Random(7)

    async def writer(build_id: str) -> None:
        for code in range(5, 101, 5):
            await store.record_state(build_id, StateChange(state_code=code), CTX)
            await asyncio.sleep(rng.random() / 500)

    seen: list[int] = []
    done = asyncio.Event()

    async def reader() -> None:
        after = 0
        for _ in range(10_000):  # bounded: far more polls than the writers need
            events = await feed(store, after=after, limit=50)
            seen.extend(e.seq for e in events)
            after = events[-1].seq if events else after
            if done.is_set() and not events:
                return
            await asyncio.sleep(0.001)

    polling = asyncio.create_task(reader())
    await asyncio.gather(*(writer(i) for i in ids))
    done.set()
    await asyncio.wait_for(polling, 60)
    full = [e.seq for e in await feed(store, limit=1000)]
    assert len(full) == 6 * 21
    assert seen == full  # nothing skipped, nothing twice, in order


# ---------------------------------------------------------------- PostgreSQL late commits


@pytest.fixture
async def pg_store(pg_url: str) -> Any:
    store = PostgresStore(pg_url, min_size=1, max_size=4)
    await store.open()
    yield store
    await store.close()


async def test_reader_never_skips_an_event_whose_writer_commits_late(pg_store: PostgresStore) -> None:
    """Writer A appends and keeps its transaction open; writer B appends after it. The reader must not see
    B's event before A's, or a cursor past B would skip A forever."""
    slow = await create(pg_store, "slow")
    fast = await create(pg_store, "fast")
    cursor = (await feed(pg_store))[-1].seq

    conn = await pg_store.pool.acquire()
    transaction = conn.transaction()
    await transaction.start()
    try:
        row = await pg_store._lock_build(conn, slow["id"])
        build = sql.decode_build(sql.PostgresDialect(), row)
        from buildstate.store import plan

        draft = plan.state(build, plan.prepare(StateChange(state_code=10)))
        assert draft is not None
        await pg_store._append_event(conn, row, build, draft, "slow", old_status="running", previous_at=None)

        quick = asyncio.create_task(pg_store.record_state(fast["id"], StateChange(state_code=10), CTX))
        await asyncio.sleep(0.5)
        assert not quick.done(), "B must wait for A's commit before drawing its seq"
        assert await feed(pg_store, after=cursor) == []  # nothing half-visible
    finally:
        await transaction.commit()
        await pg_store.pool.release(conn)

    await asyncio.wait_for(quick, 10)
    events = await feed(pg_store, after=cursor)
    assert [e.build.build_id for e in events] == ["slow", "fast"]
    assert events[0].seq < events[1].seq


async def test_without_the_feed_lock_postgres_would_expose_a_gap(pg_url: str) -> None:
    """The hazard the lock exists for, shown on a bare sequence: a later value commits first."""
    first = await asyncpg.connect(pg_url)
    second = await asyncpg.connect(pg_url)
    try:
        await first.execute("CREATE TABLE probe (seq bigint PRIMARY KEY)")
        await first.execute("CREATE SEQUENCE probe_seq")
        a = first.transaction()
        await a.start()
        early = await first.fetchval("INSERT INTO probe SELECT nextval('probe_seq') RETURNING seq")
        late = await second.fetchval("INSERT INTO probe SELECT nextval('probe_seq') RETURNING seq")
        visible = [r["seq"] for r in await second.fetch("SELECT seq FROM probe ORDER BY seq")]
        assert early < late
        assert visible == [late]  # a reader would move its cursor past `early` here
        await a.commit()
    finally:
        await first.close()
        await second.close()
