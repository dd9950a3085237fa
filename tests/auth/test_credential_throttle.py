"""Refused credentials are throttled per client before anything is written, and repeated denials are one
audit row with a count (issue 13, finding 6), on both stores; per process without Redis, shared with it.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from tests.auth.test_ratelimit import REDIS_URL, redis_prefix  # noqa: F401 - the fixture
from tests.store.raw import fetch

from buildstate.auth.ratelimit import client_key
from buildstate.config import Settings
from buildstate.store import Store
from buildstate.store.access import AuditFilter

BUILD = {"platform": "aws", "os_version": "rhel-9", "image_type": "base", "build_id": "b-1"}
FORGED = "bs_0badc0de_" + "x" * 43


async def audit_rows(store: Store) -> int:
    [[row]] = await fetch(store, "SELECT COUNT(*) AS n FROM audit_log")
    return int(row["n"])


async def test_a_thousand_requests_with_a_made_up_key_add_one_audit_row(
    make_client: Any, settings: Settings, store: Store
) -> None:
    strict = settings.model_copy(update={"auth_failures_per_client": 20, "auth_failure_window_seconds": 600})
    client = await make_client(strict, headers={"X-API-Key": FORGED})
    before = await audit_rows(store)
    statuses = [(await client.post("/builds", json=BUILD)).status for _ in range(1000)]
    assert statuses == [401] * 20 + [429] * 980
    throttled = await client.post("/builds", json=BUILD)
    assert throttled.status == 429
    assert 1 <= int(throttled.headers["Retry-After"]) <= 30  # one more refusal's worth: 600 s / 20
    body = await throttled.json(content_type=None)
    assert body["type"].endswith("/credential-failures-throttled")
    assert await audit_rows(store) == before + 1  # a real count of rows: one, not 1,000
    [row] = await store.access.list_audit(AuditFilter(outcome="denied"))
    assert (row.actor, row.action, row.status_code, row.repeats) == ("anonymous", "build.create", 401, 20)
    assert row.detail == {"reason": "the API key is not valid", "credential": "key:bs_0badc0de"}


async def test_a_good_credential_from_a_throttled_address_still_works(
    make_client: Any, settings: Settings, make_key: Any
) -> None:
    strict = settings.model_copy(update={"auth_failures_per_client": 3, "auth_failure_window_seconds": 600})
    client = await make_client(strict)
    for _ in range(3):
        assert (await client.get("/builds", headers={"X-API-Key": FORGED})).status == 401
    assert (await client.get("/builds", headers={"X-API-Key": FORGED})).status == 429
    assert (await client.get("/builds")).status == 429  # no credential is a refused one too
    good = await make_key("read")
    assert (await client.get("/builds", headers={"X-API-Key": good})).status == 200


async def test_repeated_denials_of_a_valid_key_are_one_row_per_action_and_window(
    make_client: Any, make_key: Any, store: Store
) -> None:
    reader = await make_key("read")
    client = await make_client(headers={"X-API-Key": reader})
    for _ in range(30):
        assert (await client.post("/builds", json=BUILD)).status == 403
        assert (await client.post("/builds/b-1/reset", json={"reason": "x"})).status == 403
    rows = await store.access.list_audit(AuditFilter(outcome="denied"))
    assert sorted((r.action, r.repeats) for r in rows) == [("build.create", 30), ("build.reset", 30)]


def test_an_ipv6_client_counts_as_its_slash_64() -> None:
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:ffff:1:2:3") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.7") == client_key("192.0.2.7") == "192.0.2.7"
    assert client_key(None) == "unknown"
    assert client_key("not an address") == "not an address"


@pytest.mark.slow
async def test_the_throttle_is_shared_through_redis_and_per_process_without(
    serve: Any,
    redis_prefix: str,  # noqa: F811 - the fixture imported above
) -> None:
    throttle = {"BUILDSTATE_AUTH_FAILURES_PER_CLIENT": "4", "BUILDSTATE_AUTH_FAILURE_WINDOW_SECONDS": "600"}
    shared = {**throttle, "BUILDSTATE_REDIS_URL": REDIS_URL, "BUILDSTATE_REDIS_PREFIX": redis_prefix}
    for env, allowed in ((shared, 4), (throttle, 8)):
        servers = [await serve(**env), await serve(**env)]
        async with aiohttp.ClientSession(headers={"X-API-Key": FORGED}) as session:
            statuses = []
            for n in range(12):
                async with session.get(f"{servers[n % 2]}/builds") as response:
                    statuses.append(response.status)
        # Through Redis both processes count one allowance; without, each its own (docs/security.md).
        assert statuses.count(401) == allowed, (env, statuses)
        assert statuses.count(429) == 12 - allowed


async def test_the_client_fixture_is_never_throttled(client: TestClient[Any, Any]) -> None:
    assert {(await client.get("/builds")).status for _ in range(50)} == {200}
