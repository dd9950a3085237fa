"""PostgreSQL's group commit of appends (``StatementGroup``): the appends without an Idempotency-Key that
one process has in flight at the same moment share one round trip, one transaction and one COMMIT.

What must hold: each run gets its own row back (or None), a refused statement fails alone, a group never
waits for a build row another transaction holds (it would hold the feed lock meanwhile: a deadlock), and
the feed stays gap-free (``tests/store/test_feed.py``'s late-commit test).
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any

import asyncpg
import pytest
from tests.store.test_rules import CTX, create, new_build, state

from buildstate.errors import Conflict
from buildstate.models import StateChange
from buildstate.store import plan, sql
from buildstate.store.postgres import _READ_BUILD, BUILD_ID_LOCK, PostgresStore
from buildstate.store.postgres_executor import StatementGroup
from buildstate.store.types import EventFilter
from buildstate.store.verify import verify


async def test_concurrent_runs_share_groups_and_each_gets_its_own_row(pg_store: PostgresStore) -> None:
    sizes: list[int] = []
    group = StatementGroup(pg_store.executor, "SELECT $2::int AS slot, $1::int * 10 AS x WHERE $1 % 3 <> 0")
    run = group._run

    async def counting(members: list[Any]) -> None:
        sizes.append(len(members))
        await run(members)

    group._run = counting  # type: ignore[method-assign]
    rows = await asyncio.gather(*(group.fetchrow(n) for n in range(40)))
    assert [None if r is None else r["x"] for r in rows] == [
        None if n % 3 == 0 else n * 10 for n in range(40)
    ]
    assert sum(sizes) == 40
    assert len(sizes) < 40 and max(sizes) > 1, sizes  # runs that arrived together went together


async def test_a_refused_statement_fails_alone(pg_store: PostgresStore) -> None:
    group = StatementGroup(pg_store.executor, "SELECT $2::int AS slot, 100 / $1::int AS x")
    outcomes = await asyncio.gather(*(group.fetchrow(n) for n in (5, 0, 20, 0, 50)), return_exceptions=True)
    assert [o if isinstance(o, Exception) else o["x"] for o in outcomes][::2] == [20, 5, 2]
    assert all(isinstance(o, asyncpg.DivisionByZeroError) for o in outcomes[1::2]), outcomes


async def test_a_refused_write_in_a_group_leaves_the_others_committed(pg_store: PostgresStore) -> None:
    """A statement that fails rolls its whole group back; the group's other appends are sent again alone
    and land once each."""
    group = StatementGroup(
        pg_store.executor,
        "WITH ins AS (INSERT INTO platforms (name) VALUES (NULLIF($1, 'bad')) RETURNING id)"
        " SELECT $2::int AS slot, ins.id FROM ins",
    )
    names = ["g-a", "bad", "g-b", "g-c"]
    outcomes = await asyncio.gather(*(group.fetchrow(n) for n in names), return_exceptions=True)
    assert isinstance(outcomes[1], asyncpg.NotNullViolationError)
    assert all(isinstance(o, asyncpg.Record) for i, o in enumerate(outcomes) if i != 1), outcomes
    async with pg_store.pool.acquire() as conn:
        landed = await conn.fetch("SELECT name FROM platforms WHERE name LIKE 'g-%' ORDER BY name")
    assert [r["name"] for r in landed] == ["g-a", "g-b", "g-c"]


async def test_an_append_skips_a_build_row_another_transaction_holds(pg_store: PostgresStore) -> None:
    """A transaction that holds a build's row (the locking path) may be waiting for the feed lock a group
    holds: the group's statement must not wait for that row, but append nothing and let the write take
    the locking path."""
    build_id = (await create(pg_store, "held"))["id"]
    async with pg_store.pool.acquire() as probe:
        row = await probe.fetchrow(_READ_BUILD.format(ref="b.build_id = $1"), "held")
    build = sql.decode_build(pg_store.executor.dialect, row)
    draft = plan.state(build, plan.prepare(StateChange(state_code=10)))
    assert draft is not None
    holder = await pg_store.pool.acquire()
    transaction = holder.transaction()
    await transaction.start()
    try:
        await holder.execute("SELECT 1 FROM builds WHERE id = $1 FOR UPDATE", build.id)
        skipped = await asyncio.wait_for(
            pg_store._append_if_current(
                row, build, draft, "tester", old_status=build.status, previous_at=None, audit=None
            ),
            10,
        )
        assert skipped is None
    finally:
        await transaction.rollback()
        await pg_store.pool.release(holder)
    # Through the store the same change lands once the row is free.
    await state(pg_store, build_id, 10)
    assert [e.state_code for e in (await pg_store.history(build_id)).events] == [0, 10]


async def test_grouped_appends_keep_the_feed_and_the_counters_exact(pg_store: PostgresStore) -> None:
    """Many builds moved at once by one process (so in shared groups), then again: one event each, seqs
    in commit order, and the maintained tables agree with the log."""
    ids = [(await create(pg_store, f"grp-{n}"))["id"] for n in range(24)]
    for code in (25, 100):
        await asyncio.gather(*(pg_store.record_state(b, StateChange(state_code=code), CTX) for b in ids))
    events = (
        await pg_store.list_events(EventFilter(), after=0, before=None, limit=1000, newest_first=False)
    ).events
    seqs = [e.seq for e in events]
    assert seqs == sorted(set(seqs)) and len(seqs) == 24 * 3
    report = await verify(pg_store)
    assert report.ok, report.as_dict()


async def test_creates_go_in_one_statement_and_repeats_still_answer_as_before(
    pg_store: PostgresStore,
) -> None:
    """Once platform, OS and image type are known, a create without an Idempotency-Key is one statement
    in a group; a build_id that exists (made earlier, or earlier in the same group) takes the locking
    path: a repeat is answered with the first event, a different build is a conflict."""
    sizes: list[int] = []
    run = pg_store._creates._run

    async def counting(members: list[Any]) -> None:
        sizes.append(len(members))
        await run(members)

    pg_store._creates._run = counting  # type: ignore[method-assign]
    for n in range(2):  # the first create adds the lookup rows, the second finds and keeps their ids
        await create(pg_store, f"warm-{n}")
    sizes.clear()
    made = await asyncio.gather(*(pg_store.create_build(new_build(f"one-{n}"), CTX) for n in range(16)))
    assert all(r.status_code == 201 and r.created for r in made)
    assert sum(sizes) == 16 and len(sizes) < 16, sizes
    twice = await asyncio.gather(
        pg_store.create_build(new_build("same"), CTX), pg_store.create_build(new_build("same"), CTX)
    )
    assert sorted(r.status_code for r in twice) == [200, 201]
    assert json.loads(twice[0].body)["id"] == json.loads(twice[1].body)["id"]
    with pytest.raises(Conflict):
        await pg_store.create_build(new_build("same", image_type="other"), CTX)
    body = json.loads(made[0].body)
    stored = await pg_store.get_build("one-0")
    assert body["id"] == str(stored.id) and body["last_event_seq"] == stored.last_event_seq
    assert datetime.fromisoformat(body["created_at"]) == stored.created_at
    history = await pg_store.history("one-0")
    assert [e.type for e in history.events] == ["created"]
    assert history.events[0].seq == stored.last_event_seq
    report = await verify(pg_store)
    assert report.ok, report.as_dict()


async def test_a_grouped_create_never_waits_for_a_build_id_a_locking_create_holds(
    pg_store: PostgresStore,
) -> None:
    """A create on the locking path takes the build_id's lock, then inserts the row, then waits for the
    feed lock. A grouped create of the same build_id holds the feed lock: waiting for that row would be
    a deadlock. It tries the build_id's lock instead and, refused, writes nothing."""
    for n in range(2):
        await create(pg_store, f"known-{n}")  # the lookup ids are known: the one-statement path is open
    holder = await pg_store.pool.acquire()
    transaction = holder.transaction()
    await transaction.start()
    try:
        await holder.execute(
            "SELECT pg_advisory_xact_lock($1::int, hashtext($2))", BUILD_ID_LOCK, "contended"
        )
        skipped = await asyncio.wait_for(
            pg_store._create_in_one(new_build("contended"), plan.prepare(new_build("contended")), CTX), 10
        )
        assert skipped is None
    finally:
        await transaction.rollback()
        await pg_store.pool.release(holder)
    made = await pg_store._create_in_one(new_build("contended"), plan.prepare(new_build("contended")), CTX)
    assert made is not None and made.status_code == 201  # the lock free: one statement
