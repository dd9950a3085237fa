"""Fixtures for the resource tests: a real buildstate service, a scripted fake, a private CA.

The real service is started once per test session exactly as an operator would
(``buildstate serve`` on SQLite, migrations run by ``serve``); each test isolates its data by
using its own platform slug and build ids, so tests never see each other's events.
"""

from __future__ import annotations

import json
import subprocess
import sys
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
from tests.support import CLI, ServiceProcess, clean_env

SERVICE_START_SECONDS = 60


@pytest.fixture(scope="session")
def service_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of the session's service: a fresh SQLite database in its own directory."""
    workdir = tmp_path_factory.mktemp("service")
    # The tests seed thousands of events through one key: lift the per-key rate limit out of the way.
    return clean_env(
        workdir,
        f"sqlite:///{workdir / 'db.sqlite'}",
        BUILDSTATE_RATE_LIMIT_PER_SECOND="100000",
        BUILDSTATE_RATE_LIMIT_BURST="100000",
    )


@pytest.fixture(scope="session")
def api_key(service_env: dict[str, str]) -> str:
    """A real pipeline key (read, write), minted with the CLI as an operator would; every test passes it
    in ``source.api_key`` and expects never to see it in a log."""
    created = subprocess.run(
        [CLI, "keys", "create", "--name", "resource-tests", "--scope", "read", "--scope", "write"],
        env=service_env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return created.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def release_key(service_env: dict[str, str]) -> str:
    """A key with the ``release`` scope (revoke, restore, assign channels), as a promotion job holds."""
    created = subprocess.run(
        [CLI, "keys", "create", "--name", "resource-release", "--scope", "release"],
        env=service_env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return created.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def service_url(service_env: dict[str, str], api_key: str) -> Iterator[str]:
    """A real ``buildstate serve`` with one worker on the session's database."""
    log = Path(service_env["BUILDSTATE_DATA_DIR"]) / "serve.log"
    service = ServiceProcess(service_env, log, workers=1).start(timeout=SERVICE_START_SECONDS)
    try:
        yield service.url
    finally:
        service.stop()


@pytest.fixture
def platform() -> str:
    """A platform slug of this test's own, so filters isolate its events from other tests'."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def source(service_url: str, api_key: str, platform: str) -> dict[str, Any]:
    return {"url": service_url, "api_key": api_key, "platform": platform}


Api = Callable[..., Any]


def _caller(service_url: str, key: str) -> Api:
    def call(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            service_url + path,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "X-API-Key": key},
            method=method,
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    return call


@pytest.fixture
def api(service_url: str, api_key: str) -> Api:
    """Call the service directly (to set up data faster than through the scripts)."""
    return _caller(service_url, api_key)


@pytest.fixture
def release_api(service_url: str, release_key: str) -> Api:
    """Call the service with the ``release`` key."""
    return _caller(service_url, release_key)


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
