"""An open ``/events/stream`` honours revocation, on both stores: it checks its credential again every
``BUILDSTATE_STREAM_RECHECK_SECONDS`` (here 0.2 s) and ends with a final ``end`` event that says why.

Each stream is read from one app while the credential is withdrawn through another app on the same
database, as another worker or instance would: nothing in the streaming process hears of the change.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import jwt
import pytest
from aiohttp.test_utils import TestClient
from tests.conftest import PG_ADMIN, TEST_JWT_SECRET, ClientMaker, KeyMaker, make_settings

from buildstate.auth import accounts
from buildstate.auth.scopes import ROLE_SCOPES
from buildstate.auth.tokens import LEEWAY_SECONDS
from buildstate.config import Settings
from buildstate.store import Store, create_store
from buildstate.store.sql import Params
from buildstate.store.types import WriteContext
from buildstate.web.app import create_app
from buildstate.webhooks import cli

Client = TestClient[Any, Any]
BUILD = {"platform": "aws", "os_version": "rhel-9", "image_type": "base", "build_id": "revoked-1"}
TAIL_ARGS = argparse.Namespace(json=True, count=None, retry_seconds=0.0)
PASSWORD = "a long enough password for tests"
CTX = WriteContext(actor="test:revocation")


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path, stream_recheck_seconds=0.2, stream_heartbeat_seconds=0.3)


@pytest.fixture
async def admin(make_client: ClientMaker, admin_key: str) -> Client:
    """Another app on the same database, where the admin withdraws credentials."""
    return await make_client(headers={"X-API-Key": admin_key})


async def messages(response: Any, seconds: float) -> list[dict[str, str]]:
    """Every SSE message until the stream closes (or ``seconds`` pass); heartbeats are left out."""
    found: list[dict[str, str]] = []
    current: dict[str, str] = {}

    async def pump() -> None:
        nonlocal current
        while line := await response.content.readline():
            text = line.decode().rstrip("\r\n")
            if text == "":
                if current:
                    found.append(current)
                current = {}
            elif not text.startswith(":"):
                name, _, value = text.partition(":")
                current[name] = value.removeprefix(" ")

    try:
        await asyncio.wait_for(pump(), seconds)
    except TimeoutError:
        found.append({"event": "(still open)"})
    return found


async def follow(
    stream_client: Client, headers: dict[str, str], admin: Client, withdraw: Any
) -> dict[str, Any]:
    """Open a stream, see one event through it, withdraw the credential, then read until it closes:
    returns the final event's data, after checking nothing else came after the withdrawal."""
    stream = await stream_client.get("/events/stream", headers=headers)
    assert stream.status == 200
    assert (await admin.post("/builds/revoked-1/state", json={"state_code": 5})).status == 200
    first = await messages_until(stream, 1)
    assert [m.get("event") for m in first] == ["state"]
    await asyncio.sleep(0.5)  # a few re-check periods: a good credential keeps its stream
    await withdraw()
    started = time.monotonic()
    rest = await messages(stream, 5)
    assert time.monotonic() - started < 3, "the stream outlived its credential"
    assert [m.get("event") for m in rest] == ["end"], rest
    assert "id" not in rest[0]  # not an event of the feed: Last-Event-ID stays where it was
    assert (await admin.post("/builds/revoked-1/state", json={"state_code": 10})).status == 200
    final: dict[str, Any] = json.loads(rest[0]["data"])
    return final


async def messages_until(response: Any, count: int) -> list[dict[str, str]]:
    found: list[dict[str, str]] = []
    current: dict[str, str] = {}
    async with asyncio.timeout(5):
        while len(found) < count:
            text = (await response.content.readline()).decode().rstrip("\r\n")
            if text == "" and current:
                found.append(current)
                current = {}
            elif text and not text.startswith(":"):
                name, _, value = text.partition(":")
                current[name] = value.removeprefix(" ")
    return found


async def test_a_revoked_key_ends_its_stream(anon_client: Client, admin: Client, make_key: KeyMaker) -> None:
    key = await make_key("read")
    assert (await admin.post("/builds", json=BUILD)).status == 201

    async def revoke() -> None:
        assert (await admin.post(f"/admin/keys/{key[:11]}/revoke")).status == 200

    final = await follow(anon_client, {"X-API-Key": key}, admin, revoke)
    assert final == {"reason": "key-revoked", "detail": f"the API key {key[:11]} has been revoked"}


async def test_nothing_recorded_after_a_revocation_reaches_a_stream_between_its_periodic_checks(
    make_client: ClientMaker, settings: Settings, admin: Client, make_key: KeyMaker
) -> None:
    """With a long period the stream sent events recorded after the revocation until the next periodic
    check; before sending, a check older than a second is made again."""
    key = await make_key("read")
    slow = await make_client(settings.model_copy(update={"stream_recheck_seconds": 60.0}))
    assert (await admin.post("/builds", json=BUILD)).status == 201
    stream = await slow.get("/events/stream", headers={"X-API-Key": key})
    assert stream.status == 200
    assert (await admin.post("/builds/revoked-1/state", json={"state_code": 5})).status == 200
    assert [m.get("event") for m in await messages_until(stream, 1)] == ["state"]
    await asyncio.sleep(1.2)  # the last check is now older than a second, far younger than the period
    assert (await admin.post(f"/admin/keys/{key[:11]}/revoke")).status == 200
    assert (await admin.post("/builds/revoked-1/state", json={"state_code": 10})).status == 200
    rest = await messages(stream, 5)
    assert [m.get("event") for m in rest] == ["end"], rest
    assert json.loads(rest[0]["data"])["reason"] == "key-revoked"


async def test_an_expired_key_ends_its_stream(
    anon_client: Client, admin: Client, make_key: KeyMaker, store: Store
) -> None:
    key = await make_key("read", expires_in_days=1)
    assert (await admin.post("/builds", json=BUILD)).status == 201

    async def expire() -> None:  # a day is long to wait: move the expiry to a second ago
        p = Params(store.executor.dialect)
        past = p.time(datetime.now(UTC) - timedelta(seconds=1))
        await store.executor.run_batch(
            [(f"UPDATE api_keys SET expires_at = {past} WHERE prefix = {p(key[:11])}", p.values)]
        )

    final = await follow(anon_client, {"X-API-Key": key}, admin, expire)
    assert final["reason"] == "key-expired"


async def _signed_in(anon_client: Client, store: Store, role: str = "viewer") -> dict[str, str]:
    await accounts.create_user(store, username="carol", role=role, password=PASSWORD, ctx=CTX)
    answer = await anon_client.post("/token", json={"username": "carol", "password": PASSWORD})
    return {"Authorization": f"Bearer {(await answer.json())['access_token']}"}


async def test_disabling_the_user_ends_their_stream(anon_client: Client, admin: Client, store: Store) -> None:
    bearer = await _signed_in(anon_client, store)
    assert (await admin.post("/builds", json=BUILD)).status == 201

    async def disable() -> None:
        assert (await admin.post("/admin/users/carol/disable")).status == 200

    assert (await follow(anon_client, bearer, admin, disable))["reason"] == "user-disabled"


async def test_a_password_change_ends_the_streams_of_older_tokens(
    anon_client: Client, admin: Client, store: Store
) -> None:
    bearer = await _signed_in(anon_client, store)
    assert (await admin.post("/builds", json=BUILD)).status == 201

    async def change() -> None:
        answer = await admin.post("/admin/users/carol/password", json={"password": "another long password"})
        assert answer.status == 200

    assert (await follow(anon_client, bearer, admin, change))["reason"] == "token-withdrawn"


async def test_a_token_that_expires_ends_its_stream(anon_client: Client, admin: Client, store: Store) -> None:
    user = await accounts.create_user(store, username="dave", role="viewer", password=PASSWORD, ctx=CTX)
    now = int(time.time())
    # Valid for two or three more seconds, counting the leeway the service allows for clock skew (one second
    # was flaky under load: int() can leave it almost none, and the stream must open and see one event first).
    claims = {"iss": "buildstate", "aud": "buildstate", "sub": "dave", "iat": now - 60,
              "exp": now - LEEWAY_SECONDS + 3, "scope": "read", "ver": user.token_version}  # fmt: skip
    bearer = {"Authorization": f"Bearer {jwt.encode(claims, TEST_JWT_SECRET, algorithm='HS256')}"}
    assert (await admin.post("/builds", json=BUILD)).status == 201

    async def run_out() -> None:
        await asyncio.sleep(max(0.0, now + 3.2 - time.time()))

    assert (await follow(anon_client, bearer, admin, run_out))["reason"] == "token-expired"


async def test_a_role_that_loses_read_ends_the_stream(
    anon_client: Client, admin: Client, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No role lacks 'read' today; a role cut down below it (as the token's scopes are, on every request)
    must end the stream all the same."""
    bearer = await _signed_in(anon_client, store)
    assert (await admin.post("/builds", json=BUILD)).status == 201

    async def lower() -> None:
        monkeypatch.setitem(ROLE_SCOPES, "viewer", frozenset())

    final = await follow(anon_client, bearer, admin, lower)
    assert final == {"reason": "missing-scope", "detail": "this credential no longer has the 'read' scope"}


async def test_events_tail_stops_with_the_reason_instead_of_reconnecting(
    anon_client: Client, admin: Client, make_key: KeyMaker, capsys: pytest.CaptureFixture[str]
) -> None:
    key = await make_key("read")
    assert (await admin.post("/builds", json=BUILD)).status == 201
    url = str(anon_client.make_url("")).rstrip("/")
    tail = asyncio.create_task(cli._tail(url, {"X-API-Key": key}, {"after": "0"}, TAIL_ARGS))
    await asyncio.sleep(0.5)
    assert (await admin.post(f"/admin/keys/{key[:11]}/revoke")).status == 200
    assert await asyncio.wait_for(tail, 5) == 1
    out, err = capsys.readouterr()
    assert [json.loads(line)["type"] for line in out.splitlines()] == ["created"]
    assert err.splitlines()[-1] == f"buildstate: stream ended: the API key {key[:11]} has been revoked"


async def _allow_connections(database: str, *, allowed: bool) -> None:
    conn = await asyncpg.connect(PG_ADMIN, timeout=5)
    try:
        await conn.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS {str(allowed).lower()}')
        if not allowed:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", database
            )
    finally:
        await conn.close()


async def test_a_stream_whose_database_goes_away_ends_cleanly_and_resumes(
    pg_url: str, tmp_path: Path, aiohttp_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL only: SQLite's file cannot go away under a live process (tests/reliability says why).
    A database that refuses connections (here: ALLOW_CONNECTIONS false, as for too many clients) was a 500
    with a traceback, and a stream whose read failed stayed open without a byte until the client's read
    timed out; now requests are 503s, the stream ends at once, and the client resumes where it stopped."""
    settings = make_settings(pg_url, tmp_path, stream_recheck_seconds=0.2, stream_heartbeat_seconds=0.3,
                             db_timeout_seconds=1, webhook_dispatcher=False)  # fmt: skip
    keys = create_store(settings)
    await keys.open()
    try:
        key, _ = await accounts.create_api_key(
            keys, name="t", scopes=("read", "write"), platforms=None, expires_in_days=None, ctx=CTX
        )
    finally:
        await keys.close()
    client = await aiohttp_client(create_app(settings), headers={"X-API-Key": key})
    assert (await client.post("/builds", json=BUILD)).status == 201
    stream = await client.get("/events/stream?after=0")
    [created] = await messages_until(stream, 1)
    database = pg_url.rsplit("/", 1)[1]
    await _allow_connections(database, allowed=False)
    try:
        assert await messages(stream, 5) == []  # it ended (no "(still open)"), and sent nothing more
        refused = await client.get("/builds")  # and a request meanwhile is a 503, not a 500
        assert (refused.status, refused.content_type) == (503, "application/problem+json")
    finally:
        await _allow_connections(database, allowed=True)
    ours = [r for r in caplog.records if r.name.startswith(("buildstate", "aiohttp"))]  # not asyncpg's pool
    assert [r.getMessage() for r in ours if r.exc_info or r.levelno >= logging.ERROR] == []
    assert (await client.post("/builds/revoked-1/state", json={"state_code": 5})).status == 200
    again = await client.get("/events/stream", headers={"Last-Event-ID": created["id"]})
    [resumed] = await messages_until(again, 1)
    assert json.loads(resumed["data"])["state_code"] == 5
