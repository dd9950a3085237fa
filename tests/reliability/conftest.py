"""Real services for the fault tests: ``scripts/serve`` on a store of the test's choice, stopped at the end.

Each test gets fresh data (a new SQLite file, or a new PostgreSQL database from the session's template)
and an admin key made with the CLI, as an operator would. The services log JSON, so tests can read which
process answered what.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.conftest import _pg_url, pg_admin
from tests.support import ServiceProcess, admin_key, assert_no_drift, clean_env


@dataclass
class Running:
    service: ServiceProcess
    headers: dict[str, str]
    env: dict[str, str]

    @property
    def url(self) -> str:
        return self.service.url

    @property
    def master(self) -> int:
        assert self.service.process is not None
        return self.service.process.pid


Starter = Callable[..., Running]


@pytest.fixture
def start_service(request: pytest.FixtureRequest, tmp_path: Path) -> Starter:
    """``start_service("postgresql", workers=2, BUILDSTATE_DB_TIMEOUT_SECONDS="2")``; for SQLite the database
    is ``<data dir>/buildstate.db`` unless ``database_url`` names another file.

    Once the test is done and the service stopped, ``buildstate verify`` must find no drift in its
    database (``verify_at_end=False`` for a database that is gone by then: check it in the test)."""
    started: list[ServiceProcess] = []

    def start(
        store: str,
        workers: int = 2,
        database_url: str | None = None,
        *,
        verify_at_end: bool = True,
        **settings: str,
    ) -> Running:
        data = tmp_path / f"data-{len(started)}"
        if store == "postgresql" and database_url is None:
            # A database of this fixture's own (not pg_url's), so that it is dropped only after the
            # finalizers below have stopped the service and verified what it wrote.
            template = request.getfixturevalue("pg_template")
            name = f"bs_rel_{os.getpid()}_{secrets.token_hex(4)}"
            pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
            request.addfinalizer(lambda: pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            database_url = _pg_url(name)
        env = clean_env(
            data,
            database_url,
            BUILDSTATE_LOG_FORMAT="json",
            BUILDSTATE_RATE_LIMIT_BURST="1000000",
            BUILDSTATE_RATE_LIMIT_PER_SECOND="1000000",
            BUILDSTATE_WEBHOOK_DISPATCHER="false",
            **settings,
        )
        service = ServiceProcess(env, data / "serve.log", workers=workers)
        data.mkdir(parents=True, exist_ok=True)
        started.append(service.start())
        # Finalizers run last-in, first-out: the service stops, then verify reads its database, then the
        # database made above is dropped.
        if verify_at_end:
            request.addfinalizer(lambda: assert_no_drift(env))
        request.addfinalizer(service.stop)
        return Running(service, {"X-API-Key": admin_key(env)}, env)

    return start
