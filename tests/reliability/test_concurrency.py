"""Client processes racing on one service (real gunicorn, several workers), on both stores.

- Many transitions, failures and resets on one build: the history obeys the rules, the build row is its
  last event, and a reader paging the feed sees every event exactly once.
- The same build_id created by several processes at once: one row, one ``created`` event.
- One Idempotency-Key used by several processes at once: one effect, every answer the same.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

import pytest
from tests.reliability.conftest import Running, Starter
from tests.support import all_events, assert_valid_history, call, hammer, post_at

pytestmark = pytest.mark.slow

PROCESSES = 6
BUILD = {"platform": "gcp", "os_version": "ubuntu-24.04", "image_type": "base", "build_id": "race"}


@pytest.fixture(params=["sqlite", "postgresql"])
def running(request: pytest.FixtureRequest, start_service: Starter) -> Running:
    return start_service(request.param, workers=3)


def race(function: Callable[..., Any], *calls: tuple[Any, ...]) -> list[Any]:
    """Run each call in its own process (spawned: no state shared with this one)."""
    with ProcessPoolExecutor(len(calls), mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(function, *args) for args in calls]
        return [future.result(timeout=120) for future in futures]


def test_racing_transitions_failures_and_resets_keep_one_valid_history(running: Running) -> None:
    assert call(f"{running.url}/builds", "POST", BUILD, running.headers).status == 201
    results = race(hammer, *((running.url, running.headers, "race", seed, 50) for seed in range(PROCESSES)))
    statuses = [status for result in results for status in result]
    assert set(statuses) <= {200, 409}, statuses  # never a 5xx, never "database is locked"
    assert statuses.count(200) > len(statuses) // 10

    history = call(f"{running.url}/builds/race/history", headers=running.headers).body
    assert_valid_history(history)
    assert {e["type"] for e in history["events"]} == {"created", "state", "failure", "reset"}
    seqs = [e["seq"] for e in history["events"]]
    # Paging in small steps, as a slow reader would, sees each event once and none twice.
    feed, after = [], 0
    while True:
        page = call(f"{running.url}/events?after={after}&limit=7", headers=running.headers).body
        feed.extend(e["seq"] for e in page["events"])
        after = page["next_after"]
        if not page["has_more"]:
            break
    assert feed == seqs
    print(f"{len(statuses)} racing writes: {statuses.count(200)} x 200, {statuses.count(409)} x 409, "
          f"{len(seqs)} events")  # fmt: skip


def test_one_build_id_created_by_several_processes_at_once_is_one_build(running: Running) -> None:
    start_at = time.time() + 2  # every process fires at the same moment
    url = f"{running.url}/builds"
    same = race(post_at, *((start_at, url, BUILD, running.headers) for _ in range(PROCESSES)))
    assert sorted(status for status, _, _ in same) == [200] * (PROCESSES - 1) + [201], same
    assert len({body["id"] for _, body, _ in same}) == 1
    assert len({body["event"]["seq"] for _, body, _ in same}) == 1  # the one created event, every time

    start_at = time.time() + 2
    other = {**BUILD, "build_id": "race-2"}
    clash = [{**other, "image_type": f"type-{n}"} for n in range(PROCESSES)]
    mixed = race(post_at, *((start_at, url, body, running.headers) for body in clash))
    assert sorted(status for status, _, _ in mixed) == [201] + [409] * (PROCESSES - 1), mixed

    builds = call(f"{running.url}/builds?platform=gcp", headers=running.headers).body["builds"]
    assert sorted(b["build_id"] for b in builds) == ["race", "race-2"]
    events = all_events(running.url, running.headers, platform="gcp")
    assert sorted((e["type"], e["build"]["build_id"]) for e in events) == [
        ("created", "race"), ("created", "race-2"),
    ]  # fmt: skip


def test_one_idempotency_key_used_by_several_processes_at_once_has_one_effect(running: Running) -> None:
    assert call(f"{running.url}/builds", "POST", BUILD, running.headers).status == 201
    headers = {**running.headers, "Idempotency-Key": "deploy-42-step-3"}
    start_at = time.time() + 2
    url = f"{running.url}/builds/race/state"
    answers = race(post_at, *((start_at, url, {"state_code": 50}, headers) for _ in range(PROCESSES)))
    assert [status for status, _, _ in answers] == [200] * PROCESSES, answers
    assert sum(1 for _, _, replayed in answers if not replayed) == 1, answers
    assert len({body["event"]["seq"] for _, body, _ in answers}) == 1
    # The same key with another body is refused, even now that the first answer is stored.
    assert call(url, "POST", {"state_code": 55}, headers).status == 422

    start_at = time.time() + 2
    failure = {"error_message": "packer exited 1"}
    url = f"{running.url}/builds/race/failure"
    answers = race(post_at, *((start_at, url, failure, {**running.headers, "Idempotency-Key": "f-1"})
                              for _ in range(PROCESSES)))  # fmt: skip
    assert [status for status, _, _ in answers] == [200] * PROCESSES, answers
    events = call(f"{running.url}/builds/race/history", headers=running.headers).body["events"]
    assert [e["type"] for e in events] == ["created", "state", "failure"]
