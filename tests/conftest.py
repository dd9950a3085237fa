"""Fixtures shared by every test: real databases (SQLite and PostgreSQL), a store, an app client.

PostgreSQL: one migrated template database per test session, and a fresh copy of it per test
(``CREATE DATABASE ... TEMPLATE``, ~50 ms), so no test sees another's rows or an earlier run's.
Set ``BUILDSTATE_TEST_PG`` to point elsewhere than ``postgresql://postgres@127.0.0.1:5432/postgres``.
Locally an unreachable server skips the PostgreSQL cases with the reason; under CI (``CI`` set) it fails.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from buildstate.auth import accounts
from buildstate.config import Settings
from buildstate.store import Store, create_store, migrate
from buildstate.store.types import WriteContext
from buildstate.web.app import create_app

_XDG_HOME = pytest.StashKey[tuple[str, str | None]]()


def pytest_configure(config: pytest.Config) -> None:
    """Nothing a test runs may reach the user's own default store (``~/.local/share/buildstate``): every
    process the tests start inherits a data home of their own, removed at the end."""
    home = tempfile.mkdtemp(prefix="buildstate-test-xdg-")
    config.stash[_XDG_HOME] = (home, os.environ.get("XDG_DATA_HOME"))
    os.environ["XDG_DATA_HOME"] = home


def pytest_unconfigure(config: pytest.Config) -> None:
    home, before = config.stash[_XDG_HOME]
    shutil.rmtree(home, ignore_errors=True)
    if before is None:
        os.environ.pop("XDG_DATA_HOME", None)
    else:
        os.environ["XDG_DATA_HOME"] = before


PG_ADMIN = os.environ.get("BUILDSTATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
STORES = ["sqlite", "postgresql"]


def _pg_url(database: str) -> str:
    base, _, _ = PG_ADMIN.rpartition("/")
    return f"{base}/{database}"


async def _admin(*statements: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN, timeout=5)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def pg_admin(*statements: str) -> None:
    asyncio.run(_admin(*statements))


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    try:
        pg_admin("SELECT 1")
    except (OSError, asyncpg.PostgresError) as exc:
        reason = f"PostgreSQL not reachable at {PG_ADMIN}: {exc}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    name = f"bs_tpl_{os.getpid()}_{secrets.token_hex(3)}"
    pg_admin(f'CREATE DATABASE "{name}"')
    try:
        migrate(Settings(database_url=_pg_url(name)))
        yield name
    finally:
        pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url(pg_template: str) -> Iterator[str]:
    name = f"bs_t_{os.getpid()}_{secrets.token_hex(4)}"
    pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    try:
        yield _pg_url(name)
    finally:
        pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'buildstate.db'}"
    migrate(Settings(database_url=url))
    return url


@pytest.fixture(params=STORES)
def database_url(request: pytest.FixtureRequest) -> str:
    """Every test that uses this runs once per store."""
    url: str = request.getfixturevalue("pg_url" if request.param == "postgresql" else "sqlite_url")
    return url


# Tests sign tokens with a fixed secret and never share rate limits through Redis unless they ask to; the
# request bucket is large so that tests making many calls never meet a 429 they did not set up.
TEST_JWT_SECRET = "test-only-secret-0123456789abcdef0123456789abcdef"


def make_settings(database_url: str, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "jwt_secret": TEST_JWT_SECRET,
        "redis_url": None,
        "rate_limit_burst": 1_000_000,
        "rate_limit_per_second": 1_000_000.0,
    }
    values.update(overrides)
    return Settings(database_url=database_url, data_dir=data_dir, **values)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path)


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    opened = create_store(settings)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


KeyMaker = Callable[..., Awaitable[str]]
ClientMaker = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def make_key(store: Store) -> KeyMaker:
    """``await make_key("read", "write", platforms=["aws"], expires_in_days=None)``: a new API key."""

    async def make(
        *scopes: str,
        platforms: list[str] | None = None,
        expires_in_days: int | None = None,
        name: str = "test",
    ) -> str:
        key, _ = await accounts.create_api_key(
            store,
            name=name,
            scopes=scopes or ("admin",),
            platforms=platforms,
            expires_in_days=expires_in_days,
            ctx=WriteContext(actor="test:conftest"),
        )
        return key

    return make


@pytest.fixture
async def admin_key(make_key: KeyMaker) -> str:
    return await make_key("admin", name="conftest admin")


@pytest.fixture
async def make_client(settings: Settings, aiohttp_client: Any) -> ClientMaker:
    """``await make_client(headers={...})``: a client of a fresh app on this test's database.

    ``settings`` comes first on purpose: fixtures are torn down in reverse order, so the apps (closed by
    ``aiohttp_client``) shut their connection pools before the test database is dropped.
    """

    async def make(settings_: Settings | None = None, **kwargs: Any) -> TestClient[Any, Any]:
        made: TestClient[Any, Any] = await aiohttp_client(create_app(settings_ or settings), **kwargs)
        return made

    return make


@pytest.fixture
async def client(make_client: ClientMaker, admin_key: str) -> TestClient[Any, Any]:
    """A client that sends an admin API key (``X-API-Key``) with every request."""
    return await make_client(headers={"X-API-Key": admin_key})


@pytest.fixture
async def anon_client(make_client: ClientMaker) -> TestClient[Any, Any]:
    """A client that sends no credential."""
    return await make_client()
