"""The README's run command as a user runs it: real gunicorn, several workers, curl, client processes."""

from __future__ import annotations

import json
import random
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pytest
from tests.support import ServiceProcess, admin_key, clean_env

pytestmark = pytest.mark.slow


@dataclass
class Served:
    url: str
    headers: dict[str, str]
    output: Path


@pytest.fixture(params=["sqlite", "postgresql"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    database_url = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
    env = clean_env(tmp_path / "data", database_url)
    service = ServiceProcess(env, tmp_path / "serve.log", workers=3).start()
    try:
        yield Served(service.url, {"X-API-Key": admin_key(env)}, service.log)
    finally:
        service.stop()


def curl(served: Served, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    command = ["curl", "-sS", "-X", method, f"{served.url}{path}", "-w", "\n%{http_code}"]
    for name, value in served.headers.items():
        command += ["-H", f"{name}: {value}"]
    if body is not None:
        command += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=30).stdout
    text, _, status = out.rpartition("\n")
    return int(status), json.loads(text) if text else None


def test_readme_command_prints_the_url_and_serves_the_seed_flow_with_curl(served: Served) -> None:
    banner = served.output.read_text()
    assert f"on {served.url} with 3 workers" in banner
    status, build = curl(
        served, "POST", "/builds",
        {"platform": "aws", "os_version": "rhel-8.8", "image_type": "base", "build_id": "rhel-8.8-base-17"},
    )  # fmt: skip
    assert status == 201
    uuid = build["id"]
    for code in (10, 25, 50, 75, 100):
        status, body = curl(
            served, "POST", f"/builds/{uuid}/state", {"state_code": code, "message": f"{code}"}
        )
        assert (status, body["state_code"]) == (200, code)
    status, body = curl(served, "POST", f"/builds/{uuid}/reset", {"reason": "rebuild"})
    assert (status, body["attempt"]) == (200, 2)
    failure = {"error_message": "Pipeline failed", "error_code": "PIPELINE_FAILURE", "component": "concourse",
               "details": {"stage": "packer-build", "exit_code": 1}}  # fmt: skip
    status, body = curl(served, "POST", f"/builds/{uuid}/failure", failure)
    assert (status, body["status"]) == (200, "failed")
    status, state = curl(served, "GET", f"/builds/{uuid}/state")
    assert (status, state["status"], state["state_code"], state["attempt"]) == (200, "failed", 0, 2)


# ---------------------------------------------------------------- several client processes


def _hammer(url: str, headers: dict[str, str], build: str, seed: int, count: int) -> list[int]:
    """One client process: a random mix of transitions, failures and resets on the same build."""
    rng = random.Random(seed)
    statuses = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.75:
            path, body = "state", {"state_code": rng.randrange(5, 101, 5)}
        elif roll < 0.9:
            path, body = "failure", {"error_message": f"boom {rng.randrange(3)}", "component": "packer"}
        else:
            path, body = "reset", {"reason": "retry"}
        request = urllib.request.Request(
            f"{url}/builds/{build}/{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", **headers},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                statuses.append(response.status)
        except urllib.error.HTTPError as error:
            statuses.append(error.code)
    return statuses


def _get(served: Served, path: str) -> Any:
    request = urllib.request.Request(f"{served.url}{path}", headers=served.headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_concurrent_changes_on_one_build_from_several_processes_keep_history_consistent(
    served: Served,
) -> None:
    status, _ = curl(
        served, "POST", "/builds",
        {"platform": "gcp", "os_version": "ubuntu-24.04", "image_type": "base", "build_id": "race"},
    )  # fmt: skip
    assert status == 201
    with ProcessPoolExecutor(4, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_hammer, served.url, served.headers, "race", s, 60) for s in range(4)]
        results = [future.result(timeout=300) for future in futures]
    statuses = [s for r in results for s in r]
    assert set(statuses) <= {200, 409}, statuses  # never a 5xx, never "database is locked"
    assert statuses.count(200) > 0

    history = _get(served, "/builds/race/history")
    events = history["events"]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs))
    attempt, code, failed = 1, 0, False
    for event in events[1:]:
        if event["type"] == "reset":
            assert event["attempt"] == attempt + 1
            attempt, code, failed = event["attempt"], 0, False
        elif event["type"] == "failure":
            assert not failed
            assert (event["attempt"], event["state_code"]) == (attempt, code)
            failed = True
        else:
            assert not failed, "a transition was recorded on a failed build"
            assert event["attempt"] == attempt
            assert event["state_code"] > code, "state moved backwards within an attempt"
            assert code != 100, "a transition was recorded after success"
            code = event["state_code"]
        assert event["status"] == ("failed" if failed else "succeeded" if code == 100 else "running")
    last = events[-1]
    row = history["build"]
    assert (row["state_code"], row["status"], row["attempt"], row["last_event_seq"]) == (
        last["state_code"], last["status"], last["attempt"], last["seq"],
    )  # fmt: skip
    feed, after = [], 0
    for _ in range(100):
        page = _get(served, f"/events?build_id=race&after={after}&limit=100")
        feed.extend(e["seq"] for e in page["events"])
        after = page["next_after"]
        if not page["has_more"]:
            break
    assert feed == seqs
