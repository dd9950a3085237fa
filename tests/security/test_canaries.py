"""Planted secrets reach no sink, on both stores, through a real ``buildstate serve`` (two workers, DEBUG).

Canaries: a webhook signing secret, a Concourse ``webhook_token``, an API key, a password, a JWT (and the
admin key, a refused signing secret, a password in the resource's ``source.url``, the service's own JWT
secret and webhook key). They are used rightly and wrongly, and sent to webhooks that answer, fail, time
out, cannot be reached, cannot be parsed (stored as an older version did) or are refused. Then every sink
is searched for every canary in every spelling (raw, percent- and form-encoded): each line of the service
log, every text column of every table, every answer's status line, headers and body (except the one answer
that shows a secret once, which must be ``no-store``), the event stream, ``/metrics``, and the Concourse
resource's stdout and stderr. Only the receivers may see the token and the signatures.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from tests.support import ServiceProcess, admin_key, clean_env, free_port
from tests.webhooks.conftest import CONCOURSE_PATH, serve_receiver

from buildstate.config import Settings
from buildstate.redaction import spellings
from buildstate.store import create_store
from buildstate.store.base import WriteContext
from buildstate.webhooks.models import WebhookKind
from buildstate.webhooks.secrets import SecretBox
from buildstate.webhooks.store import WebhookStore

pytestmark = pytest.mark.slow
RESOURCE_BIN = Path(sys.executable).parent
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"canary-webhook-secret-0123456789").decode()
CONCOURSE_TOKEN = "canary-concourse-token-5e61b2"
PASSWORD = "canary password 8d1f0c"
WRONG_PASSWORD = "canary wrong password 77a3"
REFUSED_SECRET = "canary refused secret, not base64 4c2e"
URL_PASSWORD = "canary-url-password-19bd"
RECEIVER_TOKEN = "canary-receiver-token-a3c9"  # a receiver that authenticates by a query value
BUILD = {"platform": "aws", "os_version": "rhel-9", "image_type": "base"}


@pytest.fixture(params=["sqlite", "postgresql"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    database_url = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
    return clean_env(
        tmp_path / "data",
        database_url,
        BUILDSTATE_LOG_FORMAT="json",
        BUILDSTATE_LOG_LEVEL="DEBUG",
        BUILDSTATE_RATE_LIMIT_BURST="1000000",
        BUILDSTATE_RATE_LIMIT_PER_SECOND="1000000",
        BUILDSTATE_WEBHOOK_ALLOW_PRIVATE="true",  # the receivers are on 127.0.0.1
        BUILDSTATE_WEBHOOK_TIMEOUT_SECONDS="1",
        BUILDSTATE_WEBHOOK_RETRY_BASE_SECONDS="0.2",
        BUILDSTATE_WEBHOOK_POLL_SECONDS="0.2",
        BUILDSTATE_STREAM_RECHECK_SECONDS="0.5",
    )


@dataclass
class Sinks:
    """Everything the service and the resource said, where anyone but a receiver could read it."""

    answers: list[str] = field(default_factory=list)
    # (the name of the canary it hands out, the answer, its headers)
    shown_once: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    other: list[str] = field(default_factory=list)

    async def call(
        self,
        session: aiohttp.ClientSession,
        method: str,
        url: str,
        *,
        shows: str | None = None,
        **kwargs: Any,
    ) -> tuple[int, Any]:
        async with session.request(method, url, **kwargs) as response:
            body = await response.text()
            text = f"{response.status} {response.reason}\n{dict(response.headers)}\n{body}"
            if shows is None:
                self.answers.append(text)
            else:
                self.shown_once.append((shows, text, dict(response.headers)))
            parsed = json.loads(body) if "json" in response.content_type and body else body
            return response.status, parsed


async def database_text(env: dict[str, str]) -> str:
    """Every row of every table, as text."""
    url = env.get("BUILDSTATE_DATABASE_URL")
    if url:
        conn = await asyncpg.connect(url, timeout=5)
        try:
            tables = [
                r[0] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            ]
            rows = [await conn.fetch(f'SELECT t::text FROM "{t}" t') for t in tables]
            return "\n".join(str(row[0]) for table in rows for row in table)
        finally:
            await conn.close()
    path = Path(env["BUILDSTATE_DATA_DIR"]) / "buildstate.db"
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return "\n".join(str(row) for t in tables for row in db.execute(f'SELECT * FROM "{t}"'))


async def store_a_webhook_as_an_older_version_did(env: dict[str, str], url: str) -> None:
    """A Concourse webhook with a URL only urlsplit accepts (port 99999), written past today's checks."""
    settings = Settings(
        database_url=env.get("BUILDSTATE_DATABASE_URL", ""), data_dir=Path(env["BUILDSTATE_DATA_DIR"])
    )
    store, box = create_store(settings), SecretBox.from_settings(settings)
    await store.open()
    try:
        await WebhookStore(store).create(
            name="stored by an older version", url=url, url_sealed=box.seal(url), kind=WebhookKind.CONCOURSE,
            filters={}, secret_encrypted=box.seal(CONCOURSE_TOKEN),
            ctx=WriteContext(actor="test:older-version"), now=datetime.now(UTC),
        )  # fmt: skip
    finally:
        await store.close()


def run_resource(script: str, source: dict[str, Any], workdir: Path, version: Any = None) -> str:
    request: dict[str, Any] = {"source": source}
    if version is not None:
        request["version"] = version
    if script == "out":
        request["params"] = {"build": "canary-1", "state": 15, "message": "from the resource"}
    environment = {"BUILD_ID": "1", "BUILD_NAME": "1", "BUILD_JOB_NAME": "j", "BUILD_PIPELINE_NAME": "p",
                   "BUILD_TEAM_NAME": "main", "ATC_EXTERNAL_URL": "https://ci.example.com",
                   "BUILDSTATE_RESOURCE_BACKOFF_SCALE": "0.01"}  # fmt: skip
    workdir.mkdir(parents=True, exist_ok=True)
    args = [] if script == "check" else [str(workdir)]
    done = subprocess.run(
        [str(RESOURCE_BIN / f"buildstate-resource-{script}"), *args], input=json.dumps(request),
        capture_output=True, text=True, env=environment if script != "check" else {}, timeout=60, check=False,
    )  # fmt: skip
    return f"{done.returncode}\n{done.stdout}\n{done.stderr}"


@dataclass
class Scenario:
    """The service used as people, pipelines and admins use it (and misuse it), every answer recorded."""

    base: str
    admin: aiohttp.ClientSession
    anonymous: aiohttp.ClientSession
    sinks: Sinks
    key: str = ""
    token: str = ""

    async def call(self, method: str, path: str, *, as_admin: bool = False, **kwargs: Any) -> tuple[int, Any]:
        session = self.admin if as_admin else self.anonymous
        return await self.sinks.call(session, method, f"{self.base}{path}", **kwargs)

    async def people_and_keys(self) -> None:
        user = {"username": "carol", "role": "operator", "password": PASSWORD}
        assert (await self.call("POST", "/admin/users", as_admin=True, json=user))[0] == 201
        signed_in = {"username": "carol", "password": PASSWORD}
        self.token = (await self.call("POST", "/token", shows="token", json=signed_in))[1]["access_token"]
        await self.call("POST", "/token", json={"username": "carol", "password": WRONG_PASSWORD})
        form = f"grant_type=password&username=carol&password={WRONG_PASSWORD}"
        await self.call(
            "POST", "/token", data=form, headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        wanted = {"name": "ci", "scopes": ["read", "write"]}
        self.key = (await self.call("POST", "/admin/keys", as_admin=True, shows="api key", json=wanted))[1][
            "key"
        ]

    async def webhooks(self, answering: str, slow: str, stored_url: str) -> None:
        """Webhooks that answer, fail, time out, cannot be reached, cannot be parsed, or are refused."""
        closed = f"http://127.0.0.1:{free_port()}{CONCOURSE_PATH}"
        token = f"webhook_token={CONCOURSE_TOKEN}"
        receiver_root = answering.removesuffix(CONCOURSE_PATH)
        hooks = {
            "json": ({"url": f"{receiver_root}/json", "secret": WEBHOOK_SECRET},
                     "webhook secret"),
            "json, token in the URL": ({"url": f"{receiver_root}/json?token={RECEIVER_TOKEN}",
                                        "secret": WEBHOOK_SECRET}, "webhook secret"),
            "concourse": ({"url": f"{answering}?{token}"}, "concourse token"),
            "unreachable": ({"url": closed, "secret": CONCOURSE_TOKEN}, "concourse token"),
            "slow": ({"url": f"{slow}{CONCOURSE_PATH}?{token}"}, "concourse token"),
        }  # fmt: skip
        for name, (fields, shown) in hooks.items():
            kind = "json" if name.startswith("json") else "concourse"
            body = {"name": name, "kind": kind, **fields}
            status, hook = await self.call("POST", "/admin/webhooks", as_admin=True, shows=shown, json=body)
            assert status == 201, hook
        for refused in (
            {"name": "port", "kind": "concourse", "url": f"{stored_url}?webhook_token={CONCOURSE_TOKEN}"},
            {"name": "secret", "url": "https://hooks.example.com/x", "secret": REFUSED_SECRET},
        ):
            assert (await self.call("POST", "/admin/webhooks", as_admin=True, json=refused))[0] == 422

    async def writes_and_misuse(self) -> None:
        pipeline, bearer = {"X-API-Key": self.key}, {"Authorization": f"Bearer {self.token}"}
        await self.call("POST", "/builds", json={**BUILD, "build_id": "canary-1"}, headers=pipeline)
        for code in (5, 10):
            await self.call("POST", "/builds/canary-1/state", json={"state_code": code}, headers=bearer)
        forged = self.key[:-1] + ("A" if self.key[-1] != "A" else "B")
        for headers in (
            {"Authorization": f"Bearer {self.key}"},
            {"X-API-Key": self.token},
            {"X-API-Key": forged},
            {**pipeline, **bearer},
            {"Authorization": f"Bearer {self.token}x"},
        ):
            await self.call("GET", "/builds", headers=headers)
            await self.call("POST", "/builds", json=BUILD, headers=headers)
        await self.call("GET", f"/builds?api_key={self.key}&token={self.token}", headers=pipeline)
        for headers in (
            {},
            pipeline,
        ):  # a credential pasted into the path: curl -X POST $URL/builds/$KEY/state
            await self.call("POST", f"/builds/{self.key}/state", json={"state_code": 15}, headers=headers)
            await self.call("GET", f"/builds/{self.token}", headers=headers)

    async def streams(self) -> None:
        for headers in ({"X-API-Key": self.key}, {"Authorization": f"Bearer {self.token}"}):
            async with self.anonymous.get(f"{self.base}/events/stream?after=0", headers=headers) as stream:
                chunks = []
                deadline = time.monotonic() + 1.5
                while time.monotonic() < deadline:
                    with contextlib.suppress(TimeoutError):
                        chunks.append(await asyncio.wait_for(stream.content.readany(), 0.5))
                text = b"".join(chunks).decode()
                assert "canary-1" in text
                self.sinks.other.append(f"{dict(stream.headers)}\n{text}")

    async def every_look_at_the_webhooks(self) -> dict[str, set[str | None]]:
        """Once every delivery was tried (or waits behind its disabled webhook, bounded): every answer an
        admin can get about them. Returns each webhook's deliveries' last errors."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            listing = (await self.call("GET", "/admin/webhooks", as_admin=True))[1]["webhooks"]
            pages = [(await self.call("GET", f"/admin/webhooks/{h['id']}/deliveries", as_admin=True))[1]
                     for h in listing]  # fmt: skip
            if all(
                page["deliveries"] and all(d["attempts"] or not hook["enabled"] for d in page["deliveries"])
                for hook, page in zip(listing, pages, strict=True)
            ):
                break
            await asyncio.sleep(0.5)
        errors = {}
        for hook in listing:
            base = f"/admin/webhooks/{hook['id']}"
            await self.call("POST", f"{base}/test", as_admin=True)
            await self.call("GET", base, as_admin=True)
            page = (await self.call("GET", f"{base}/deliveries", as_admin=True))[1]
            for delivery in page["deliveries"]:
                await self.call("GET", f"{base}/deliveries/{delivery['id']}", as_admin=True)
            errors[hook["name"]] = {d["last_error"] for d in page["deliveries"] if d["attempts"]}
        for path in ("/audit?limit=500", "/events?limit=1000", "/admin/keys", "/admin/users", "/metrics",
                     "/builds", "/openapi.json", "/ready"):  # fmt: skip
            await self.call("GET", path, as_admin=True)
        return errors

    def resource_runs(self, workdir: Path) -> None:
        """check, in and out in debug with the key; check with a password in source.url."""
        source = {"url": self.base, "api_key": self.key, "debug": True}
        check = run_resource("check", source, workdir / "check")
        version = json.loads(check.split("\n")[1])[-1]
        with_password = {**source, "url": self.base.replace("http://", f"http://ci:{URL_PASSWORD}@")}
        self.sinks.other += [
            check,
            run_resource("in", source, workdir / "in", version),
            run_resource("out", source, workdir / "out"),
            run_resource("check", with_password, workdir / "check-with-password"),
        ]


async def test_no_planted_secret_reaches_any_sink(env: dict[str, str], tmp_path: Path) -> None:
    admin = admin_key(env)
    service = ServiceProcess(env, tmp_path / "serve.log", workers=2).start()
    sinks = Sinks()
    stored_url = f"http://127.0.0.1:99999{CONCOURSE_PATH}"
    try:
        async with (
            serve_receiver(CONCOURSE_PATH) as answering,
            serve_receiver() as slow,
            aiohttp.ClientSession(headers={"X-API-Key": admin}) as admin_session,
            aiohttp.ClientSession() as anonymous,
        ):
            slow.delay = 3  # longer than BUILDSTATE_WEBHOOK_TIMEOUT_SECONDS
            answering.answers = [(500, {})]
            scenario = Scenario(service.url, admin_session, anonymous, sinks)
            await scenario.people_and_keys()
            await scenario.webhooks(answering.url, slow.url.removesuffix("/hooks"), stored_url)
            await store_a_webhook_as_an_older_version_did(env, stored_url)
            await scenario.writes_and_misuse()
            await scenario.streams()
            errors = await scenario.every_look_at_the_webhooks()
            scenario.resource_runs(tmp_path)
            received = [path for _, _, path in answering.received]
    finally:
        service.stop()

    # The failures happened, so that the search below has something to search in.
    assert errors["unreachable"] == errors["slow"] == {"could not connect, or no answer in time"}
    assert errors["stored by an older version"] == {
        "its URL cannot be parsed or used (check the host and the port)"
    }
    assert f"{CONCOURSE_PATH}?webhook_token={CONCOURSE_TOKEN}" in received  # the token went where it should
    assert f"/json?token={RECEIVER_TOKEN}" in received  # so did the receiver's, kept sealed in between
    data = Path(env["BUILDSTATE_DATA_DIR"])
    canaries = {
        "webhook secret": WEBHOOK_SECRET,
        "webhook secret, base64 part": WEBHOOK_SECRET.removeprefix("whsec_"),
        "concourse token": CONCOURSE_TOKEN,
        "api key": scenario.key,
        "api key, secret part": scenario.key[12:],
        "token": scenario.token,
        "token, signature": scenario.token.rsplit(".", 1)[1],
        "password": PASSWORD,
        "wrong password": WRONG_PASSWORD,
        "refused secret": REFUSED_SECRET,
        "password in source.url": URL_PASSWORD,
        "token in a webhook URL": RECEIVER_TOKEN,
        "admin key": admin,
        "jwt secret": (data / "jwt-secret").read_text().strip(),
        "webhook key": (data / "webhook.key").read_text().strip(),
    }
    log = service.log.read_text()
    assert '"level": "debug"' in log
    places = {
        "the service log": log,
        "the database": await database_text(env),
        "the answers": "\n".join(sinks.answers),
        "the streams and the resource": "\n".join(sinks.other),
    }
    leaks = [
        (canary, place)
        for canary, value in canaries.items()
        for place, text in places.items()
        if any(spelled in text for spelled in spellings(value))
    ]
    assert leaks == []
    for shown, text, headers in sinks.shown_once:  # the answer that hands its one secret out
        assert headers["Cache-Control"] == "no-store"
        assert [
            name for name, value in canaries.items() if value in text and not name.startswith(shown)
        ] == []
