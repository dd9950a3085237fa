"""A real service for the fuzzing and hostile-input tests, on PostgreSQL (the stricter store: no NUL in
text, 64-bit integers), started once per module with an admin key made by the CLI."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.conftest import _pg_url, pg_admin
from tests.support import ServiceProcess, admin_key, assert_no_drift, clean_env


@dataclass(frozen=True)
class Live:
    url: str
    headers: dict[str, str]
    env: dict[str, str]
    log: Path


@pytest.fixture(scope="module")
def live_service(tmp_path_factory: pytest.TempPathFactory, pg_template: str) -> Iterator[Live]:
    name = f"bs_sec_{os.getpid()}_{secrets.token_hex(4)}"
    pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    data = tmp_path_factory.mktemp("security-service")
    env = clean_env(
        data,
        _pg_url(name),
        BUILDSTATE_LOG_FORMAT="json",
        BUILDSTATE_LOG_LEVEL="DEBUG",
        BUILDSTATE_RATE_LIMIT_BURST="1000000",
        BUILDSTATE_RATE_LIMIT_PER_SECOND="1000000",
        # Webhooks may only target this machine, and nothing is delivered: fuzzed URLs go nowhere.
        BUILDSTATE_WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
        BUILDSTATE_WEBHOOK_DISPATCHER="false",
    )
    service = ServiceProcess(env, data / "serve.log", workers=2).start()
    try:
        yield Live(service.url, {"X-API-Key": admin_key(env)}, env, service.log)
        service.stop()
        assert_no_drift(env)  # after every fuzzed and hostile request of the module
    finally:
        service.stop()
        pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
