"""Channels, revocation and ancestry over HTTP on both stores: the routes, their problems, replays, feed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from buildstate.web.typedefs import STORE

Client = TestClient[Any, Any]
BUCKET = {"platform": "aws", "os_version": "rhel-8.8", "image_type": "base"}


async def build(client: Client, build_id: str, *, done: bool = True, **fields: Any) -> str:
    body = {**BUCKET, "build_id": build_id, **fields}
    response = await client.post("/builds", json=body)
    assert response.status == 201, await response.text()
    ident = str((await response.json())["id"])
    if done:
        assert (await client.post(f"/builds/{ident}/state", json={"state_code": 100})).status == 200
    return ident


async def problem(response: Any, status: int, slug: str) -> dict[str, Any]:
    assert response.status == status, await response.text()
    assert response.content_type == "application/problem+json"
    body: dict[str, Any] = await response.json(content_type=None)
    assert body["type"].endswith("/" + slug), body
    return body


async def test_parents_at_creation_and_later_and_the_ancestry(client: Client) -> None:
    base = await build(client, "base-1")
    refused = await client.post("/builds", json={**BUCKET, "build_id": "app-1", "parents": ["nope"]})
    assert "parents.0" in (await problem(refused, 422, "build-not-found"))["detail"]
    assert (await client.get("/builds/app-1")).status == 404  # nothing was created
    itself = await client.post("/builds", json={**BUCKET, "build_id": "base-1", "parents": ["base-1"]})
    await problem(itself, 422, "parent-is-self")
    app = await build(client, "app-1", parents=[{"build": "base-1", "channel": "production"}])
    late = await build(client, "late-1")
    linked = await client.post(f"/builds/{late}/parents", json={"parents": [app]})
    assert linked.status == 200
    cycle = await client.post(f"/builds/{base}/parents", json={"parents": ["late-1"]})
    await problem(cycle, 409, "ancestry-cycle")
    ancestry = await (await client.get("/builds/app-1/ancestry")).json()
    assert {(n["build"]["build_id"], n["relation"]) for n in ancestry["nodes"]} == {
        ("app-1", "self"),
        ("base-1", "ancestor"),
        ("late-1", "descendant"),
    }
    assert ancestry["truncated"] is False
    assert [e["channel"] for e in ancestry["edges"] if e["child"] == app] == ["production"]
    await problem(await client.get("/builds/nope/ancestry"), 404, "build-not-found")


async def test_assign_list_read_a_channel_and_replay(client: Client) -> None:
    first = await build(client, "base-1")
    put = await client.put("/channels/production", json={**BUCKET, "build": first, "reason": "tested"})
    assert put.status == 200
    assert (await put.json())["channel"]["head"]["build_id"] == "base-1"
    again = await client.put("/channels/production", json={**BUCKET, "build": "base-1", "reason": "tested"})
    assert again.headers["Idempotent-Replayed"] == "true"
    keyed = {"Idempotency-Key": "assign-1"}
    second = await build(client, "base-2")
    body = {**BUCKET, "build": second, "reason": "newer"}
    one = await client.put("/channels/production", json=body, headers=keyed)
    two = await client.put("/channels/production", json=body, headers=keyed)
    assert await one.json() == await two.json() and two.headers["Idempotent-Replayed"] == "true"
    listed = await (await client.get("/channels", params={"platform": "aws"})).json()
    assert [(c["name"], c["head"]["build_id"]) for c in listed["channels"]] == [("production", "base-2")]
    detail = await (await client.get("/channels/production", params=BUCKET)).json()
    assert [m["to_build"]["build_id"] for m in detail["history"]] == ["base-2", "base-1"]
    assert all(m["actor"].startswith("key:") for m in detail["history"])
    await problem(await client.get("/channels/production", params={"platform": "aws"}), 422, "validation")
    await problem(await client.get("/channels/Bad%20Name", params=BUCKET), 400, "bad-channel-name")
    missing = await client.get("/channels/staging", params=BUCKET)
    await problem(missing, 404, "channel-not-found")
    running = await build(client, "base-3", done=False)
    refused = await client.put("/channels/production", json={**BUCKET, "build": running, "reason": "x"})
    await problem(refused, 409, "build-not-succeeded")
    unknown = await client.put(
        "/channels/production", json={**BUCKET, "build": "b", "reason": "x", "extra": 1}
    )
    assert unknown.status == 422


async def test_revoke_and_restore_flow_through_the_feed(client: Client) -> None:
    base = await build(client, "base-1")
    child = await build(client, "child-1", parents=[base])
    await client.put("/channels/production", json={**BUCKET, "build": base, "reason": "go"})
    revoked = await client.post(f"/builds/{base}/revoke", json={"reason": "CVE-2026-1"})
    assert revoked.status == 200
    answer = await revoked.json()
    assert answer["state"] == "revoked" and answer["channels_emptied"] == ["production@aws/rhel-8.8/base"]
    assert [b["build_id"] for b in answer["inherited"]] == ["child-1"]
    refused = await client.put("/channels/production", json={**BUCKET, "build": child, "reason": "x"})
    assert "inherited from 'base-1'" in (await problem(refused, 409, "build-revoked"))["detail"]
    feed = await (await client.get("/events", params={"states": "revoked"})).json()
    assert [(e["build"]["build_id"], e["detail"]["inherited"]) for e in feed["events"]] == [
        ("base-1", False),
        ("child-1", True),
    ]
    moves = await (await client.get("/events", params={"type": "channel"})).json()
    assert [e["detail"]["to"] for e in moves["events"]] == [base, None]
    not_own = await client.post(f"/builds/{child}/restore", json={"reason": "no"})
    await problem(not_own, 409, "build-not-revoked")
    restored = await client.post(f"/builds/{base}/restore", json={"reason": "fixed upstream"})
    assert (await restored.json())["state"] == "restored"
    feed = await (await client.get("/events", params={"type": "restored"})).json()
    assert {e["build"]["build_id"] for e in feed["events"]} == {"base-1", "child-1"}
    scheduled = await client.post(
        f"/builds/{base}/revoke", json={"reason": "EOL", "at": "2999-01-01T00:00:00Z"}
    )
    assert (await scheduled.json())["state"] == "scheduled"
    bad = await client.post(f"/builds/{base}/revoke", json={"reason": ""})
    assert bad.status == 422


async def test_release_needs_the_release_scope_an_operator_has(
    make_client: Any, make_key: Any, client: Client
) -> None:
    base = await build(client, "base-1")
    writer = await make_client(headers={"X-API-Key": await make_key("read", "write")})
    denied = await writer.post(f"/builds/{base}/revoke", json={"reason": "x"})
    assert (await problem(denied, 403, "missing-scope"))["missing_scope"] == "release"
    releaser = await make_client(headers={"X-API-Key": await make_key("release")})
    assert (await releaser.post(f"/builds/{base}/revoke", json={"reason": "x"})).status == 200
    restricted = await make_client(headers={"X-API-Key": await make_key("release", platforms=["azure"])})
    other = await restricted.put("/channels/production", json={**BUCKET, "build": base, "reason": "x"})
    await problem(other, 403, "platform-not-allowed")
    created = await client.post(
        "/admin/users", json={"username": "olga", "role": "operator", "password": "a-good-password"}
    )
    assert created.status == 201
    token = await (
        await client.post("/token", json={"username": "olga", "password": "a-good-password"})
    ).json()
    assert "release" in token["scope"].split()


async def first_revoked_events(client: Client) -> list[Any]:
    """The feed's revoked events once there are any (the app's poller fires them), at most about 20 s."""
    for _ in range(400):
        events: list[Any] = (await (await client.get("/events", params={"type": "revoked"})).json())["events"]
        if events:
            return events
        await asyncio.sleep(0.05)
    return []


async def test_each_worker_fires_due_revocations_on_its_own(
    make_client: Any, settings: Any, admin_key: str
) -> None:
    """The app's background task, not a test's call, fires a scheduled revocation once it is due."""
    fast = settings.model_copy(update={"revocation_poll_seconds": 0.05})
    client = await make_client(fast, headers={"X-API-Key": admin_key})
    base = await build(client, "base-1")
    soon = (datetime.now(UTC) + timedelta(milliseconds=300)).isoformat()
    scheduled = await client.post(f"/builds/{base}/revoke", json={"reason": "EOL", "at": soon})
    assert (await scheduled.json())["state"] == "scheduled"
    events = await first_revoked_events(client)
    assert [(e["build"]["build_id"], e["actor"]) for e in events] == [("base-1", "key:" + admin_key[:11])]
    audit = await (await client.get("/audit", params={"action": "build.revoke.scheduled"})).json()
    assert [(a["actor"], a["detail"]) for a in audit["entries"]] == [("scheduler", {"fired": 1})]


async def test_the_revocation_poller_outlives_a_failed_pass(
    make_client: Any, settings: Any, admin_key: str, monkeypatch: Any, caplog: Any
) -> None:
    """A pass that fails for another reason than an unreachable database (a deadlock, a timeout) is one log
    line without a traceback, and the next pass fires what is due."""
    fast = settings.model_copy(update={"revocation_poll_seconds": 0.05})
    client = await make_client(fast, headers={"X-API-Key": admin_key})
    release = client.app[STORE].release
    real_fire_due, failures = release.fire_due, [RuntimeError("deadlock detected")]

    async def fire_due_failing_once(ctx: Any) -> int:
        if failures:
            raise failures.pop()
        return int(await real_fire_due(ctx))

    monkeypatch.setattr(release, "fire_due", fire_due_failing_once)
    base = await build(client, "base-1")
    soon = (datetime.now(UTC) + timedelta(milliseconds=200)).isoformat()
    await client.post(f"/builds/{base}/revoke", json={"reason": "EOL", "at": soon})
    events = await first_revoked_events(client)
    assert len(events) == 1 and not failures
    failed = [r for r in caplog.records if "scheduled revocations failed" in r.getMessage()]
    assert [(r.levelname, r.exc_info) for r in failed] == [("WARNING", None)]
    assert "RuntimeError" in failed[0].getMessage() and "deadlock" not in failed[0].getMessage()


async def record_ami(client: Client, ref: str, ami: str) -> None:
    body = {"artifacts": [{"region": "eu-west-1", "kind": "ami", "external_id": ami}]}
    assert (await client.post(f"/builds/{ref}/artifacts", json=body)).status == 200


async def test_the_deployer_lookup_follows_a_channel_and_refuses_revoked_builds(client: Client) -> None:
    older, newer = await build(client, "base-1"), await build(client, "base-2")
    await record_ami(client, older, "ami-older")
    await record_ami(client, newer, "ami-newer")
    await client.put("/channels/production", json={**BUCKET, "build": older, "reason": "proven"})
    query = {**BUCKET, "region": "eu-west-1"}

    latest = await client.get("/artifacts/latest", params=query)
    assert (await latest.json())["external_id"] == "ami-newer"
    pinned = await client.get("/artifacts/latest", params={**query, "channel": "production"})
    assert (await pinned.json())["external_id"] == "ami-older"
    text = await client.get(
        "/artifacts/latest", params={**query, "channel": "production"}, headers={"Accept": "text/plain"}
    )
    assert await text.text() == "ami-older\n"
    unknown = await client.get("/artifacts/latest", params={**query, "channel": "staging"})
    assert "does not exist" in (await problem(unknown, 404, "channel-not-found"))["detail"]
    other_region = await client.get(
        "/artifacts/latest", params={**BUCKET, "region": "us-east-1", "channel": "production"}
    )
    assert (
        "head of channel 'production'" in (await problem(other_region, 404, "artifact-not-found"))["detail"]
    )

    await client.post(f"/builds/{newer}/revoke", json={"reason": "CVE-2026-7"})
    gone = await problem(await client.get("/artifacts/latest", params=query), 410, "build-revoked")
    assert "CVE-2026-7" in gone["detail"] and gone["revocation"]["reason"] == "CVE-2026-7"
    assert gone["build"] == newer
    anyway = await client.get("/artifacts/latest", params={**query, "include_revoked": "true"})
    assert (await anyway.json())["external_id"] == "ami-newer"
    text_gone = await client.get("/artifacts/latest", params=query, headers={"Accept": "text/plain"})
    assert text_gone.status == 410  # a shell's $(curl -f ...) fails instead of deploying it

    await client.post(f"/builds/{older}/revoke", json={"reason": "CVE-2026-8"})
    emptied = await client.get("/artifacts/latest", params={**query, "channel": "production"})
    assert "has no head" in (await problem(emptied, 404, "channel-not-found"))["detail"]
    listed = await client.get(f"/builds/{older}/artifacts")  # a build's own record stays readable
    assert [a["external_id"] for a in (await listed.json())["artifacts"]] == ["ami-older"]


async def test_a_write_key_cannot_revoke_a_build_by_linking_it_under_a_revoked_one(
    make_client: Any, make_key: Any, client: Client
) -> None:
    # Linking an existing build to a revoked parent revokes it (and empties its channels): that is a
    # revocation, so without the release scope it is refused, audited, and changes nothing.
    bad = await build(client, "bad-1")
    assert (await client.post(f"/builds/{bad}/revoke", json={"reason": "CVE"})).status == 200
    head = await build(client, "head-1")
    assigned = await client.put("/channels/production", json={**BUCKET, "build": head, "reason": "ok"})
    assert assigned.status == 200
    writer = await make_client(headers={"X-API-Key": await make_key("read", "write")})
    refused = await writer.post(f"/builds/{head}/parents", json={"parents": ["bad-1"]})
    body = await problem(refused, 403, "missing-scope")
    assert body["missing_scope"] == "release" and "bad-1" in body["detail"]
    detail = await (await client.get("/channels/production", params=BUCKET)).json()
    assert detail["channel"]["head"]["build_id"] == "head-1"
    # Nor by naming the parent in POST /builds of the existing build (200: the same build).
    again = {**BUCKET, "build_id": "head-1", "parents": ["bad-1"]}
    await problem(await writer.post("/builds", json=again), 403, "missing-scope")
    detail = await (await client.get("/channels/production", params=BUCKET)).json()
    assert detail["channel"]["head"]["build_id"] == "head-1"
    ancestry = await (await client.get(f"/builds/{head}/ancestry")).json()
    assert ancestry["edges"] == []
    audit = await (await client.get("/audit", params={"action": "build.parents"})).json()
    assert [(e["outcome"], e["status_code"]) for e in audit["entries"]][:1] == [("refused", 403)]
    # A parent that is not revoked is a write's to name; with release, a revoked one is too.
    fine = await build(client, "fine-1")
    assert (await writer.post(f"/builds/{head}/parents", json={"parents": [fine]})).status == 200
    releaser = await make_client(headers={"X-API-Key": await make_key("read", "write", "release")})
    assert (await releaser.post(f"/builds/{head}/parents", json={"parents": ["bad-1"]})).status == 200
    detail = await (await client.get("/channels/production", params=BUCKET)).json()
    assert detail["channel"]["head"] is None


@pytest.mark.parametrize("reason", ["", "   ", "\t\n"])
async def test_a_reason_of_only_spaces_is_refused(client: Client, reason: str) -> None:
    base = await build(client, "base-1")
    refused = await client.post(f"/builds/{base}/revoke", json={"reason": reason})
    assert refused.status == 422
    assert refused.content_type == "application/problem+json"
    assert (await client.get(f"/builds/{base}/ancestry")).status == 200
    assert (await (await client.get("/events", params={"type": "revoked"})).json())["events"] == []
