"""Header injection through ``X-Request-ID``, over a raw socket to a real service (an HTTP client library
would refuse to send most of these): the id is echoed and logged only when it is 1-128 characters of
``[A-Za-z0-9._:/+=-]`` and nothing in it is shaped like a credential; anything else is replaced, and
nothing a client sends becomes a response header.
(tests/web/test_api.py checks the plain cases: a sane id kept, a tab and spaces replaced.)"""

from __future__ import annotations

import json
import re
import socket
from urllib.parse import urlsplit

import pytest
from tests.security.conftest import Live

pytestmark = pytest.mark.slow
SANE = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")


def raw_get(live: Live, request_id: bytes) -> tuple[int, dict[str, str], bytes]:
    """GET /health with these exact header bytes; the status, headers (lower-case names) and raw head."""
    host, port = urlsplit(live.url).hostname, urlsplit(live.url).port
    assert host is not None and port is not None
    request = (
        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Request-ID: " + request_id + b"\r\n\r\n"
    )
    with socket.create_connection((host, port), timeout=10) as conn:
        conn.sendall(request)
        raw = b""
        while chunk := conn.recv(65536):
            raw += chunk
    head = raw.split(b"\r\n\r\n", 1)[0]
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), value.strip())
    return int(status_line.split()[1]), headers, head


@pytest.mark.parametrize(
    "sent",
    [
        b"abc%0d%0aSet-Cookie:%20pwned=1",
        b"abc\rSet-Cookie: pwned=1",
        b"abc\r\n Set-Cookie: pwned=1",
        b"abc\nSet-Cookie: pwned=1",
        b"abc\x00def",
        b"caf\xe9-\xff\xfe",
        b"<script>alert(1)</script>",
        b"a" * 129,
        b"",
        # Sane characters, but a credential: an id is echoed, logged and audited as it is, never redacted.
        b"bs_0123abcd_" + b"S" * 43,
        b"password=hunter2hunter2",
    ],
    ids=[
        "percent-crlf",
        "bare-cr",
        "obs-fold",
        "bare-lf",
        "nul",
        "latin1",
        "markup",
        "too-long",
        "empty",
        "api-key",
        "password",
    ],
)
def test_an_unsafe_request_id_is_replaced_and_injects_nothing(live_service: Live, sent: bytes) -> None:
    status, headers, head = raw_get(live_service, sent)
    assert b"pwned" not in head and "set-cookie" not in headers
    if status == 400:  # the HTTP parser refused the request line or header outright
        return
    assert status == 200
    echoed = headers["x-request-id"]
    assert SANE.match(echoed) and echoed.encode() != sent
    assert len(echoed) == 32  # a fresh uuid4 hex


def test_a_sane_request_id_is_echoed_and_logged_as_sent(live_service: Live) -> None:
    sent = "pipeline:images/build-17.step_3+retry=1-" + "x" * 88
    assert len(sent) == 128
    status, headers, _ = raw_get(live_service, sent.encode())
    assert (status, headers["x-request-id"]) == (200, sent)
    status, headers, _ = raw_get(live_service, b"evil\r\nX-Request-ID: second-id")
    assert status in {200, 400}
    logged = [json.loads(line).get("request_id") for line in live_service.log.read_text().splitlines()
              if line.startswith("{")]  # fmt: skip
    assert sent in logged
    assert all(rid is None or SANE.match(rid) for rid in logged)
