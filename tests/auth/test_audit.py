"""The audit log over HTTP: allowed and denied changes are recorded with who, what, where from and how it
ended; GET /audit (admin only) filters and pages newest first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient

from buildstate.store import Store
from buildstate.store.access import AuditFilter

BUILD = {"platform": "aws", "os_version": "rhel-8.8", "image_type": "base", "build_id": "b-1"}


async def test_allowed_changes_are_audited_with_actor_request_id_and_source(
    anon_client: TestClient[Any, Any], make_key: Any, store: Store
) -> None:
    key = await make_key("read", "write")
    headers = {"X-API-Key": key, "X-Request-ID": "req-42"}
    assert (await anon_client.post("/builds", json=BUILD, headers=headers)).status == 201
    assert (
        await anon_client.post("/builds/b-1/state", json={"state_code": 5}, headers=headers)
    ).status == 200
    assert (await anon_client.post("/builds/b-1/reset", json={"reason": "r"}, headers=headers)).status == 200
    rows = await store.access.list_audit(AuditFilter(actor=f"key:{key[:11]}"))
    assert [(r.action, r.target, r.outcome, r.status_code) for r in rows] == [
        ("build.reset", "b-1", "allowed", 200),
        ("build.state", "b-1", "allowed", 200),
        ("build.create", "b-1", "allowed", 201),
    ]
    assert {(r.request_id, r.source) for r in rows} == {("req-42", "127.0.0.1")}


async def test_denied_attempts_are_audited_without_the_secret(
    anon_client: TestClient[Any, Any], make_key: Any, store: Store
) -> None:
    reader = await make_key("read")
    forged = "bs_0badc0de_" + "x" * 43
    assert (await anon_client.post("/builds", json=BUILD, headers={"X-API-Key": forged})).status == 401
    assert (await anon_client.post("/builds", json=BUILD)).status == 401
    assert (
        await anon_client.post("/builds/b-1/state", json={"state_code": 5}, headers={"X-API-Key": reader})
    ).status == 403
    assert (await anon_client.post("/admin/users", json={}, headers={"X-API-Key": reader})).status == 403
    assert (
        await anon_client.get("/builds", headers={"X-API-Key": forged})
    ).status == 401  # reads are not audited
    rows = await store.access.list_audit(AuditFilter(outcome="denied"))
    # Anonymous attempts from one address share a row per reason (a fixed set), with a count: a made-up
    # key and no key at all are two rows, so that the log still says which it was.
    assert [(r.actor, r.action, r.status_code, r.repeats) for r in rows] == [
        (f"key:{reader[:11]}", "user.create", 403, 1),
        (f"key:{reader[:11]}", "build.state", 403, 1),
        ("anonymous", "build.create", 401, 1),
        ("anonymous", "build.create", 401, 1),
    ]
    assert rows[3].detail == {"reason": "the API key is not valid", "credential": "key:bs_0badc0de"}
    assert rows[2].detail is not None and rows[2].detail["reason"] != rows[3].detail["reason"]
    assert rows[1].target == "b-1"
    assert all(forged not in str(r) and reader not in str(r) for r in rows)


async def test_a_change_that_was_already_true_is_audited_as_replayed_on_both_stores(
    client: TestClient[Any, Any], store: Store
) -> None:
    """The same requests gave 'replayed' on SQLite and 'allowed' on PostgreSQL."""
    assert (await client.post("/builds", json=BUILD)).status == 201
    for message in ("a", "b"):
        assert (
            await client.post("/builds/b-1/state", json={"state_code": 10, "message": message})
        ).status == 200
    assert (await client.post("/builds", json=BUILD)).status == 200
    idem = {"Idempotency-Key": "k-1"}
    for _ in range(2):
        assert (await client.post("/builds/b-1/state", json={"state_code": 15}, headers=idem)).status == 200
    rows = [r for r in await store.access.list_audit(AuditFilter()) if r.target == "b-1"]
    assert [(r.action, r.outcome) for r in reversed(rows)] == [
        ("build.create", "allowed"),
        ("build.state", "allowed"),
        ("build.state", "replayed"),  # state 10 again: nothing recorded
        ("build.create", "replayed"),  # the build exists: nothing recorded
        ("build.state", "allowed"),
        ("build.state", "replayed"),  # the Idempotency-Key again
    ]


async def test_rule_refusals_are_audited_as_refused(client: TestClient[Any, Any], store: Store) -> None:
    await client.post("/builds", json=BUILD)
    await client.post("/builds/b-1/state", json={"state_code": 50})
    assert (await client.post("/builds/b-1/state", json={"state_code": 10})).status == 409
    [row] = await store.access.list_audit(AuditFilter(outcome="refused"))
    assert (row.action, row.status_code) == ("build.state", 409)


async def test_key_and_user_changes_are_audited(
    client: TestClient[Any, Any], store: Store, password: str
) -> None:
    created = await (await client.post("/admin/keys", json={"name": "p", "scopes": ["write"]})).json()
    await client.post(f"/admin/keys/{created['id']}/revoke")
    await client.post("/admin/users", json={"username": "ann", "role": "viewer", "password": password})
    await client.post("/admin/users", json={"username": "ann", "role": "admin", "password": password})
    await client.post("/admin/users/ann/password", json={"password": "another good password"})
    await client.post("/admin/users/ann/disable")
    rows = await store.access.list_audit(AuditFilter(limit=6))
    assert [(r.action, r.outcome, r.target) for r in rows] == [
        ("user.disable", "allowed", "user:ann"),
        ("user.password", "allowed", "user:ann"),
        ("user.create", "refused", "user:ann"),
        ("user.create", "allowed", "user:ann"),
        ("key.revoke", "allowed", f"key:{created['id']}"),
        ("key.create", "allowed", f"key:{created['id']}"),
    ]
    assert password not in str(rows) and created["key"] not in str(rows)


async def test_get_audit_filters_and_pages_newest_first(client: TestClient[Any, Any]) -> None:
    for n in range(5):
        await client.post("/builds", json={**BUILD, "build_id": f"b-{n}"})
    first = await (await client.get("/audit", params={"action": "build.create", "limit": "2"})).json()
    assert [e["target"] for e in first["entries"]] == ["b-4", "b-3"]
    rest = await (
        await client.get("/audit", params={"action": "build.create", "before": str(first["next_before"])})
    ).json()
    assert [e["target"] for e in rest["entries"]] == ["b-2", "b-1", "b-0"]
    assert rest["next_before"] is None
    since = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    assert (await (await client.get("/audit", params={"since": since})).json())["entries"] == []
    allowed = await (await client.get("/audit", params={"outcome": "allowed", "limit": "500"})).json()
    assert {e["outcome"] for e in allowed["entries"]} == {"allowed"}
    assert (await client.get("/audit", params={"outcome": "maybe"})).status == 422


async def test_only_admins_read_the_audit_log(anon_client: TestClient[Any, Any], make_key: Any) -> None:
    writer = await make_key("read", "write")
    assert (await anon_client.get("/audit", headers={"X-API-Key": writer})).status == 403
