"""Release writes racing from several OS processes, as gunicorn workers and instances do, on both stores:
assignments to one channel, assignments against revocations, scheduled revocations fired by every worker."""

from __future__ import annotations

import itertools
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.store.release_workers import BUCKET, work
from tests.store.test_release import events_of, no_drift, succeeded
from tests.store.test_rules import CTX

from buildstate.models import RevokeRequest
from buildstate.store import Store
from buildstate.store.types import EventFilter

PROCESSES = 8
ROUNDS = 50


def _race(url: str, jobs: list[tuple[str, list[str], int]]) -> list[list[str]]:
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, ProcessPoolExecutor(len(jobs), mp_context=context) as pool:
        start = manager.Event()
        futures = [pool.submit(work, url, start, job, seed) for seed, job in enumerate(jobs)]
        start.set()
        return [future.result(timeout=600) for future in futures]


def _walk(events: list[Any]) -> str | None:
    """The channel's head replayed from the feed, checking each move starts where the last one ended and
    never lands on a build that is revoked at that point; the final head."""
    head: str | None = None
    revoked: set[str] = set()
    for event in events:
        build = str(event.build.id)
        if event.type == "revoked":
            revoked.add(build)
        elif event.type == "restored":
            revoked.discard(build)
        else:
            assert event.detail["from"] == head, event
            head = event.detail["to"]
            assert head not in revoked, f"event {event.seq} makes revoked build {head} the head"
        if event.type != "revoked":
            assert head not in revoked, f"after event {event.seq} the head {head} is revoked"
    return head


async def test_concurrent_assignments_end_in_one_head_and_every_move_in_order(
    store: Store, database_url: str
) -> None:
    builds = [await succeeded(store, "base-1"), await succeeded(store, "base-2")]
    results = _race(database_url, [("assign", builds, ROUNDS)] * PROCESSES)
    moved = sum(r.count("moved") for r in results)
    assert moved + sum(r.count("replayed") for r in results) == PROCESSES * ROUNDS
    detail = await store.release.channel("production", BUCKET, 500)
    history = list(reversed(detail.history))
    assert len(history) == moved == detail.channel.moves
    for before, after in itertools.pairwise(history):
        assert before.to_build == after.from_build  # each move starts where the previous one ended
        assert before.id < after.id and before.event_seq < after.event_seq  # type: ignore[operator]
    assert detail.channel.head is not None and history[-1].to_build is not None
    assert detail.channel.head.id == history[-1].to_build.id
    events = await events_of(store, "channel")
    assert [e.seq for e in events] == [m.event_seq for m in history]
    assert _walk(events) == str(detail.channel.head.id)
    await no_drift(store)


async def test_an_assignment_racing_a_revocation_never_leaves_a_revoked_head(
    store: Store, database_url: str
) -> None:
    builds = [await succeeded(store, f"base-{n}") for n in range(3)]
    jobs = [("assign", builds, ROUNDS)] * (PROCESSES - 1) + [("revoke", builds[:2], ROUNDS // 2)]
    results = _race(database_url, jobs)
    assert results[-1].count("cycled") == ROUNDS // 2
    refused = sum(r.count("build-revoked") for r in results[:-1])
    assert (
        refused + sum(r.count("moved") + r.count("replayed") for r in results[:-1])
        == (PROCESSES - 1) * ROUNDS
    )
    page = await store.list_events(
        EventFilter(types=("channel", "revoked", "restored")),
        after=0,
        before=None,
        limit=10_000,
        newest_first=False,
    )
    head = _walk(page.events)
    detail = await store.release.channel("production", BUCKET, 1)
    assert (str(detail.channel.head.id) if detail.channel.head else None) == head
    if detail.channel.head is not None:
        assert await store.release.live_revocation(detail.channel.head.id) is None
    await no_drift(store)


async def test_a_scheduled_revocation_fires_once_across_workers_and_instances(
    store: Store, database_url: str
) -> None:
    base = await succeeded(store, "base-1")
    child = await succeeded(store, "hardened-1", image_type="hardened")
    await store.release.add_parents(child, [base], CTX)
    other = await succeeded(store, "base-2")
    at = datetime.now(UTC) + timedelta(seconds=1)
    for build in (base, other):
        await store.release.revoke(build, RevokeRequest(reason="end of life", at=at), CTX)
    results = _race(database_url, [("fire", [], 300)] * 6)
    assert sum(r.count("fired") for r in results) == 2  # both revocations, each in one process
    revoked = await events_of(store, "revoked")
    assert sorted(e.build.build_id for e in revoked) == ["base-1", "base-2", "hardened-1"]
    await no_drift(store)


async def test_build_writes_racing_revocations_of_the_same_builds_never_deadlock(
    store: Store, database_url: str
) -> None:
    """Resets (which lock the build row, then take the feed lock) against revocations and restores (which
    append several events under the feed lock): every write of both kinds completes."""
    builds = [await succeeded(store, f"base-{n}") for n in range(2)]
    child = await succeeded(store, "child-1", image_type="app")
    await store.release.add_parents(child, builds, CTX)
    jobs = [("churn", [*builds, child], ROUNDS)] * (PROCESSES - 2) + [("revoke", builds, ROUNDS // 2)] * 2
    results = _race(database_url, jobs)
    assert all(r == ["reset"] * ROUNDS for r in results[:-2]), results[:-2]
    assert all(len(r) == ROUNDS // 2 for r in results[-2:])  # cycled, or refused while the other held it
    await no_drift(store)
