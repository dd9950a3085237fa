"""The remaining claims of docs/security.md that no other test folder makes: secrets files private,
production refusing to run without its secrets, rate limits and sign-in throttling, CORS, the webhook
host allow-list. Both stores where a store is involved."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from tests.conftest import ClientMaker, make_settings
from tests.support import CLI, clean_env

from buildstate.auth.secret import jwt_secret
from buildstate.config import Settings
from buildstate.webhooks.secrets import SecretBox

BUILD = {"platform": "aws", "os_version": "rhel-8.8", "image_type": "base", "build_id": "b-1"}


def test_development_secrets_are_files_only_their_owner_can_read(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, jwt_secret=None)
    assert len(jwt_secret(settings)) >= 32
    SecretBox.from_settings(settings)
    for name in ("jwt-secret", "webhook.key"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name


def test_production_refuses_to_start_without_a_jwt_secret(tmp_path: Path) -> None:
    env = clean_env(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", BUILDSTATE_ENV="production")
    started = subprocess.run([CLI, "serve", "--bind", "127.0.0.1:1"], env=env, capture_output=True,
                             text=True, timeout=60, check=False)  # fmt: skip
    assert started.returncode == 2
    assert "BUILDSTATE_JWT_SECRET is required" in started.stderr
    assert not (tmp_path / "jwt-secret").exists()


async def test_each_credential_has_its_own_request_budget(
    make_client: ClientMaker, make_key: Any, settings: Settings
) -> None:
    limited = make_settings(
        settings.database_url, settings.data_dir, rate_limit_burst=3, rate_limit_per_second=0.01
    )
    first, second = await make_key("read", name="first"), await make_key("read", name="second")
    client = await make_client(limited)
    statuses = [(await client.get("/builds", headers={"X-API-Key": first})).status for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    refused = await client.get("/builds", headers={"X-API-Key": first})
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.content_type == "application/problem+json"
    assert (await client.get("/builds", headers={"X-API-Key": second})).status == 200


async def test_repeated_failed_sign_ins_are_throttled_even_with_the_right_password(
    make_client: ClientMaker, client: TestClient[Any, Any], settings: Settings
) -> None:
    user = {"username": "carol", "role": "viewer", "password": "the right password"}
    assert (await client.post("/admin/users", json=user)).status == 201
    throttled = make_settings(settings.database_url, settings.data_dir, signin_failures_per_user=3)
    anon = await make_client(throttled)
    wrong = [(await anon.post("/token", json={"username": "carol", "password": "wrong guess!"})).status
             for _ in range(4)]  # fmt: skip
    assert wrong == [401, 401, 401, 429]
    right = await anon.post("/token", json={"username": "carol", "password": "the right password"})
    assert right.status == 429  # a guesser cannot tell a right password from a wrong one now
    assert "Retry-After" in right.headers


async def test_cors_answers_only_the_listed_origins(make_client: ClientMaker, settings: Settings) -> None:
    browser = await make_client(make_settings(settings.database_url, settings.data_dir,
                                              cors_origins=["https://dash.example.com"]))  # fmt: skip
    listed = await browser.get("/health", headers={"Origin": "https://dash.example.com"})
    assert listed.headers["Access-Control-Allow-Origin"] == "https://dash.example.com"
    other = await browser.get("/health", headers={"Origin": "https://evil.example.net"})
    assert "Access-Control-Allow-Origin" not in other.headers
    preflight = await browser.options(
        "/builds", headers={"Origin": "https://evil.example.net", "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status == 403


async def test_webhooks_may_only_target_allowed_hosts(
    make_client: ClientMaker, make_key: Any, settings: Settings
) -> None:
    fenced = make_settings(settings.database_url, settings.data_dir, webhook_allowed_hosts=["ci.example.com"],
                           webhook_dispatcher=False)  # fmt: skip
    admin = await make_client(fenced, headers={"X-API-Key": await make_key("admin")})
    for url in (
        "http://169.254.169.254/latest/meta-data",
        "http://127.0.0.1:5432/",
        "http://ci.example.com.evil.net/",
    ):
        refused = await admin.post("/admin/webhooks", json={"name": "x", "url": url})
        assert refused.status == 422, url
    assert (
        await admin.post("/admin/webhooks", json={"name": "ci", "url": "https://ci.example.com/hook"})
    ).status == 201
    with_credentials = await admin.post(
        "/admin/webhooks", json={"name": "c", "url": "https://u:p@ci.example.com/"}
    )
    assert with_credentials.status == 422
