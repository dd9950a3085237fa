"""A scripted HTTP(S) server on 127.0.0.1 for what a healthy service never does on demand.

It answers queued replies in order (503 then 200, 429 with ``Retry-After``, a problem+json 409)
and records every request (headers included) so tests can assert what the resource sent. The
main flows run against the real service instead (see ``conftest.py``).
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased: urllib sends 'X-api-key'
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    delay: float = 0.0  # seconds to wait before answering (a hung service)

    def encoded(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body).encode()


def problem(status: int, title: str, detail: str) -> Reply:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return Reply(status, body, content_type="application/problem+json")


def event(seq: int, state_code: int = 50, build_id: str = "rhel-8.8-base-1", **extra: Any) -> dict[str, Any]:
    """An event as the service answers it (``extra`` sets or overrides fields)."""
    return {
        "seq": seq,
        "type": "state",
        "recorded_at": "2026-11-27T06:41:10.001000Z",
        "attempt": 1,
        "state_code": state_code,
        "from_state_code": None,
        "status": "running",
        "message": None,
        "failure": None,
        "reason": None,
        "actor": "anonymous",
        "provenance": None,
        "duration_ms": None,
        "build": {
            "id": "6f1c0000-0000-4000-8000-000000000001",
            "build_id": build_id,
            "platform": "aws",
            "os_version": "rhel-8.8",
            "image_type": "base",
            "labels": {},
            "created_at": "2026-11-27T06:30:00.123456Z",
        },
        **extra,
    }


EMPTY_FEED = Reply(200, {"events": [], "next_after": 0, "has_more": False})


class FakeServer:
    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[Recorded] = []
        self.fallback: Callable[[Recorded], Reply] = lambda _request: EMPTY_FEED
        self._queue: list[Reply] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
        host, port = self._httpd.server_address[:2]
        self.url = f"{'https' if tls else 'http'}://{host!s}:{port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> FakeServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def queue(self, *replies: Reply) -> None:
        with self._lock:
            self._queue.extend(replies)

    def answer(self, recorded: Recorded) -> Reply:
        with self._lock:
            self.requests.append(recorded)
            if self._queue:
                return self._queue.pop(0)
        return self.fallback(recorded)


def _handler_for(server: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def do_PUT(self) -> None:
            self._serve()

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            recorded = Recorded(
                self.command,
                parts.path,
                dict(parse_qsl(parts.query)),
                {name.lower(): value for name, value in self.headers.items()},
                body,
            )
            reply = server.answer(recorded)
            if reply.delay:
                time.sleep(reply.delay)
            payload = reply.encoded()
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
            """Silence the per-request log; tests assert on ``server.requests`` instead."""

    return Handler
