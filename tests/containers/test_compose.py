"""docker-compose.yml for real: postgres, migrate, 3 api replicas, redis and nginx come up healthy; the
README's first steps work through nginx; ``--scale api=5`` and back to 3, and a killed replica, under a
steady write load lose no acknowledged write; ``down -v`` leaves nothing behind.

The tests of this module run in order on one project. The only port is nginx's, published on 127.0.0.1.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import container_engine as engine
import pytest
from compose_stack import Stack
from tests.support import WriteLoad, assert_every_ack_is_stored, call, wait_for

pytestmark = [pytest.mark.containers, pytest.mark.slow, pytest.mark.timeout(1800)]

FENCE = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)
# The load's pipelines share a key: lift the per-key rate limit out of its way, through .env like any setting.
UNLIMITED = {"BUILDSTATE_RATE_LIMIT_PER_SECOND": "100000", "BUILDSTATE_RATE_LIMIT_BURST": "100000"}


@pytest.fixture(scope="module")
def stack(images: dict[str, str], checkout: Path, token: str) -> Iterator[Stack]:
    project = Stack(f"buildstate-test-{token}", checkout, ["docker-compose.yml"])
    try:
        project.up(images, **UNLIMITED)
        engine.REPORT["compose_postgres"] = {"up_wait_seconds": project.up_seconds}
        yield project
    finally:
        if project.leftovers():
            logs = project.compose("logs", "--tail", "30", check=False, timeout=60)
            print(logs.stdout[-8000:])
            project.down()


def healthy(stack: Stack, service: str) -> list[dict[str, Any]]:
    return [c for c in stack.containers(service) if c["State"] == "running" and c.get("Health") == "healthy"]


def test_up_wait_brings_every_service_up_healthy_with_three_api_replicas(stack: Stack) -> None:
    assert len(healthy(stack, "api")) == 3
    for service in ("postgres", "redis", "nginx"):
        assert len(healthy(stack, service)) == 1, stack.containers(service)
    [migrate] = stack.containers("migrate", every=True)
    assert (migrate["State"], migrate["ExitCode"]) == ("exited", 0)
    assert stack.containers("resource", every=True) == []  # built with the rest, never run
    # The one published port: nginx's, on loopback only.
    published = [p for c in stack.containers() for p in c.get("Publishers") or [] if p.get("PublishedPort")]
    assert [(p["URL"], p["PublishedPort"], p["TargetPort"]) for p in published] == [
        ("127.0.0.1", stack.port, 8080)
    ]
    engine.REPORT["compose_postgres"]["start_to_healthy_seconds"] = stack.healthy_seconds()


def test_the_readme_first_steps_work_through_nginx(stack: Stack) -> None:
    """The README's blocks as written, but the CLI is the image's (``docker compose exec``) and the URL
    nginx's, as docs/operations.md tells an operator of the compose stack."""
    blocks = FENCE.findall((stack.directory / "README.md").read_text())
    cli = f"docker compose -p {stack.name} exec -T api buildstate"
    script = "\n".join(["set -euo pipefail", *blocks[1:3]])
    script = script.replace(".venv/bin/buildstate", cli).replace("http://127.0.0.1:8080", stack.url)
    # The README's blocks are picked by position: if they change, fail here rather than call port 8080.
    assert stack.url in script and "127.0.0.1:8080" not in script and cli in script, script
    ran = subprocess.run(
        ["bash", "-c", script], cwd=stack.directory, capture_output=True, text=True, timeout=180, check=False
    )
    assert ran.returncode == 0, f"stdout:\n{ran.stdout}\nstderr:\n{ran.stderr}"
    assert "created user alice (operator)" in ran.stdout
    counts = json.loads(ran.stdout[ran.stdout.index("{") :])
    assert counts["succeeded"] == 1 and counts["running"] == 0, counts


def nginx_state(stack: Stack) -> tuple[str, int]:
    [nginx] = stack.containers("nginx")
    state = json.loads(engine.docker("inspect", "--format", "{{json .}}", nginx["Name"]).stdout)
    return state["State"]["StartedAt"], state["RestartCount"]


def served_requests(container: str, since: str) -> int:
    """Requests a replica logged (one JSON line each, with its route) since an RFC 3339 time."""
    logs = engine.docker("logs", "--since", since, container, check=False).stderr
    return logs.count('"route": ')


def test_scaling_to_five_and_back_to_three_and_a_killed_replica_lose_no_acknowledged_write(
    stack: Stack,
) -> None:
    writer = {"X-API-Key": stack.key("read", "write", name="load")}
    reader = {"X-API-Key": stack.key("read", name="checker")}
    nginx_before = nginx_state(stack)
    times: dict[str, float] = {}
    # Three pipelines, one request in flight each, never retried: every failure shows, every 2xx is a promise.
    load = WriteLoad(stack.url, writer, clients=3, platform="compose-scale", limit=20_000, timeout=30)
    with load:
        wait_for(lambda: len(load.acks) >= 30, 30, "the load to start")

        started = time.monotonic()
        since = engine.docker("info", "--format", "{{json .SystemTime}}").stdout.strip().strip('"')
        stack.compose("up", "-d", "--wait", "--wait-timeout", "180", "--scale", "api=5", timeout=240)
        times["scale_to_5_seconds"] = time.monotonic() - started
        replicas = healthy(stack, "api")
        assert len(replicas) == 5
        # nginx re-resolves `api` every 10 s: the new replicas get requests without a reload.
        new = [c["Name"] for c in replicas if c["Name"].endswith(("-api-4", "-api-5"))]
        assert len(new) == 2, [c["Name"] for c in replicas]
        wait_for(
            lambda: all(served_requests(name, since) > 0 for name in new), 40, "nginx to use the new replicas"
        )
        times["nginx_follows_seconds"] = time.monotonic() - started

        victim = next(c["Name"] for c in replicas if c["Name"].endswith("-api-2"))
        acks_before_kill = len(load.acks)
        killed_at = time.monotonic()
        engine.docker("kill", victim)  # SIGKILL: a crash, requests on it cut mid-way
        wait_for(lambda: len(load.acks) >= acks_before_kill + 60, 60, "the load to go on past the crash")

        started = time.monotonic()
        stack.compose("up", "-d", "--wait", "--wait-timeout", "180", "--scale", "api=3", timeout=240)
        times["scale_to_3_seconds"] = time.monotonic() - started
        acks_after_scale = len(load.acks)
        wait_for(lambda: len(load.acks) >= acks_after_scale + 30, 30, "the load to go on at three replicas")
    stopped = time.monotonic()

    assert not any(thread.is_alive() for thread in load._threads)
    assert len(healthy(stack, "api")) == 3
    assert nginx_state(stack) == nginx_before  # never restarted or reloaded
    stored = assert_every_ack_is_stored(load, stack.url, reader)  # none lost, none changed
    # Only what a crash and a scale-down may cost: a request in flight on the killed replica (502 from nginx,
    # which never re-sends a POST), at most one per pipeline each time.
    assert {failure.what for failure in load.failures} <= {"502", "504", "RemoteDisconnected"}, load.failures
    assert len(load.failures) <= 2 * load.clients, load.failures
    assert load.acked_between(killed_at, stopped) > 0
    verified = json.loads(stack.exec("api", "buildstate", "verify", "--json"))
    assert verified["ok"], verified
    engine.REPORT["compose_scale"] = {
        **{name: round(seconds, 1) for name, seconds in times.items()},
        "acknowledged_writes": len(load.acks),
        "stored_events": len(stored),
        "failed_requests": [failure.what for failure in load.failures],
    }


def test_down_v_removes_every_container_volume_and_network(stack: Stack) -> None:
    assert "volumes" in stack.leftovers()  # postgres-data, before
    engine.REPORT["compose_postgres"]["down_seconds"] = stack.down()
    assert stack.leftovers() == {}
    with pytest.raises(OSError):  # nothing listens on the port any more
        call(f"{stack.url}/health", timeout=2)
