"""API keys over HTTP: well-formed, known, matching, unrevoked and unexpired keys only; platform-bound
keys change only their platforms' builds; revocation holds at once for every app on the database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from buildstate.auth import keys
from buildstate.store import Store
from buildstate.store.access import NewApiKey
from buildstate.store.types import WriteContext

BUILD = {"platform": "aws", "os_version": "rhel-8.8", "image_type": "base", "build_id": "rhel-8.8-base-1"}


def with_key(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


async def problem(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = await response.json(content_type=None)
    return body


async def test_a_write_key_registers_and_moves_a_build(
    anon_client: TestClient[Any, Any], make_key: Any
) -> None:
    key = await make_key("read", "write")
    created = await anon_client.post("/builds", json=BUILD, headers=with_key(key))
    assert created.status == 201
    moved = await anon_client.post(
        "/builds/rhel-8.8-base-1/state", json={"state_code": 10}, headers=with_key(key)
    )
    assert moved.status == 200
    assert (await moved.json())["event"]["actor"] == f"key:{key[:11]}"


@pytest.mark.parametrize(
    "presented",
    [
        "",
        "nope",
        "bs_12345678",
        "bs_zzzzzzzz_" + "a" * 43,
        "bs_12345678_" + "a" * 42,
        "bs_12345678_" + "a" * 44,
        "Bearer bs_12345678_" + "a" * 43,
    ],
)
async def test_malformed_keys_get_401(presented: str, anon_client: TestClient[Any, Any]) -> None:
    response = await anon_client.get("/builds", headers=with_key(presented))
    assert response.status == 401
    assert (await problem(response))["type"].endswith("/invalid-key")
    assert "X-API-Key" in response.headers["WWW-Authenticate"]


async def test_a_known_id_with_the_wrong_secret_gets_401(
    anon_client: TestClient[Any, Any], make_key: Any
) -> None:
    key = await make_key("read")
    forged = key[:12] + ("A" if key[12] != "A" else "B") + key[13:]
    response = await anon_client.get("/builds", headers=with_key(forged))
    assert response.status == 401
    assert (await problem(response))["detail"] == "the API key is not valid"  # not "revoked", not "expired"


async def test_both_a_key_and_a_token_is_refused(anon_client: TestClient[Any, Any], make_key: Any) -> None:
    key = await make_key("read")
    response = await anon_client.get("/builds", headers={**with_key(key), "Authorization": "Bearer x.y.z"})
    assert response.status == 401


async def test_a_revoked_key_is_refused_at_once_by_every_app_on_the_database(
    client: TestClient[Any, Any], make_client: Any, make_key: Any
) -> None:
    key = await make_key("read", name="to revoke")
    worker_a = await make_client(headers=with_key(key))
    worker_b = await make_client(headers=with_key(key))
    assert (await worker_a.get("/builds")).status == 200
    assert (await worker_b.get("/builds")).status == 200
    revoked = await client.post(f"/admin/keys/{key[:11]}/revoke")
    assert revoked.status == 200
    assert (await revoked.json())["active"] is False
    for worker in (worker_a, worker_b):
        response = await worker.get("/builds")
        assert response.status == 401
        assert (await problem(response))["type"].endswith("/key-revoked")


async def test_an_expired_key_gets_401(anon_client: TestClient[Any, Any], store: Store) -> None:
    new = keys.generate()
    await store.access.create_key(
        NewApiKey(
            prefix=new.public_id,
            key_hash=new.digest,
            name="old",
            scopes=("read",),
            platforms=None,
            expires_at=datetime.now(UTC) - timedelta(seconds=1),
        ),
        WriteContext(actor="test"),
    )
    response = await anon_client.get("/builds", headers=with_key(new.key))
    assert response.status == 401
    assert (await problem(response))["type"].endswith("/key-expired")


async def test_a_key_with_an_expiry_in_the_future_works(
    anon_client: TestClient[Any, Any], make_key: Any
) -> None:
    key = await make_key("read", expires_in_days=1)
    assert (await anon_client.get("/builds", headers=with_key(key))).status == 200


async def test_a_platform_bound_key_changes_only_its_platforms_builds(
    client: TestClient[Any, Any], anon_client: TestClient[Any, Any], make_key: Any
) -> None:
    aws_only = with_key(await make_key("read", "write", platforms=["aws"]))
    assert (await anon_client.post("/builds", json=BUILD, headers=aws_only)).status == 201
    azure = {**BUILD, "platform": "azure", "build_id": "azure-1"}
    refused = await anon_client.post("/builds", json=azure, headers=aws_only)
    assert refused.status == 403
    assert (await problem(refused))["type"].endswith("/platform-not-allowed")
    assert (await client.post("/builds", json=azure)).status == 201  # the admin key may

    for path, body in (
        ("/builds/azure-1/state", {"state_code": 5}),
        ("/builds/azure-1/failure", {"error_message": "boom"}),
        ("/builds/azure-1/reset", {"reason": "retry"}),
    ):
        response = await anon_client.post(path, json=body, headers=aws_only)
        assert response.status == 403, path
        assert (await problem(response))["platform"] == "azure"
    assert (
        await anon_client.post("/builds/rhel-8.8-base-1/state", json={"state_code": 5}, headers=aws_only)
    ).status == 200
    # Reading other platforms is not touching them.
    assert (await anon_client.get("/builds/azure-1", headers=aws_only)).status == 200
    assert (await (await client.get("/builds/azure-1")).json())["state_code"] == 0


async def test_using_a_key_records_when_it_was_last_used(
    anon_client: TestClient[Any, Any], make_key: Any, store: Store
) -> None:
    key = await make_key("read")
    record = await store.access.key_by_prefix(key[:11])
    assert record is not None and record.last_used_at is None
    before = datetime.now(UTC)
    assert (await anon_client.get("/builds", headers=with_key(key))).status == 200
    record = await store.access.key_by_prefix(key[:11])
    assert (
        record is not None
        and record.last_used_at is not None
        and record.last_used_at >= before - timedelta(seconds=1)
    )


async def test_admins_create_list_and_revoke_keys_and_the_secret_is_shown_once(
    client: TestClient[Any, Any], anon_client: TestClient[Any, Any]
) -> None:
    created = await client.post(
        "/admin/keys", json={"name": "rhel pipeline", "scopes": ["read", "write"], "platforms": ["aws"]}
    )
    assert created.status == 201
    assert created.headers["Cache-Control"] == "no-store"
    body = await created.json()
    assert keys.public_id(body["key"]) == body["id"]
    assert (body["scopes"], body["platforms"], body["active"]) == (["read", "write"], ["aws"], True)
    assert (await anon_client.get("/builds", headers=with_key(body["key"]))).status == 200

    listing = await client.get("/admin/keys")
    text = await listing.text()
    assert body["id"] in text and body["key"] not in text
    assert (await client.post(f"/admin/keys/{body['id']}/revoke")).status == 200
    assert body["id"] not in await (await client.get("/admin/keys")).text()
    assert body["id"] in await (await client.get("/admin/keys?include_revoked=true")).text()
    assert (await client.post("/admin/keys/bs_00000000/revoke")).status == 404
    assert (await client.post("/admin/keys/not-a-key/revoke")).status == 422


@pytest.mark.parametrize(
    "request_body",
    [
        {"name": "x", "scopes": []},
        {"name": "x", "scopes": ["superuser"]},
        {"name": "", "scopes": ["read"]},
        {"name": "x", "scopes": ["admin"], "platforms": ["aws"]},
        {"name": "x", "scopes": ["read"], "platforms": ["Not A Slug"]},
        {"name": "x", "scopes": ["read"], "expires_in_days": 0},
    ],
)
async def test_bad_key_requests_get_422(request_body: dict[str, Any], client: TestClient[Any, Any]) -> None:
    assert (await client.post("/admin/keys", json=request_body)).status == 422
