"""Fixtures for the resource tests: a real buildstate service, a scripted fake, a private CA.

The real service is started once per test session exactly as an operator would
(``buildstate serve`` on SQLite, migrations run by ``serve``); each test isolates its data by
using its own platform slug and build ids, so tests never see each other's events.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# pytest runs with --import-mode=importlib, which puts no test folder on sys.path; the helper
# modules beside this file (uniquely named, so they shadow nothing) are imported by the tests.
sys.path.insert(0, str(Path(__file__).parent))

from resource_fake_server import FakeServer  # needs the path above

SERVICE_START_SECONDS = 60


@pytest.fixture(scope="session")
def api_key() -> str:
    """The key every test passes in ``source.api_key`` and expects never to see in a log.

    The service does not enforce keys yet; when auth lands, mint a real key here (or supply one
    in BUILDSTATE_TEST_API_KEY) and every test keeps working unchanged.
    """
    return os.environ.get("BUILDSTATE_TEST_API_KEY") or "bs_test_resource_key_0123456789abcdef"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_until_ready(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + SERVICE_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"buildstate serve exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"buildstate serve was not ready in {SERVICE_START_SECONDS}s:\n{log_path.read_text()}")


@pytest.fixture(scope="session")
def service_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``buildstate serve`` with one worker on a fresh SQLite database."""
    workdir = tmp_path_factory.mktemp("service")
    port = _free_port()
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("BUILDSTATE_")},
        "BUILDSTATE_DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite'}",
        "BUILDSTATE_DATA_DIR": str(workdir),
    }
    log_path = workdir / "serve.log"
    command = [
        str(Path(sys.executable).parent / "buildstate"),
        "serve",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "1",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_ready(url, process, log_path)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def platform() -> str:
    """A platform slug of this test's own, so filters isolate its events from other tests'."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def source(service_url: str, api_key: str, platform: str) -> dict[str, Any]:
    return {"url": service_url, "api_key": api_key, "platform": platform}


Api = Callable[..., Any]


@pytest.fixture
def api(service_url: str, api_key: str) -> Api:
    """Call the service directly (to set up data faster than through the scripts)."""

    def call(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            service_url + path,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "X-API-Key": api_key},
            method=method,
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    return call


@pytest.fixture
def new_build(api: Api, platform: str) -> Callable[..., dict[str, Any]]:
    """Create a build on this test's platform and return it (with its ``created`` event)."""

    def create(build_id: str | None = None, **fields: str) -> dict[str, Any]:
        body = {
            "platform": platform,
            "os_version": "rhel-8.8",
            "image_type": "base",
            "build_id": build_id or f"{platform}-{uuid.uuid4().hex[:8]}",
            **fields,
        }
        build: dict[str, Any] = api("POST", "/builds", body)
        return build

    return create


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    with FakeServer() as server:
        yield server
