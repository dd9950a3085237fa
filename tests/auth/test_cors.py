"""CORS: nothing for unlisted origins; listed origins get credentials; preflights answered before auth."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from buildstate.config import Settings

PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "x-api-key, content-type",
}


async def test_by_default_no_origin_is_allowed(
    anon_client: TestClient[Any, Any], client: TestClient[Any, Any]
) -> None:
    response = await client.get("/builds", headers={"Origin": "https://evil.example"})
    assert response.status == 200
    assert "Access-Control-Allow-Origin" not in response.headers
    preflight = await anon_client.options("/builds", headers={"Origin": "https://evil.example", **PREFLIGHT})
    assert preflight.status == 403


async def test_a_listed_origin_gets_its_name_back_with_credentials(
    make_client: Any, settings: Settings, admin_key: str
) -> None:
    listed = settings.model_copy(update={"cors_origins": ["https://dash.example"]})
    browser = await make_client(listed)
    preflight = await browser.options("/builds", headers={"Origin": "https://dash.example", **PREFLIGHT})
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://dash.example"
    assert preflight.headers["Access-Control-Allow-Credentials"] == "true"
    assert "X-API-Key" in preflight.headers["Access-Control-Allow-Headers"]
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]

    answer = await browser.get("/builds", headers={"Origin": "https://dash.example", "X-API-Key": admin_key})
    assert answer.status == 200
    assert answer.headers["Access-Control-Allow-Origin"] == "https://dash.example"
    assert "RateLimit" in answer.headers["Access-Control-Expose-Headers"]
    assert "Origin" in answer.headers["Vary"]
    # Errors are readable by the page too, so it can show the 401.
    refused = await browser.get("/builds", headers={"Origin": "https://dash.example"})
    assert refused.status == 401
    assert refused.headers["Access-Control-Allow-Origin"] == "https://dash.example"

    other = await browser.get("/builds", headers={"Origin": "https://other.example", "X-API-Key": admin_key})
    assert "Access-Control-Allow-Origin" not in other.headers


async def test_a_wildcard_allows_reading_without_credentials(make_client: Any, settings: Settings) -> None:
    browser = await make_client(settings.model_copy(update={"cors_origins": ["*"]}))
    response = await browser.get("/health", headers={"Origin": "https://any.example"})
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in response.headers
