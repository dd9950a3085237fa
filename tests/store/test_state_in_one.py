"""PostgreSQL's state change and reset in one statement (``STATE_BY_ID``, ``RESET_BY_ID``, by name): a
change without an Idempotency-Key that the rules record is one grouped statement, its rule checked in SQL;
every other answer (a replay, a 409, a 404, a held row) is the one the way that reads the build first gives.

What must hold: the SQL guard is ``domain.moves_forward``, which is exactly when ``decide_state`` records a
change; the statement writes what the locking path writes (event, build, counters, audit row, outbox); a
forward change costs one round trip; the feed stays exact under concurrent changes of one build.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import datetime
from functools import partial
from typing import Any

import pytest
from tests.store.test_rules import CTX, create, state

from buildstate import domain
from buildstate.domain import EventType
from buildstate.errors import Conflict, NotFound
from buildstate.models import FailureReport, ResetRequest, StateChange
from buildstate.store import plan
from buildstate.store.postgres import PostgresStore
from buildstate.store.types import EventFilter
from buildstate.store.verify import verify

CODES = range(0, domain.MAX_STATE + 1, domain.STATE_STEP)


def test_the_guard_is_exactly_when_the_rules_record_a_change() -> None:
    """Every status, current code and new code: ``decide_state`` records a change iff ``moves_forward``
    (what the statement checks), and the change is the one the statement writes."""
    for status in (domain.RUNNING, domain.FAILED, domain.SUCCEEDED):
        for current in CODES:
            for code in CODES:
                build = domain.Current("b", current, status, 3, None)
                try:
                    change = domain.decide_state(build, code)
                except Conflict:
                    change = None
                assert (change is not None) == domain.moves_forward(status, current, code)
                if change is not None:
                    assert (change.state_code, change.status, change.attempt, change.from_state_code) == (
                        code,
                        domain.status_at(code),
                        3,
                        current,
                    )


def _count_round_trips(store: PostgresStore) -> list[int]:
    calls = [0]
    run = store.executor.run

    async def counting(work: Any) -> Any:
        calls[0] += 1
        return await run(work)

    store.executor.run = counting  # type: ignore[method-assign]
    return calls


async def _audit(store: PostgresStore) -> list[tuple[str, str, int]]:
    async with store.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT target, outcome, status_code FROM audit_log WHERE action = 'build.state' ORDER BY id"
        )
    return [(r["target"], r["outcome"], r["status_code"]) for r in rows]


@pytest.mark.parametrize("by", ["id", "build_id"])
async def test_a_forward_change_is_one_round_trip_and_writes_what_the_locking_path_writes(
    pg_store: PostgresStore, by: str
) -> None:
    made = await create(pg_store, "one-trip")
    ref = made["id"] if by == "id" else "one-trip"
    calls = _count_round_trips(pg_store)
    moved = await pg_store.record_state(ref, StateChange(state_code=25, message="step"), CTX)
    assert calls[0] == 1
    body = moved.build
    assert (body.state_code, body.status, body.attempt, body.message) == (25, "running", 1, "step")
    assert moved.appended and not moved.replayed and moved.status_code == 200
    event = body.event
    assert (event.type, event.from_state_code, event.state_code, event.actor) == ("state", 0, 25, "tester")
    assert event.seq == body.last_event_seq and event.duration_ms is not None
    assert body.updated_at == event.recorded_at and body.created_at == datetime.fromisoformat(
        made["created_at"]
    )
    stored = await pg_store.get_build(ref)
    assert stored.model_dump() == body.model_dump(exclude={"event", "replayed"})
    assert (await pg_store.history(ref)).events[-1] == event
    done = await pg_store.record_state(ref, StateChange(state_code=100), CTX)
    assert (done.build.status, done.build.event.from_state_code) == ("succeeded", 25)
    assert await _audit(pg_store) == [(ref, "allowed", 200)] * 2
    report = await verify(pg_store)
    assert report.ok, report.as_dict()


async def test_what_does_not_move_forward_is_answered_as_before(pg_store: PostgresStore) -> None:
    """A replay, each 409 and a 404 write nothing in the statement and get the answers (and audit rows)
    of the way that reads the build first."""
    ref = (await create(pg_store, "judged"))["id"]
    await state(pg_store, ref, 50)
    again = await pg_store.record_state(ref, StateChange(state_code=50), CTX)
    assert again.replayed and again.build.event.state_code == 50 and again.build.replayed
    with pytest.raises(Conflict) as back:
        await pg_store.record_state(ref, StateChange(state_code=10), CTX)
    assert back.value.type_slug == "state-regression"
    with pytest.raises(NotFound) as missing:
        await pg_store.record_state("no-such-build", StateChange(state_code=10), CTX)
    assert missing.value.type_slug == "build-not-found"
    await pg_store.record_failure(ref, FailureReport(error_message="boom"), CTX)
    with pytest.raises(Conflict) as failed:
        await pg_store.record_state(ref, StateChange(state_code=60), CTX)
    assert failed.value.type_slug == "build-failed"
    assert await _audit(pg_store) == [
        (ref, "allowed", 200),
        (ref, "replayed", 200),
        (ref, "refused", 409),
        ("no-such-build", "refused", 404),
        (ref, "refused", 409),
    ]
    assert [e.state_code for e in (await pg_store.history(ref)).events] == [0, 50, 50]


async def test_a_held_row_is_skipped_and_the_change_lands_once_it_is_free(pg_store: PostgresStore) -> None:
    ref = (await create(pg_store, "held-one"))["id"]
    holder = await pg_store.pool.acquire()
    transaction = holder.transaction()
    await transaction.start()
    try:
        await holder.execute("SELECT 1 FROM builds WHERE id = $1::uuid FOR UPDATE", ref)
        prepared = plan.prepare(StateChange(state_code=10))
        change = pg_store._in_one(
            pg_store._states, ref, CTX, EventType.STATE, prepared, 10, lambda b: plan.state(b, prepared)
        )
        skipped = await asyncio.wait_for(change, 10)
        assert skipped is None
    finally:
        await transaction.rollback()
        await pg_store.pool.release(holder)
    await state(pg_store, ref, 10)
    assert [e.state_code for e in (await pg_store.history(ref)).events] == [0, 10]


async def test_concurrent_changes_of_one_build_are_judged_one_after_the_other(
    pg_store: PostgresStore,
) -> None:
    """Changes of the same build in one group: each statement sees the ones before it in the group, so
    each is judged against the build as it then is; the feed and the counters stay exact."""
    refs = [(await create(pg_store, f"same-{n}"))["id"] for n in range(4)]
    codes = (10, 20, 30, 40, 50, 100)
    outcomes = await asyncio.gather(
        *(pg_store.record_state(r, StateChange(state_code=c), CTX) for r in refs for c in codes),
        return_exceptions=True,
    )
    assert all(not isinstance(o, Exception) or isinstance(o, Conflict) for o in outcomes), outcomes
    for ref in refs:
        history = (await pg_store.history(ref)).events
        moved = [e.state_code for e in history[1:]]
        assert moved == sorted(set(moved)) and moved, moved
        assert all(e.from_state_code == p.state_code for p, e in itertools.pairwise(history))
    events = (
        await pg_store.list_events(EventFilter(), after=0, before=None, limit=1000, newest_first=False)
    ).events
    seqs = [e.seq for e in events]
    assert seqs == sorted(set(seqs))
    report = await verify(pg_store)
    assert report.ok, report.as_dict()


async def test_a_reset_is_one_round_trip_and_answers_as_the_locking_path(pg_store: PostgresStore) -> None:
    made = await create(pg_store, "reset-one")
    ref = made["id"]
    await state(pg_store, ref, 40)
    await pg_store.record_failure(ref, FailureReport(error_message="boom", details={"a": 1}), CTX)
    calls = _count_round_trips(pg_store)
    reset = await pg_store.reset_build("reset-one", ResetRequest(reason="flaky"), CTX)
    assert calls[0] == 1
    body = reset.build
    assert (body.state_code, body.status, body.attempt, body.message, body.failure) == (
        0,
        "running",
        2,
        "flaky",
        None,
    )
    event = body.event
    assert (event.type, event.from_state_code, event.attempt, event.reason) == ("reset", 40, 2, "flaky")
    stored = await pg_store.get_build(ref)
    assert stored.model_dump() == body.model_dump(exclude={"event", "replayed"})
    assert (await pg_store.history(ref)).events[-1] == event
    with pytest.raises(NotFound):
        await pg_store.reset_build("no-such-build", ResetRequest(reason="x"), CTX)
    moved = await pg_store.record_state(ref, StateChange(state_code=5), CTX)
    assert (moved.build.attempt, moved.build.event.from_state_code) == (2, 0)
    async with pg_store.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT target, outcome, status_code FROM audit_log WHERE action = 'build.reset' ORDER BY id"
        )
    assert [(r["target"], r["outcome"], r["status_code"]) for r in rows] == [
        ("reset-one", "allowed", 200),
        ("no-such-build", "refused", 404),
    ]
    report = await verify(pg_store)
    assert report.ok, report.as_dict()


async def test_the_statement_writes_exactly_when_moves_forward_says(pg_store: PostgresStore) -> None:
    """The SQL guard itself, against builds running, succeeded and failed, for codes below, at and above
    theirs: the statement appends iff ``domain.moves_forward``; otherwise it writes nothing."""
    running = (await create(pg_store, "g-running"))["id"]
    await state(pg_store, running, 50)
    succeeded = (await create(pg_store, "g-succeeded"))["id"]
    await state(pg_store, succeeded, 100)
    failed = (await create(pg_store, "g-failed"))["id"]
    await state(pg_store, failed, 50)
    await pg_store.record_failure(failed, FailureReport(error_message="boom"), CTX)
    for ref in (running, succeeded, failed):
        for code in (45, 50, 55, 100):
            before = await pg_store.get_build(ref)
            prepared = plan.prepare(StateChange(state_code=code))
            done = await pg_store._in_one(
                pg_store._states,
                ref,
                CTX,
                EventType.STATE,
                prepared,
                code,
                partial(plan.state, prepared=prepared),
            )
            expected = domain.moves_forward(before.status, before.state_code, code)
            assert (done is not None) == expected, (before.status, before.state_code, code)
            after = await pg_store.get_build(ref)
            assert (after.last_event_seq != before.last_event_seq) == expected
    report = await verify(pg_store)
    assert report.ok, report.as_dict()
