"""Privilege boundaries: every route in ROUTES, called with every kind of credential, is refused (403,
naming the scope) exactly when the credential lacks the route's scope, and never refused otherwise.

The grants are written out by hand from docs/security.md, not computed with ``auth.scopes.expand``, so a
change to the scope rules has to change this table too. tests/auth/test_route_scopes.py covers the
401 without a credential and the exact matching of public paths; this covers the allowed side and the
user roles.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from buildstate.auth import accounts
from buildstate.store import Store
from buildstate.store.types import BuildFilter, WriteContext
from buildstate.web.app import create_app  # noqa: F401 - importing the app registers every route
from buildstate.web.routing import ROUTES, Route

ALL = frozenset({"read", "write", "reset", "release", "admin"})
# credential -> (how it is made, the scopes docs/security.md says it holds)
CREDENTIALS: dict[str, tuple[tuple[str, ...], frozenset[str]]] = {
    "key read": (("key", "read"), frozenset({"read"})),
    "key write": (("key", "write"), frozenset({"write", "reset"})),
    "key read write": (("key", "read", "write"), frozenset({"read", "write", "reset"})),
    "key release": (("key", "release"), frozenset({"release"})),
    "key admin": (("key", "admin"), ALL),
    "user viewer": (("user", "viewer"), frozenset({"read"})),
    "user operator": (("user", "operator"), frozenset({"read", "write", "reset", "release"})),
    "user admin": (("user", "admin"), ALL),
}
PASSWORD = "a long enough password for tests"
# Values that reach each handler: a 404 or a 422 there still shows the credential was let through.
PARAMETERS = {"ref": "no-such-build", "seq": "1", "key_id": "bs_00000000", "username": "nobody",
              "id": "999999", "delivery_id": "999999", "name": "production"}  # fmt: skip
PROTECTED = [r for r in ROUTES if r.scope != "public"]


def concrete(route: Route) -> str:
    path = re.sub(r"{(\w+)}", lambda m: PARAMETERS[m.group(1)], route.path)
    return path + "?after=-1" if path == "/events/stream" else path  # a 422, not an endless stream


async def credential_headers(kind: str, store: Store, anon_client: TestClient[Any, Any]) -> dict[str, str]:
    (how, *what), _ = CREDENTIALS[kind]
    ctx = WriteContext(actor="test:matrix")
    if how == "key":
        key, _ = await accounts.create_api_key(
            store, name=kind, scopes=tuple(what), platforms=None, expires_in_days=None, ctx=ctx
        )
        return {"X-API-Key": key}
    username = what[0]
    await accounts.create_user(store, username=username, role=what[0], password=PASSWORD, ctx=ctx)
    signed_in = await anon_client.post("/token", json={"username": username, "password": PASSWORD})
    assert signed_in.status == 200, await signed_in.text()
    return {"Authorization": f"Bearer {(await signed_in.json())['access_token']}"}


def test_the_matrix_covers_every_protected_route_and_scope() -> None:
    assert {r.scope for r in PROTECTED} == ALL
    assert len(PROTECTED) >= 30


@pytest.mark.parametrize("kind", list(CREDENTIALS))
async def test_each_credential_reaches_exactly_the_routes_its_scopes_allow(
    kind: str, store: Store, anon_client: TestClient[Any, Any]
) -> None:
    headers = await credential_headers(kind, store, anon_client)
    granted = CREDENTIALS[kind][1]
    wrong = []
    for route in PROTECTED:
        response = await anon_client.request(route.method, concrete(route), json={}, headers=headers)
        body = await response.json(content_type=None)
        allowed = route.scope in granted
        if allowed and response.status in {401, 403}:
            wrong.append(f"{route.method} {route.path}: refused {response.status} {body.get('detail')}")
        elif not allowed and (response.status, body.get("missing_scope")) != (403, route.scope):
            wrong.append(f"{route.method} {route.path}: answered {response.status}, expected 403")
    assert not wrong, "\n".join(wrong)
    # Nothing was changed by the refused (or invalid) requests: no build, no extra key or user.
    assert (await store.list_builds(BuildFilter(), 10, None)).builds == []
