"""docker-compose.sqlite.yml over docker-compose.yml: one API replica on SQLite, no PostgreSQL, the data on
the sqlite-data volume (it outlives the container), and ``down -v`` removes it."""

from __future__ import annotations

from pathlib import Path

import container_engine as engine
import pytest
from compose_stack import Stack
from tests.support import call

pytestmark = [pytest.mark.containers, pytest.mark.slow, pytest.mark.timeout(1800)]


def test_the_sqlite_override_runs_one_node_whose_data_outlives_its_container(
    images: dict[str, str], checkout: Path, token: str
) -> None:
    stack = Stack(
        f"buildstate-test-{token}-sqlite", checkout, ["docker-compose.yml", "docker-compose.sqlite.yml"]
    )
    try:
        stack.up(images)
        running = {c["Service"]: c for c in stack.containers()}
        assert sorted(running) == ["api", "nginx", "redis"]  # no postgres, no migrate
        assert all(c.get("Health") == "healthy" for c in running.values()), running
        assert (
            stack.containers("postgres", every=True) == [] and stack.containers("migrate", every=True) == []
        )
        report = {"up_wait_seconds": stack.up_seconds, "start_to_healthy_seconds": stack.healthy_seconds()}

        key = {"X-API-Key": stack.key("read", "write")}
        build = {"platform": "aws", "os_version": "rhel-9", "image_type": "base", "build_id": "sqlite-1"}
        assert call(f"{stack.url}/builds", "POST", build, key).status == 201
        assert call(f"{stack.url}/builds/sqlite-1/state", "POST", {"state_code": 100}, key).status == 200
        stored = stack.exec("api", "ls", "/var/lib/buildstate").split()
        assert "buildstate.db" in stored, stored

        # A new container (not a restart of the same one) finds the data on the volume.
        stack.compose("up", "-d", "--wait", "--wait-timeout", "180", "--force-recreate", "api", timeout=240)
        answer = call(f"{stack.url}/builds/sqlite-1", headers=key)
        assert (answer.status, answer.body["status"]) == (200, "succeeded")
        assert "volumes" in stack.leftovers()
        report["down_seconds"] = stack.down()
        assert stack.leftovers() == {}  # the sqlite-data volume too
        engine.REPORT["compose_sqlite"] = report
    finally:
        if stack.leftovers():
            stack.down()
