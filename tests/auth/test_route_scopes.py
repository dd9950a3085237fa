"""Every route in ROUTES is protected by the scope it declares: 401 without a credential (with a
challenge), 403 naming the missing scope with one that lacks it. Public routes are matched exactly."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

from buildstate.web.app import create_app  # noqa: F401 - importing the app registers every route
from buildstate.web.routing import ROUTES, Route

# Route parameters get values that would be valid enough to reach the handler.
PARAMETERS = {
    "ref": "rhel-8.8-base-1",
    "seq": "1",
    "key_id": "bs_00000000",
    "username": "nobody",
    "name": "production",
}
# A credential that lacks each scope (admin implies everything, so no key lacks only it).
LACKING = {
    "read": ("write",),
    "write": ("read",),
    "reset": ("read",),
    "release": ("read", "write"),
    "admin": ("read", "write", "release"),
}
PROTECTED = [r for r in ROUTES if r.scope != "public"]
PUBLIC = [r for r in ROUTES if r.scope == "public"]


def concrete(route: Route) -> str:
    return re.sub(r"{(\w+)}", lambda m: PARAMETERS.get(m.group(1), "x"), route.path)


def route_id(route: Route) -> str:
    return f"{route.method} {route.path}"


def test_every_route_group_is_protected_by_a_scope() -> None:
    tags = {r.tag for r in PROTECTED}
    assert {"builds", "events", "dashboard", "admin", "audit", "channels", "revocation", "ancestry"} <= tags
    assert {r.scope for r in PROTECTED} == {"read", "write", "reset", "release", "admin"}
    assert {r.path for r in PUBLIC} >= {"/health", "/ready", "/", "/token"}


@pytest.mark.parametrize("route", PROTECTED, ids=route_id)
async def test_no_credential_gets_401_with_a_challenge(
    route: Route, anon_client: TestClient[Any, Any]
) -> None:
    response = await anon_client.request(route.method, concrete(route), json={})
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="buildstate"')
    assert (await response.json(content_type=None))["type"].endswith("/no-credentials")


@pytest.mark.parametrize("route", PROTECTED, ids=route_id)
async def test_a_credential_without_the_scope_gets_403_naming_it(
    route: Route, anon_client: TestClient[Any, Any], make_key: Any
) -> None:
    key = await make_key(*LACKING[route.scope])
    response = await anon_client.request(route.method, concrete(route), json={}, headers={"X-API-Key": key})
    assert response.status == 403
    body = await response.json(content_type=None)
    assert body["missing_scope"] == route.scope
    assert f"'{route.scope}' scope" in body["detail"]


@pytest.mark.parametrize("route", [r for r in PUBLIC if r.method == "GET"], ids=route_id)
async def test_public_routes_need_no_credential(route: Route, anon_client: TestClient[Any, Any]) -> None:
    response = await anon_client.get(route.path)
    assert response.status in {200, 503}  # /ready may report a database problem; never 401


async def test_the_openapi_document_is_public_and_declares_both_schemes(
    anon_client: TestClient[Any, Any],
) -> None:
    response = await anon_client.get("/openapi.json")
    assert response.status == 200
    document = await response.json()
    schemes = document["components"]["securitySchemes"]
    assert schemes["apiKey"] == {**schemes["apiKey"], "type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert schemes["bearer"]["scheme"] == "bearer" and schemes["bearer"]["bearerFormat"] == "JWT"
    assert document["paths"]["/health"]["get"]["security"] == []
    assert "security" not in document["paths"]["/builds"]["post"]  # the document-wide default applies
    assert {"401", "403", "429"} <= set(document["paths"]["/admin/keys"]["post"]["responses"])
    sign_in = document["paths"]["/token"]["post"]["requestBody"]["content"]
    assert {"application/json", "application/x-www-form-urlencoded"} <= set(sign_in)


@pytest.mark.parametrize(
    "path",
    [
        "/healthz",
        "/health/",
        "/HEALTH",
        "/health/../admin/keys",
        "/health/%2e%2e/admin/keys",
        "/%2Fhealth",
        "/ready/x",
        "/openapi.json/x",
        "/token/../audit",
        "/admin",
        "/no-such-route",
    ],
)
async def test_paths_that_only_resemble_public_ones_need_a_credential(
    path: str, anon_client: TestClient[Any, Any]
) -> None:
    response = await anon_client.get(URL(path, encoded=True))
    assert response.status == 401, path


async def test_unknown_paths_are_404_once_authenticated(client: TestClient[Any, Any]) -> None:
    assert (await client.get("/healthz")).status == 404
    assert (await client.delete("/builds")).status == 405
