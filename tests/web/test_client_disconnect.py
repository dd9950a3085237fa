"""A client that hangs up while its request body is on its way: 499 in the metrics, no 500, no traceback.

Each request goes over a real TCP connection, written by hand: a Content-Length larger than the body
sent, then the socket is closed, gracefully (FIN) or with a reset (RST), at once or once the service is
waiting for the rest of the body.

The service's own runner (``graceful_runner``, as gunicorn's worker runs it) leaves the handler running
when its client goes, so the hang-up reaches it as a ``ConnectionResetError`` from reading the body.
aiohttp's test server instead cancels the handler (``handler_cancellation=True``): both are checked.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from buildstate.config import Settings
from buildstate.web.app import create_app
from buildstate.web.middlewares.problems import PROBLEM_JSON, problems
from buildstate.web.runner import graceful_runner
from buildstate.web.typedefs import METRICS

REQUESTS = "buildstate_http_requests_total"
PARTIAL_BODY = b'{"platform": "aws", "os_version": "rhel-8.8", "image_'


@dataclass(frozen=True)
class Served:
    app: web.Application
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@pytest.fixture(params=["service-runner", "handler-cancellation"])
async def served(
    request: pytest.FixtureRequest, settings: Settings, aiohttp_client: Any
) -> AsyncIterator[Served]:
    """The app on a loopback port, behind the service's runner or behind aiohttp's test server."""
    app = create_app(settings)
    if request.param == "handler-cancellation":
        client = await aiohttp_client(app)
        yield Served(app, client.host, client.port)
        return
    runner = graceful_runner(app, settings)
    await runner.setup()
    try:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        site = web.SockSite(runner, sock)  # the site's server closes the socket when it stops
        await site.start()
        yield Served(app, "127.0.0.1", sock.getsockname()[1])
    finally:
        await runner.cleanup()


async def requests_by_status(served: Served, method: str, route: str) -> dict[str, float]:
    """``buildstate_http_requests_total`` for one route, by status, as GET /metrics reports it."""
    async with aiohttp.ClientSession() as session, session.get(f"{served.url}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == REQUESTS and labels["method"] == method and labels["route"] == route:
                counts[labels["status"]] = counts.get(labels["status"], 0) + sample.value
    return counts


async def hang_up_mid_body(served: Served, key: str, *, reset: bool, wait_for_service: bool) -> None:
    reader, writer = await asyncio.open_connection(served.host, served.port)
    head = (
        "POST /builds HTTP/1.1\r\n"
        f"Host: {served.host}:{served.port}\r\n"
        f"X-API-Key: {key}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(PARTIAL_BODY) + 1000}\r\n"
        "\r\n"
    )
    writer.write(head.encode() + PARTIAL_BODY)
    await writer.drain()
    if wait_for_service:
        registry = served.app[METRICS].registry
        deadline = time.monotonic() + 10
        while registry.get_sample_value("buildstate_http_requests_in_progress") != 1:
            assert time.monotonic() < deadline, "the request never reached the application"
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # past the key lookup, waiting for the rest of the body
    if reset:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()
    await writer.wait_closed()
    assert await reader.read() == b""  # nothing was answered before the hang-up


@dataclass(frozen=True)
class HangUp:
    key: str  # "admin", or "aws-only": a key limited to a platform, for which the auth middleware reads
    # the body (its platform) before the handler does
    reset: bool  # RST rather than FIN
    wait_for_service: bool  # until the service is reading the body, rather than at once


@pytest.mark.parametrize(
    "hang_up",
    [
        pytest.param(HangUp("admin", reset=False, wait_for_service=True), id="fin-while-reading"),
        pytest.param(HangUp("admin", reset=True, wait_for_service=True), id="rst-while-reading"),
        pytest.param(HangUp("admin", reset=False, wait_for_service=False), id="fin-at-once"),
        pytest.param(HangUp("admin", reset=True, wait_for_service=False), id="rst-at-once"),
        pytest.param(HangUp("aws-only", reset=False, wait_for_service=True), id="fin-while-auth-reads"),
    ],
)
async def test_a_client_hanging_up_mid_body_is_a_499_not_an_unhandled_500(
    served: Served, make_key: Any, caplog: pytest.LogCaptureFixture, hang_up: HangUp
) -> None:
    key = await (
        make_key("admin") if hang_up.key == "admin" else make_key("read", "write", platforms=["aws"])
    )
    caplog.set_level(logging.DEBUG)
    await hang_up_mid_body(served, key, reset=hang_up.reset, wait_for_service=hang_up.wait_for_service)

    deadline = time.monotonic() + 10
    while not (counts := await requests_by_status(served, "POST", "/builds")):
        assert time.monotonic() < deadline, "the request was never counted"
        await asyncio.sleep(0.02)
    assert counts == {"499": 1}

    access = [
        r for r in caplog.records if r.name == "buildstate.access" and r.getMessage().startswith("POST")
    ]
    assert [(r.levelno, r.__dict__["status"]) for r in access] == [(logging.INFO, 499)]
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not loud, [f"{r.name}: {r.getMessage()}" for r in loud]
    assert not any("unhandled" in r.getMessage().lower() for r in caplog.records)


async def test_a_connection_error_while_the_client_is_still_there_stays_an_unhandled_500(
    aiohttp_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Only the client's own hang-up is a 499: a connection the service opened (the database, a webhook)
    failing under a connected client is the service's error, logged with its traceback."""

    async def lost_upstream(request: web.Request) -> web.Response:
        raise ConnectionResetError("the upstream went away")

    app = web.Application(middlewares=[problems])
    app.router.add_post("/upstream", lost_upstream)
    client = await aiohttp_client(app)
    response = await client.post("/upstream", json={})
    assert response.status == 500
    assert response.content_type == PROBLEM_JSON
    unhandled = [r for r in caplog.records if r.getMessage() == "unhandled error in POST /upstream"]
    assert len(unhandled) == 1
    assert unhandled[0].exc_info is not None
