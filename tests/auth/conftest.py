"""Fixtures for the auth tests, and a guard that no secret ever reaches a log record.

``no_secrets_in_logs`` runs around every test in this folder: it captures every record at DEBUG (before
any formatter could scrub it) and fails the test if a record holds an API key, a JWT, a test password or
the JWT secret.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from buildstate.auth import accounts
from buildstate.config import Settings
from buildstate.store import Store
from buildstate.store.base import WriteContext

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
    for record in caplog.records:
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
