"""POST /token: JSON or the OAuth2 form, 401 for any wrong detail (without saying which), 429 once a
username or a client address has failed too often; every attempt is audited."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from buildstate.config import Settings
from buildstate.store import Store
from buildstate.store.access import AuditFilter

WRONG = "not-the-password-at-all"


async def test_json_sign_in_returns_a_bearer_token_that_is_not_cached(
    anon_client: TestClient[Any, Any], make_user: Any, password: str, settings: Settings
) -> None:
    await make_user("alice", "operator")
    response = await anon_client.post("/token", json={"username": "alice", "password": password})
    assert response.status == 200
    body = await response.json()
    assert (body["token_type"], body["expires_in"], body["scope"]) == (
        "bearer",
        settings.token_ttl_seconds,
        "read write reset release",
    )
    assert response.headers["Cache-Control"] == "no-store"


async def test_the_oauth2_password_form_works_and_needs_its_grant_type(
    anon_client: TestClient[Any, Any], make_user: Any, password: str
) -> None:
    await make_user("alice")
    form = {"grant_type": "password", "username": "alice", "password": password}
    response = await anon_client.post("/token", data=form)
    assert response.status == 200
    assert (await response.json())["scope"] == "read"
    no_grant = await anon_client.post("/token", data={"username": "alice", "password": password})
    assert no_grant.status == 400


async def test_usernames_are_case_insensitive(
    anon_client: TestClient[Any, Any], make_user: Any, password: str
) -> None:
    await make_user("Alice")
    response = await anon_client.post("/token", json={"username": "ALICE", "password": password})
    assert response.status == 200


async def test_a_narrower_scope_can_be_asked_for_but_not_a_wider_one(
    anon_client: TestClient[Any, Any], make_user: Any, password: str
) -> None:
    await make_user("olga", "operator")
    narrow = await anon_client.post(
        "/token", json={"username": "olga", "password": password, "scope": "read"}
    )
    assert (await narrow.json())["scope"] == "read"
    token = (await narrow.json())["access_token"]
    write = await anon_client.post(
        "/builds",
        json={"platform": "aws", "os_version": "x", "image_type": "base", "build_id": "b"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert write.status == 403
    wide = await anon_client.post("/token", json={"username": "olga", "password": password, "scope": "admin"})
    assert wide.status == 400


@pytest.mark.parametrize(
    ("username", "secret"),
    [("alice", WRONG), ("nobody", WRONG), ("alice", "")],
)
async def test_wrong_credentials_get_the_same_401(
    username: str, secret: str, anon_client: TestClient[Any, Any], make_user: Any
) -> None:
    await make_user("alice")
    response = await anon_client.post("/token", json={"username": username, "password": secret})
    assert response.status in {401, 422}  # an empty password fails validation before any lookup
    if response.status == 401:
        body = await response.json(content_type=None)
        assert body["detail"] == "wrong username or password"
        assert "WWW-Authenticate" in response.headers


async def test_a_disabled_user_cannot_sign_in(
    client: TestClient[Any, Any],
    anon_client: TestClient[Any, Any],
    make_user: Any,
    password: str,
    store: Store,
) -> None:
    await make_user("alice")
    await client.post("/admin/users/alice/disable")
    response = await anon_client.post("/token", json={"username": "alice", "password": password})
    assert response.status == 401
    # The same answer as a wrong password: "disabled" only for the right one would confirm it.
    wrong = await anon_client.post("/token", json={"username": "alice", "password": WRONG})
    assert await response.json() == await wrong.json()
    assert (await response.json())["detail"] == "wrong username or password"
    # The audit log, for admins only, says which it was: the two are rows of their own, not repeats.
    await anon_client.post("/token", json={"username": "alice", "password": password})
    rows = await store.access.list_audit(AuditFilter(action="auth.token", outcome="denied"))
    assert sorted((r.detail["reason"], r.repeats) for r in rows) == [
        ("disabled user", 2),
        ("wrong username or password", 1),
    ]


async def test_a_422_on_sign_in_never_echoes_the_password(anon_client: TestClient[Any, Any]) -> None:
    response = await anon_client.post("/token", json={"username": "", "password": WRONG})
    assert response.status == 422
    assert WRONG not in await response.text()


async def test_repeated_failures_for_one_user_are_throttled_even_with_the_right_password(
    make_client: Any, settings: Settings, make_user: Any, password: str, store: Store
) -> None:
    strict = settings.model_copy(update={"signin_failures_per_user": 3, "signin_window_seconds": 600})
    client = await make_client(strict)
    await make_user("alice")
    for _ in range(3):
        assert (await client.post("/token", json={"username": "alice", "password": WRONG})).status == 401
    locked = await client.post("/token", json={"username": "alice", "password": password})
    assert locked.status == 429
    assert 1 <= int(locked.headers["Retry-After"]) <= 200
    # Another user from the same address is not locked by alice's failures.
    await make_user("bob")
    assert (await client.post("/token", json={"username": "bob", "password": password})).status == 200
    rows = await store.access.list_audit(AuditFilter(action="auth.token"))
    assert [(r.outcome, r.status_code, r.target, r.repeats) for r in rows] == [
        ("allowed", 200, "user:bob", 1),
        ("denied", 429, "user:alice", 1),
        ("denied", 401, "user:alice", 3),  # the three guesses from one address: one row
    ]
    assert rows[0].actor == "user:bob" and rows[1].actor == "anonymous"


async def test_successful_sign_ins_do_not_count_as_failures(
    make_client: Any, settings: Settings, make_user: Any, password: str
) -> None:
    strict = settings.model_copy(update={"signin_failures_per_user": 2, "signin_window_seconds": 600})
    client = await make_client(strict)
    await make_user("alice")
    for _ in range(5):
        assert (await client.post("/token", json={"username": "alice", "password": password})).status == 200


async def test_repeated_failures_from_one_client_are_throttled_across_usernames(
    make_client: Any, settings: Settings, make_user: Any, password: str
) -> None:
    strict = settings.model_copy(update={"signin_failures_per_client": 4, "signin_window_seconds": 600})
    client = await make_client(strict)
    await make_user("alice")
    for n in range(4):
        assert (await client.post("/token", json={"username": f"guess{n}", "password": WRONG})).status == 401
    response = await client.post("/token", json={"username": "alice", "password": password})
    assert response.status == 429
    assert "Retry-After" in response.headers


@pytest.mark.parametrize("content_type", ["application/json", "application/x-www-form-urlencoded"])
async def test_a_sign_in_body_that_is_not_json_is_the_same_400_as_on_any_route(
    anon_client: TestClient[Any, Any], client: TestClient[Any, Any], content_type: str
) -> None:
    """``curl -d '{bad'`` sends JSON labelled as a form: it is judged as the JSON it claims to be."""
    headers = {"Content-Type": content_type}
    signed = await anon_client.post("/token", data=b'{"username": "alice", "password": ', headers=headers)
    built = await client.post("/builds", data=b"{not json", headers={"Content-Type": "application/json"})
    assert (signed.status, built.status) == (400, 400)
    one, other = await signed.json(), await built.json()
    assert one["type"] == other["type"] == "https://buildstate.dev/problems/invalid-json"
    assert one["detail"] == other["detail"]
