"""BUILDSTATE_KEY_CACHE_SECONDS: off by default (revocation holds at once, see test_keys.py); when set, a
worker keeps a key's row that long, so a revoked key works on there until the row is read again."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from buildstate.auth import keys
from buildstate.auth.service import build_authenticator
from buildstate.config import Settings
from buildstate.store import Store
from buildstate.store.access import NewApiKey
from buildstate.store.types import WriteContext

CTX = WriteContext(actor="test:cache")


async def cached_client(
    make_client: Any, settings: Settings, seconds: float, key: str
) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = await make_client(
        settings.model_copy(update={"key_cache_seconds": seconds}), headers={"X-API-Key": key}
    )
    return client


async def test_the_cache_is_off_unless_configured(settings: Settings) -> None:
    assert settings.key_cache_seconds == 0


async def test_a_cached_key_row_outlives_its_revocation_until_it_expires(
    make_client: Any, settings: Settings, make_key: Any, store: Store
) -> None:
    key = await make_key("read")
    worker = await cached_client(make_client, settings, 60, key)
    assert (await worker.get("/builds")).status == 200
    await store.access.revoke_key(key[:11], CTX)
    assert (await worker.get("/builds")).status == 200  # the row read a moment ago is still trusted
    fresh = await cached_client(make_client, settings, 60, key)
    assert (await fresh.get("/builds")).status == 401  # a worker that reads the row now refuses it

    short = await cached_client(make_client, settings, 0.001, key)
    assert (await short.get("/builds")).status == 401


async def test_an_unknown_key_is_not_cached_so_a_new_key_works_at_once(
    make_client: Any, settings: Settings, store: Store
) -> None:
    new = keys.generate()
    worker = await cached_client(make_client, settings, 60, new.key)
    assert (await worker.get("/builds")).status == 401
    await store.access.create_key(
        NewApiKey(prefix=new.public_id, key_hash=new.digest, name="late", scopes=("read",), platforms=None,
                  expires_at=None),
        CTX,
    )  # fmt: skip
    assert (await worker.get("/builds")).status == 200


async def test_a_wrong_secret_is_refused_even_when_the_row_is_cached(
    make_client: Any, settings: Settings, make_key: Any
) -> None:
    key = await make_key("read")
    worker = await cached_client(make_client, settings, 60, key)
    assert (await worker.get("/builds")).status == 200
    forged = key[:12] + ("A" if key[12] != "A" else "B") + key[13:]
    assert (await worker.get("/builds", headers={"X-API-Key": forged})).status == 401


async def test_a_cached_key_stops_working_when_it_expires(
    make_client: Any, settings: Settings, store: Store
) -> None:
    new = keys.generate()
    expires = datetime.now(UTC) + timedelta(seconds=1)
    await store.access.create_key(
        NewApiKey(prefix=new.public_id, key_hash=new.digest, name="brief", scopes=("read",), platforms=None,
                  expires_at=expires),
        CTX,
    )  # fmt: skip
    worker = await cached_client(make_client, settings, 60, new.key)
    assert (await worker.get("/builds")).status == 200
    assert (await worker.get("/builds")).status == 200  # from the cache
    await asyncio.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.1)
    refused = await worker.get("/builds")
    assert refused.status == 401  # the cache never outlives the key's own expiry
    assert (await refused.json())["type"].endswith("/key-expired")


async def test_requests_that_find_the_row_stale_together_share_one_read(
    settings: Settings, store: Store, make_key: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = await make_key("read")
    authenticator = build_authenticator(settings.model_copy(update={"key_cache_seconds": 60}), store)
    reads = 0
    read = store.access.key_by_prefix

    async def counted(prefix: str) -> Any:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.05)  # a database busy enough for the others to arrive meanwhile
        return await read(prefix)

    monkeypatch.setattr(store.access, "key_by_prefix", counted)
    principals = await asyncio.gather(*(authenticator.identify({"X-API-Key": key}) for _ in range(20)))
    assert {p.actor for p in principals} == {f"key:{key[:11]}"}
    assert reads == 1
    # A request that gives up waiting does not cancel the read the others are waiting for.
    authenticator._principals.clear()
    first = asyncio.ensure_future(authenticator.identify({"X-API-Key": key}))
    second = asyncio.ensure_future(authenticator.identify({"X-API-Key": key}))
    await asyncio.sleep(0.01)
    first.cancel()
    assert (await second).actor == f"key:{key[:11]}"
    assert reads == 2
    await authenticator.limiter.close()
