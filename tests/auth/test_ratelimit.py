"""Rate limits: a token bucket per key and per user, RateLimit headers on every authenticated answer, 429
with Retry-After past the burst; shared by every process through Redis when configured."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio
from aiohttp.test_utils import TestClient

from buildstate.auth.ratelimit import Bucket, LocalLimiter, RedisLimiter, settle
from buildstate.config import Settings
from buildstate.store import Store
from buildstate.store.access import AuditFilter

REDIS_URL = "redis://127.0.0.1:6379/0"


def test_settle_takes_looks_and_refunds() -> None:
    bucket = Bucket("t", rate=1.0, burst=3)
    assert settle(3.0, bucket, 1) == (True, 2.0)
    assert settle(0.5, bucket, 1) == (False, 0.5)
    assert settle(1.0, bucket, 0) == (True, 1.0)  # a look takes nothing
    assert settle(0.2, bucket, 0) == (False, 0.2)
    assert settle(2.5, bucket, -1) == (True, 3.0)  # a refund never overfills


async def test_a_local_bucket_refills_at_its_rate() -> None:
    limiter, bucket = LocalLimiter(), Bucket("t", rate=50.0, burst=2)
    assert [(await limiter.take("k", bucket)).allowed for _ in range(3)] == [True, True, False]
    refused = await limiter.take("k", bucket)
    assert refused.retry_after == 1 and refused.headers()["Retry-After"] == "1"
    await asyncio.sleep(0.05)  # 2.5 tokens' worth at 50/s
    assert (await limiter.take("k", bucket)).allowed
    assert (await limiter.take("other", bucket)).allowed  # buckets are per key


async def test_requests_past_the_burst_get_429_with_the_ratelimit_fields(
    make_client: Any, settings: Settings, make_key: Any, store: Store
) -> None:
    tight = settings.model_copy(update={"rate_limit_burst": 3, "rate_limit_per_second": 0.01})
    key, other = await make_key("read", "write"), await make_key("read")
    client = await make_client(tight, headers={"X-API-Key": key})
    answers = [await client.get("/builds") for _ in range(3)]
    assert [a.status for a in answers] == [200, 200, 200]
    assert [a.headers["RateLimit"] for a in answers] == [
        f'"default";r={n};t={t}' for n, t in ((2, 100), (1, 200), (0, 300))
    ]
    assert {a.headers["RateLimit-Policy"] for a in answers} == {'"default";q=3;w=300'}

    refused = await client.post(
        "/builds", json={"platform": "aws", "os_version": "x", "image_type": "y", "build_id": "z"}
    )
    assert refused.status == 429
    assert 99 <= int(refused.headers["Retry-After"]) <= 100
    assert refused.headers["RateLimit"].startswith('"default";r=0;')
    assert (await refused.json(content_type=None))["type"].endswith("/rate-limited")
    [row] = await store.access.list_audit(AuditFilter(outcome="denied"))
    assert (row.action, row.status_code, row.actor) == ("build.create", 429, f"key:{key[:11]}")
    # Another key has its own bucket.
    assert (await client.get("/builds", headers={"X-API-Key": other})).status == 200


async def test_public_routes_are_not_rate_limited(make_client: Any, settings: Settings) -> None:
    client = await make_client(
        settings.model_copy(update={"rate_limit_burst": 1, "rate_limit_per_second": 0.01})
    )
    assert [(await client.get("/health")).status for _ in range(5)] == [200] * 5


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A key prefix of this test's own in the shared Redis, deleted afterwards."""
    prefix = f"bs-test-{secrets.token_hex(6)}:"
    yield prefix
    client = redis.asyncio.from_url(REDIS_URL)
    try:
        stale = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if stale:
            await client.delete(*stale)
    finally:
        await client.aclose()


async def test_two_redis_limiters_share_one_bucket(redis_prefix: str) -> None:
    first, second = RedisLimiter(REDIS_URL, redis_prefix), RedisLimiter(REDIS_URL, redis_prefix)
    bucket = Bucket("t", rate=0.01, burst=4)
    try:
        taken = [await (first if n % 2 else second).take("key:bs_x", bucket) for n in range(6)]
        assert [d.allowed for d in taken] == [True, True, True, True, False, False]
        assert [d.remaining for d in taken[:4]] == [3, 2, 1, 0]
        assert (await first.take("key:bs_x", bucket, cost=-1)).remaining == 1  # refunds are shared too
        assert (await second.take("key:bs_x", bucket)).allowed
    finally:
        await first.close()
        await second.close()


async def test_an_unreachable_redis_falls_back_to_per_process_limits(
    redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = RedisLimiter("redis://127.0.0.1:1/0", redis_prefix)
    bucket = Bucket("t", rate=0.01, burst=2)
    try:
        assert [(await limiter.take("k", bucket)).allowed for _ in range(3)] == [True, True, False]
    finally:
        await limiter.close()
    warnings = [r for r in caplog.records if "Redis unreachable" in r.getMessage()]
    assert len(warnings) == 1  # said once, not per request


@pytest.mark.slow
async def test_two_server_processes_share_the_limit_through_redis(
    serve: Any, make_key: Any, redis_prefix: str
) -> None:
    key = await make_key("read")
    shared = {
        "BUILDSTATE_REDIS_URL": REDIS_URL,
        "BUILDSTATE_REDIS_PREFIX": redis_prefix,
        "BUILDSTATE_RATE_LIMIT_BURST": "4",
        "BUILDSTATE_RATE_LIMIT_PER_SECOND": "0.01",
    }
    servers = [await serve(**shared), await serve(**shared)]
    async with aiohttp.ClientSession(headers={"X-API-Key": key}) as session:
        statuses = []
        for n in range(8):
            async with session.get(f"{servers[n % 2]}/builds") as response:
                statuses.append(response.status)
    assert statuses.count(200) == 4 and statuses.count(429) == 4


@pytest.mark.slow
async def test_without_redis_each_process_keeps_its_own_limit(serve: Any, make_key: Any) -> None:
    key = await make_key("read")
    alone = {"BUILDSTATE_RATE_LIMIT_BURST": "4", "BUILDSTATE_RATE_LIMIT_PER_SECOND": "0.01"}
    servers = [await serve(**alone), await serve(**alone)]
    async with aiohttp.ClientSession(headers={"X-API-Key": key}) as session:
        statuses = []
        for n in range(10):
            async with session.get(f"{servers[n % 2]}/builds") as response:
                statuses.append(response.status)
    assert statuses.count(200) == 8 and statuses.count(429) == 2


async def test_the_client_fixture_is_never_limited(client: TestClient[Any, Any]) -> None:
    assert {(await client.get("/builds")).status for _ in range(50)} == {200}
