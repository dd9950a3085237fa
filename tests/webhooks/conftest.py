"""A real HTTP receiver for webhook tests, a stub resolver, and the guards every webhook test runs under:
no connection to anything but 127.0.0.1, and no planted secret in any log record."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from buildstate.webhooks.targets import TargetPolicy

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the shape of a Standard Webhooks secret


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1 that answers from a script and records what it got."""

    url: str = ""
    port: int = 0
    received: list[tuple[dict[str, str], bytes, str]] = field(default_factory=list)
    answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    delay: float = 0.0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append((dict(request.headers), body, str(request.rel_url)))
        if self.delay:
            await asyncio.sleep(self.delay)
        status, headers = self.answers.pop(0) if self.answers else (200, {})
        return web.Response(status=status, headers=headers, text="ok")


@contextlib.asynccontextmanager
async def serve_receiver(path: str = "/hooks") -> AsyncIterator[Receiver]:
    """A ``Receiver`` listening on 127.0.0.1 (a free port) until the block ends."""
    recv = Receiver()
    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", recv.handle)
    runner = web.AppRunner(app, access_log=None)  # its request lines hold what it received, tokens too
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    recv.port = port
    recv.url = f"http://127.0.0.1:{port}{path}"
    try:
        yield recv
    finally:
        await runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with serve_receiver() as recv:
        yield recv


# ---------------------------------------------------------------- no lookups, no connections but to 127.0.0.1

# A Concourse webhook_token planted in tests: it must reach the receiver and nothing else.
CONCOURSE_TOKEN = "canary-concourse-token-7f3a9c21d4e8b605"
CONCOURSE_PATH = "/api/v1/teams/main/pipelines/images/resources/state/check/webhook"


class StubResolver(AbstractResolver):
    """Answers names from a table, never from DNS, optionally after a delay (a resolver that hangs)."""

    def __init__(self, table: dict[str, list[str]], delay: float = 0.0) -> None:
        self.table = table
        self.delay = delay
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        if self.delay:
            await asyncio.sleep(self.delay)
        if host not in self.table:
            raise OSError(f"stub resolver: no such name {host}")
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in self.table[host]
        ]

    async def close(self) -> None:
        return None


@pytest.fixture(autouse=True)
def connections_only_to_loopback(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every socket a dispatcher makes goes through the policy's factory: past the policy, anything but
    127.0.0.1 fails the test before a connection is tried. Returns the addresses the policy let through."""
    allowed: list[str] = []
    real = TargetPolicy.socket_factory

    def guarded(policy: TargetPolicy, addr_info: tuple[Any, ...]) -> socket.socket:
        made = real(policy, addr_info)
        address = addr_info[4][0]
        if address != "127.0.0.1":
            made.close()
            raise AssertionError(f"a test was about to connect to {address}")
        allowed.append(address)
        return made

    monkeypatch.setattr(TargetPolicy, "socket_factory", guarded)
    return allowed


@pytest.fixture(autouse=True)
def no_canary_in_the_log(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """No log record of any webhook test holds the signing secret or the Concourse token."""
    caplog.set_level("DEBUG")
    yield
    for record in [*caplog.get_records("setup"), *caplog.get_records("call"), *caplog.records]:
        text = f"{record.getMessage()} {record.exc_text or ''} {record.__dict__}"
        assert SECRET not in text and CONCOURSE_TOKEN not in text, f"a secret reached {record.name}: {text}"
