"""The README's run command as a user runs it: real gunicorn, several workers, curl."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
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


# Racing client processes on one build: tests/reliability/test_concurrency.py.
