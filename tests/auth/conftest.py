"""Fixtures for the auth tests, and a guard that no secret ever reaches a log record.

``no_secrets_in_logs`` runs around every test in this folder: it captures every record at DEBUG (before
any formatter could scrub it) and fails the test if a record holds an API key, a JWT, a test password or
the JWT secret.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from buildstate.auth import accounts
from buildstate.config import Settings
from buildstate.store import Store
from buildstate.store.types import WriteContext

PASSWORD = "correct horse battery staple"
OTHER_PASSWORD = "Tr0ub4dor&3-but-longer"
WRONG_PASSWORD = "not-the-password-at-all"
SECRET_PATTERNS = [
    re.compile(r"bs_[0-9a-f]{8}_[A-Za-z0-9_-]{43}"),  # an API key
    re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*"),  # a JWT
    *(re.compile(re.escape(s)) for s in (PASSWORD, OTHER_PASSWORD, WRONG_PASSWORD)),
]

UserMaker = Callable[..., Awaitable[str]]
SignIn = Callable[..., Awaitable[str]]


def leaked(text: str, patterns: list[re.Pattern[str]]) -> list[str]:
    return [match.group(0)[:16] + "..." for pattern in patterns for match in pattern.finditer(text)]


@pytest.fixture(autouse=True)
def no_secrets_in_logs(request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    patterns = list(SECRET_PATTERNS)
    if "settings" in request.fixturenames:  # the JWT secret of this test's app
        settings: Settings = request.getfixturevalue("settings")
        if settings.jwt_secret is not None:
            patterns.append(re.compile(re.escape(settings.jwt_secret.get_secret_value())))
    caplog.set_level("DEBUG")
    yield
    for record in [*caplog.get_records("setup"), *caplog.get_records("call"), *caplog.records]:
        text = f"{record.getMessage()} {record.exc_text or ''} {record.__dict__}"
        assert not leaked(text, patterns), (
            f"a secret reached the log via {record.name}: {leaked(text, patterns)}"
        )


@pytest.fixture
def make_user(store: Store) -> UserMaker:
    """``await make_user("alice", "operator", password=PASSWORD)``; returns the username."""

    async def make(username: str, role: str = "viewer", password: str = PASSWORD) -> str:
        user = await accounts.create_user(
            store, username=username, role=role, password=password, ctx=WriteContext(actor="test:conftest")
        )
        return user.username

    return make


@pytest.fixture
def sign_in(anon_client: TestClient[Any, Any]) -> SignIn:
    """``await sign_in("alice")``: a bearer token from POST /token (asserts it was issued)."""

    async def get(username: str, password: str = PASSWORD, **fields: str) -> str:
        response = await anon_client.post(
            "/token", json={"username": username, "password": password, **fields}
        )
        assert response.status == 200, await response.text()
        token: str = (await response.json())["access_token"]
        return token

    return get


@pytest.fixture
def password() -> str:
    """The password ``make_user`` gives unless told otherwise."""
    return PASSWORD


# ---------------------------------------------------------------- real server processes

SERVE = (
    "import sys; from aiohttp import web; from buildstate.web.app import create_app; "
    "web.run_app(create_app(), host='127.0.0.1', port=int(sys.argv[1]), print=None)"
)
Server = Callable[..., Awaitable[str]]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
async def serve(settings: Settings, tmp_path: Path) -> AsyncIterator[Server]:
    """``await serve(BUILDSTATE_X="...")``: a real server process on this test's database; its base URL.

    Each is a separate Python process (its own event loop, store pool and, without Redis, its own rate
    limits), like a gunicorn worker or another instance. All are stopped when the test ends.
    """
    processes: list[subprocess.Popen[bytes]] = []

    async def start(**env: str) -> str:
        port = _free_port()
        environment = {
            **os.environ,
            "BUILDSTATE_DATABASE_URL": settings.effective_database_url,
            "BUILDSTATE_DATA_DIR": str(tmp_path),
            "BUILDSTATE_JWT_SECRET": settings.jwt_secret.get_secret_value() if settings.jwt_secret else "",
            "BUILDSTATE_REDIS_URL": "",
            "BUILDSTATE_LOG_LEVEL": "WARNING",
            **env,
        }
        with (tmp_path / f"server-{port}.log").open("wb") as log:  # the child keeps its own descriptor
            process = subprocess.Popen(
                [sys.executable, "-c", SERVE, str(port)],
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        processes.append(process)
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            for _ in range(200):  # at most ~20 s
                if process.poll() is not None:
                    pytest.fail(f"server exited: {(tmp_path / f'server-{port}.log').read_text()[-2000:]}")
                try:
                    async with session.get(f"{url}/health") as response:
                        if response.status == 200:
                            return url
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.1)
        pytest.fail(f"server on {url} did not answer /health")

    yield start
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
