"""Many writes of one process at once: each is judged alone, refusals leave no trace, retries replay.

On SQLite the writes that arrive while the writer thread is busy are committed as one group (one
transaction, a savepoint each); on PostgreSQL each is its own transaction on a pool connection. Either
way a refused write must not take its neighbours down with it, nor leave anything behind.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from tests.store.test_rules import CTX, create, state

from buildstate.errors import Conflict, NotFound, Problem
from buildstate.models import StateChange
from buildstate.store import Store, plan, sql
from buildstate.store.access import AuditFilter
from buildstate.store.postgres import _READ_BUILD, PostgresStore
from buildstate.store.postgres_executor import StatementGroup
from buildstate.store.sqlite import SQLiteStore
from buildstate.store.sqlite_executor import SqliteExecutor
from buildstate.store.types import Idempotency, WriteContext, WriteResult
from buildstate.store.verify import verify


async def no_drift(store: Store) -> None:
    """Whatever raced, the maintained tables still agree with the event log."""
    report = await verify(store)
    assert report.ok, report.as_dict()


@pytest.fixture
def group_sizes(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every group committed: by SQLite's writer thread, or PostgreSQL's groups of
    compare-and-set appends (the real methods still run)."""
    sizes: list[int] = []
    if isinstance(store, SQLiteStore):
        commit = SqliteExecutor._commit_group

        def counting(self: SqliteExecutor, group: list[Any]) -> None:
            sizes.append(len(group))
            commit(self, group)

        monkeypatch.setattr(SqliteExecutor, "_commit_group", counting)
    else:
        run = StatementGroup._run

        async def counting_pg(self: StatementGroup, group: list[Any]) -> None:
            sizes.append(len(group))
            await run(self, group)

        monkeypatch.setattr(StatementGroup, "_run", counting_pg)
    return sizes


async def test_refused_writes_among_concurrent_ones_roll_back_alone(
    store: Store, group_sizes: list[int]
) -> None:
    builds = [(await create(store, f"busy-{n}"))["id"] for n in range(8)]
    for build in builds:
        await state(store, build, 50)

    async def attempt(ref: str, code: int) -> WriteResult | Problem:
        try:
            return await store.record_state(ref, StateChange(state_code=code), CTX)
        except Problem as refused:
            return refused

    # Per build: a move forward, a move back (409), and a write to a build that does not exist (404).
    asks = [(b, 75) for b in builds] + [(b, 25) for b in builds] + [(f"missing-{n}", 10) for n in range(8)]
    outcomes = await asyncio.gather(*(attempt(ref, code) for ref, code in asks))

    forward, backward, missing = outcomes[:8], outcomes[8:16], outcomes[16:]
    assert all(isinstance(o, WriteResult) and o.status_code == 200 for o in forward), forward
    assert all(isinstance(o, Conflict) for o in backward), backward
    assert all(isinstance(o, NotFound) for o in missing), missing
    for build in builds:
        history = await store.history(build)
        assert [e.state_code for e in history.events] == [0, 50, 75]  # nothing of the refused writes
        assert (await store.get_build(build)).state_code == 75
    audit = await store.access.list_audit(AuditFilter(action="build.state", limit=1000))
    outcomes_seen = sorted(a.outcome for a in audit)
    assert outcomes_seen.count("refused") == 16
    assert outcomes_seen.count("allowed") == 16  # 8 moves to 50 earlier, 8 to 75 now
    assert max(group_sizes) > 1, group_sizes  # the writes did share commits
    await no_drift(store)


async def test_the_same_idempotency_key_twice_at_once_records_one_event(
    store: Store, group_sizes: list[int]
) -> None:
    build = (await create(store, "twice"))["id"]
    idem = Idempotency.for_request("tester", "retry-1", "POST", "/s", b'{"state_code": 10}')
    ctx = WriteContext(actor="tester", idem=idem)
    first, second = await asyncio.gather(
        store.record_state(build, StateChange(state_code=10), ctx),
        store.record_state(build, StateChange(state_code=10), ctx),
    )
    assert sorted([first.replayed, second.replayed]) == [False, True]
    assert json.loads(first.body) == json.loads(second.body)
    history = await store.history(build)
    assert [e.state_code for e in history.events] == [0, 10]
    await no_drift(store)


async def test_many_concurrent_transitions_each_get_their_own_event(
    store: Store, group_sizes: list[int]
) -> None:
    builds = [(await create(store, f"many-{n}"))["id"] for n in range(20)]
    results = await asyncio.gather(
        *(store.record_state(b, StateChange(state_code=code), CTX) for code in (10, 10) for b in builds)
    )
    seqs = [json.loads(r.body)["event"]["seq"] for r in results]
    # The second write of each build names the current state again: it answers the first one's event.
    assert len(set(seqs)) == 20
    for build in builds:
        assert [e.state_code for e in (await store.history(build)).events] == [0, 10]
    await no_drift(store)


async def test_postgresql_compare_and_set_append_refuses_a_build_that_moved_on(pg_url: str) -> None:
    """The append of a write without an Idempotency-Key is conditional on the build not having moved
    since its rules were checked; when it has, nothing at all is written (the write then goes the
    locking way and is judged again)."""
    store = PostgresStore(pg_url)
    await store.open()
    try:
        await _compare_and_set_refuses_a_moved_build(store)
    finally:
        await store.close()


async def _compare_and_set_refuses_a_moved_build(store: PostgresStore) -> None:
    build_id = (await create(store, "raced"))["id"]
    await state(store, build_id, 10)
    async with store.pool.acquire() as conn:
        row = await conn.fetchrow(_READ_BUILD.format(ref="b.build_id = $1"), "raced")
    stale = sql.decode_build(store.executor.dialect, row)
    await state(store, build_id, 25)  # another write gets there first
    draft = plan.state(stale, plan.prepare(StateChange(state_code=50)))
    assert draft is not None
    before = await store.max_seq()
    lost = await store._append_if_current(
        row, stale, draft, "tester", old_status=stale.status, previous_at=stale.updated_at, audit=None
    )
    assert lost is None
    assert await store.max_seq() == before  # no event, no seq drawn
    assert (await store.get_build(build_id)).state_code == 25
    # Through the store the same change still lands, judged against the build as it is now.
    done = await store.record_state(build_id, StateChange(state_code=50), CTX)
    assert json.loads(done.body)["event"]["from_state_code"] == 25
    assert [e.state_code for e in (await store.history(build_id)).events] == [0, 10, 25, 50]


async def test_a_grouped_write_whose_body_returns_nothing_is_acknowledged(store: Store) -> None:
    """SQLite's group commit set a write's result only when it was not None: such a write never returned."""
    if not isinstance(store, SQLiteStore):
        pytest.skip("the group commit is SQLite's")
    done = await asyncio.wait_for(store.executor.grouped(lambda conn: None), 10)
    assert done is None
    both = await asyncio.wait_for(
        asyncio.gather(store.executor.grouped(lambda conn: None), store.executor.grouped(lambda conn: 7)), 10
    )
    assert both == [None, 7]
