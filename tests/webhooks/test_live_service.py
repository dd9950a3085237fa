"""Live updates through a real ``buildstate serve``: a crash loses no delivery; ``events tail`` follows."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from standardwebhooks import Webhook as ReferenceVerifier
from tests.support import CLI, ServiceProcess, admin_key, clean_env
from tests.webhooks.conftest import SECRET, Receiver

pytestmark = pytest.mark.slow
BUILD = {"platform": "vsphere", "os_version": "win-2022", "image_type": "base"}


@pytest.fixture(params=["sqlite", "postgresql"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    database_url = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
    return clean_env(
        tmp_path / "data",
        database_url,
        BUILDSTATE_WEBHOOK_RETRY_BASE_SECONDS="0.2",
        BUILDSTATE_WEBHOOK_POLL_SECONDS="0.2",
        BUILDSTATE_WEBHOOK_TIMEOUT_SECONDS="2",
        BUILDSTATE_WEBHOOK_ALLOW_PRIVATE="true",  # the receiver is on 127.0.0.1
    )


async def call(session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> Any:
    async with session.request(method, url, **kwargs) as response:
        assert response.status < 300, await response.text()
        return await response.json()


async def test_a_crash_in_the_middle_of_deliveries_loses_none(
    env: dict[str, str], tmp_path: Path, receiver: Receiver
) -> None:
    key = admin_key(env)
    receiver.answers = [(503, {})] * 1000  # the receiver is down at first: everything stays queued
    first = ServiceProcess(env, tmp_path / "first.log").start()
    headers = {"X-API-Key": key}
    async with aiohttp.ClientSession(headers=headers) as session:
        hook = await call(
            session, "POST", f"{first.url}/admin/webhooks",
            json={"name": "crash-test", "url": receiver.url, "secret": SECRET},
        )  # fmt: skip
        assert "secret" in hook
        for i in range(5):
            await call(session, "POST", f"{first.url}/builds", json={**BUILD, "build_id": f"w-{i}"})
            await call(session, "POST", f"{first.url}/builds/w-{i}/state", json={"state_code": 10})
        for _ in range(200):  # bounded: wait until deliveries are being attempted
            if len(receiver.received) >= 5:
                break
            await asyncio.sleep(0.05)
        first.kill()  # SIGKILL: leases held by the dead workers must expire and be taken over
        receiver.answers = []  # the receiver is back

        second = ServiceProcess(env, tmp_path / "second.log").start()
        try:
            feed = await call(session, "GET", f"{second.url}/events?limit=100")
            expected = {f"msg_{e['seq']}_{hook['id']}" for e in feed["events"]}
            assert len(expected) == 10
            delivered: set[str] = set()
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and delivered != expected:
                await asyncio.sleep(0.2)
                deliveries = await call(
                    session, "GET", f"{second.url}/admin/webhooks/{hook['id']}/deliveries?status=delivered"
                )
                delivered = {d["message_id"] for d in deliveries["deliveries"]}
            assert delivered == expected
            for headers_, body, _ in receiver.received:  # every request, before and after, is signed
                ReferenceVerifier(SECRET).verify(body, headers_)
            # The delivery log shows the failed attempts before the crash and the success after it.
            one = deliveries["deliveries"][0]
            one_url = f"{second.url}/admin/webhooks/{hook['id']}/deliveries/{one['id']}"
            detail = await call(session, "GET", one_url)
            assert detail["attempt_log"][-1]["status_code"] == 200
            # Redelivery keeps the webhook-id so receivers can de-duplicate.
            again = await call(session, "POST", f"{one_url}/redeliver")
            assert again["status"] in {"pending", "delivering", "delivered"}
            assert again["message_id"] == one["message_id"]
        finally:
            second.stop()


async def test_events_tail_follows_the_stream(env: dict[str, str], tmp_path: Path) -> None:
    service = ServiceProcess(env, tmp_path / "serve.log", workers=1).start()
    try:
        key = admin_key(env)
        tail = subprocess.Popen(
            [CLI, "events", "tail", "--url", service.url, "--after", "0", "--count", "3", "--json"],
            env={**env, "BUILDSTATE_API_KEY": key}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        async with aiohttp.ClientSession(headers={"X-API-Key": key}) as session:
            await call(session, "POST", f"{service.url}/builds", json={**BUILD, "build_id": "tail-1"})
            await asyncio.sleep(0.3)
            for code in (5, 10):
                await call(session, "POST", f"{service.url}/builds/tail-1/state", json={"state_code": code})
        out, err = await asyncio.to_thread(tail.communicate, timeout=30)
        assert tail.returncode == 0, err
        events = [json.loads(line) for line in out.splitlines()]
        assert [(e["type"], e["state_code"]) for e in events] == [("created", 0), ("state", 5), ("state", 10)]
        assert key not in out + err
    finally:
        service.stop()


def test_events_tail_gives_up_on_an_unreachable_url_with_the_url_and_the_cause(tmp_path: Path) -> None:
    env = clean_env(tmp_path / "data")
    nowhere = "http://127.0.0.1:9"  # the discard port: nothing listens
    started = time.monotonic()
    tail = subprocess.run(
        [CLI, "events", "tail", "--url", nowhere, "--retry-seconds", "2"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert tail.returncode == 1
    assert time.monotonic() - started < 30
    last = tail.stderr.strip().splitlines()[-1]
    assert last.startswith(f"buildstate: cannot follow {nowhere}/events/stream: ClientConnectorError: ")
    assert "Connect call failed" in last and "gave up after" in last
    assert "Traceback" not in tail.stderr


async def test_events_tail_without_a_key_names_buildstate_api_key(
    env: dict[str, str], tmp_path: Path
) -> None:
    service = ServiceProcess(env, tmp_path / "serve.log", workers=1).start()
    try:
        tail = await asyncio.to_thread(
            subprocess.run, [CLI, "events", "tail", "--url", service.url], env=env, capture_output=True,
            text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        service.stop()
    assert tail.returncode == 1
    last = tail.stderr.strip().splitlines()[-1]
    assert last.startswith(f"buildstate: GET {service.url}/events/stream: 401 Unauthorized: ")
    assert "set BUILDSTATE_API_KEY to a key with the read scope" in last


@contextlib.asynccontextmanager
async def not_buildstate(content_type: str, body: bytes) -> AsyncIterator[tuple[str, list[int]]]:
    """A server on 127.0.0.1 that is not buildstate: every GET gets one canned 200; yields its URL and a
    one-item list counting the requests."""
    requests = [0]

    async def handle(_request: web.Request) -> web.Response:
        requests[0] += 1
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}", requests  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


def run_tail(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**clean_env(tmp_path / "data"), "BUILDSTATE_API_KEY": "bs_canary_not_printed"}
    return subprocess.run(
        [CLI, "events", "tail", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    ("content_type", "body", "said"),
    [
        ("text/html", b"<html>a login page</html>", "answered 200 with text/html, not an event stream"),
        ("text/event-stream", b"id: 1\ndata: {not json\n\n", "an event's data is not JSON"),
        ("text/event-stream", b"id: 1\ndata: \xff\xfe\n\n", "the stream is not UTF-8 text"),
    ],
)
async def test_events_tail_refuses_a_server_that_is_not_buildstate_at_once(
    tmp_path: Path, content_type: str, body: bytes, said: str
) -> None:
    """A wrong --url that answers 200 to anything was reconnected to without pause, printing nothing."""
    async with not_buildstate(content_type, body) as (url, requests):
        tail = await asyncio.to_thread(run_tail, tmp_path, "--url", url)
    assert tail.returncode == 1, tail.stderr
    assert requests == [1]
    assert said in tail.stderr.strip().splitlines()[-1]
    assert "Traceback" not in tail.stderr and "bs_canary_not_printed" not in tail.stderr + tail.stdout


async def test_events_tail_backs_off_on_a_stream_that_closes_at_once(tmp_path: Path) -> None:
    async with not_buildstate("text/event-stream", b"") as (url, requests):
        tail = await asyncio.to_thread(run_tail, tmp_path, "--url", url, "--retry-seconds", "2")
    assert tail.returncode == 1
    assert requests[0] <= 3  # 1 s, then the next delay would pass --retry-seconds
    assert "the stream closed before its first line" in tail.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("value", ["-5", "nan", "inf", "soon"])
def test_events_tail_refuses_a_retry_period_that_is_not_seconds(tmp_path: Path, value: str) -> None:
    tail = run_tail(tmp_path, "--retry-seconds", value)
    assert tail.returncode == 2
    assert "is not a number of seconds" in tail.stderr and "Traceback" not in tail.stderr
