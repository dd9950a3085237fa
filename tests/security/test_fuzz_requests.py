"""Headers, paths and queries fuzzed as thoroughly as bodies, over every route in ``ROUTES``, on both stores.

schemathesis (``test_fuzz_api.py``) generates what the OpenAPI document describes; this generates what it
does not: any bytes a header may carry (non-UTF-8, NUL, Latin-1), digits ``int()`` refuses (``²``), times
past what a store holds, UUIDs in every spelling, integers past 64 bits, percent-encoded invalid UTF-8 in
paths and queries, repeated and unknown parameters, hostile credentials, and the request shapes aiohttp's
parser refuses (two Content-Length fields, Content-Length with Transfer-Encoding). Requests are written on
raw sockets to a real service (``scripts/serve``, two workers), so nothing is tidied on the way.

For every request: no 5xx. After the run: no traceback, no ERROR line and no logging failure in the
service's log, and ``buildstate verify`` finds no drift (the fixture's teardown).

Count per store: ``BUILDSTATE_FUZZ_REQUESTS`` (CI: 300; the acceptance run is
``BUILDSTATE_FUZZ_REQUESTS=10000 scripts/test tests/security/test_fuzz_requests.py``).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import string
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.conftest import _pg_url, pg_admin
from tests.support import ServiceProcess, admin_key, assert_no_drift, call, clean_env

from buildstate.web.app import ROUTES
from buildstate.web.ui import PUBLIC as UI_ROUTES

REQUESTS = int(os.environ.get("BUILDSTATE_FUZZ_REQUESTS", "300"))
# pytest-timeout's 120 s is for one test of the usual size: a run of 10,000 requests needs longer.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120 + REQUESTS // 5)]
LINE_BREAKS = ("\u2028", "\u2029", "\x85")


@dataclass
class Target:
    store: str
    port: int
    key: str
    env: dict[str, str]
    log: Path
    statuses: Counter[int]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    data = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    url = None
    name = f"bs_fuzz_{os.getpid()}_{secrets.token_hex(4)}"
    if request.param == "postgresql":
        template = request.getfixturevalue("pg_template")
        pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        url = _pg_url(name)
    env = clean_env(
        data,
        url,
        BUILDSTATE_LOG_FORMAT="json",
        BUILDSTATE_LOG_LEVEL="DEBUG",
        BUILDSTATE_RATE_LIMIT_BURST="1000000",
        BUILDSTATE_RATE_LIMIT_PER_SECOND="1000000",
        # Fuzzed requests with made-up credentials would be throttled (429) before reaching their handlers.
        BUILDSTATE_AUTH_FAILURES_PER_CLIENT="1000000",
        # Webhooks may only target this machine, nothing is delivered in the background, and a /test
        # send gives up fast: fuzzed URLs go nowhere.
        BUILDSTATE_WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
        BUILDSTATE_WEBHOOK_DISPATCHER="false",
        BUILDSTATE_WEBHOOK_TIMEOUT_SECONDS="1",
        BUILDSTATE_STREAM_HEARTBEAT_SECONDS="1",
    )
    service = ServiceProcess(env, data / "serve.log", workers=2).start()
    found = Target(request.param, service.port, admin_key(env), env, service.log, Counter())
    headers = {"X-API-Key": found.key}
    for n in range(3):  # something for the fuzzed references to find
        body = {"platform": "aws", "os_version": "rhel-9", "image_type": "base", "build_id": f"seed-{n}"}
        assert call(f"{service.url}/builds", "POST", body, headers).status == 201
    try:
        yield found
        service.stop()
        print(f"{request.param}: {sum(found.statuses.values())} fuzzed requests, {dict(found.statuses)}")
        text = service.log.read_text(errors="replace")
        # One record a line, for every reader: no character some reader takes for a line break.
        assert not [c for c in LINE_BREAKS if c in text]
        lines = [line for line in text.split("\n") if line]
        bad = [line for line in lines if "Traceback" in line or "--- Logging error ---" in line]
        bad += [line for line in lines if line.startswith("{") and json.loads(line)["level"] == "error"]
        assert not bad, "\n".join(bad[:5])
        assert_no_drift(env)
    finally:
        service.stop()
        if url is not None:
            pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ---------------------------------------------------------------- what to send

SOME_UUID = uuid.UUID("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
NASTY = [
    "",
    " ",
    "0",
    "-1",
    "1",
    "5",
    "100",
    "²",
    "١٢",
    "٣",
    "¹⁰",
    "1_000",
    "+1",
    "0x10",
    "1e3",
    "1e999",
    "NaN",
    "Infinity",
    "9" * 19,
    "9" * 40,
    "18446744073709551616",
    "true",
    "null",
    "[]",
    "{}",
    "..",
    "../..",
    "%",
    "%00",
    "%zz",
    "'",
    '" OR 1=1 --',
    "<script>",
    "\u202e",
    "\ufeff",
    "\U0001d518",
    "é",
    "\x7f",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:00:00-05:00",
    "0000-00-00",
    "2024-02-30T00:00:00Z",
    "2024-01-01T00:00:00",
    "2024-01-01T00:00:00+99:00",
    "1970-01-01",
    "253402300800",
    str(SOME_UUID),
    str(SOME_UUID).upper(),
    SOME_UUID.hex,
    f"urn:uuid:{SOME_UUID}",
    f"{{{SOME_UUID}}}",
    "seed-0",
    "seed-1",
    "bs_00000000",
    "bs_0123abcd_" + "A" * 43,
    "admin",
    "failed,succeeded",
    "5,10,reset",
    "created,state",
    "asc",
    "desc",
    "pending",
    "x" * 300,
    "x" * 5000,
    "gzip",
    "deflate",
    "br",
    "zstd",
    "compress",
    "identity",
    "chunked",
    "gzip, chunked",
    "100-continue",
    "100-continue\u00ff",
]
texts = st.one_of(
    st.sampled_from(NASTY),
    st.text(max_size=40),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.datetimes(timezones=st.timezones() | st.none()).map(lambda d: d.isoformat()),
    st.uuids().map(str),
)
# Percent-encoded: UTF-8 of a text, or raw bytes (invalid UTF-8, lone surrogates' bytes, NUL).
encoded = st.one_of(
    texts.map(lambda t: quote(t, safe="")),
    st.binary(max_size=24).map(lambda b: quote(b, safe="")),
    texts.map(lambda t: quote(t, safe="/:@+,;=!*'()")),
)
HEADER_BYTES = bytes(b for b in range(256) if b not in b"\r\n")
header_values = st.one_of(
    st.sampled_from(NASTY).map(lambda t: t.encode()),
    st.binary(max_size=64).map(lambda b: bytes(c for c in b if c in HEADER_BYTES)),
    st.text(string.printable.strip("\r\n\x0b\x0c"), max_size=64).map(str.encode),
    st.text(max_size=32).map(lambda t: t.encode("utf-8", "surrogatepass")),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
PLAUSIBLE: dict[str, Any] = {
    "platform": st.sampled_from(["aws", "gcp", "AWS", "", "a" * 65]),
    "os_version": st.sampled_from(["rhel-9", "ubuntu-24.04"]),
    "image_type": st.sampled_from(["base", "cis"]),
    "build_id": st.sampled_from(["seed-0", "seed-1", "new-1", str(SOME_UUID), SOME_UUID.hex.upper()]) | texts,
    "state_code": st.sampled_from([0, 5, 50, 100, 101, -5, 7, "50", 1e3, True]),
    "error_message": texts,
    "reason": texts,
    "url": st.sampled_from(["http://127.0.0.1:9/hook", "http://127.0.0.1:99999/x", "ftp://x", "http://[::1"]),
}


def body_for(model: Any) -> st.SearchStrategy[bytes]:
    fields = list(model.model_fields) if model is not None else []
    value_of = {name: PLAUSIBLE.get(name, json_values) for name in fields}
    objects = st.fixed_dictionaries({}, optional={name: value_of[name] for name in fields}) | st.dictionaries(
        texts, json_values, max_size=4
    )
    return st.one_of(
        objects.map(lambda o: json.dumps(o, allow_nan=True).encode()),
        st.binary(max_size=64),
        st.sampled_from([b"", b"{", b"[]", b"null", b'{"a":' * 300, b'"\\u0000"', b"\xff\xfe"]),
    )


def query_for(model: Any) -> st.SearchStrategy[str]:
    names = list(model.model_fields) if model is not None else []
    pair = st.tuples(st.sampled_from([*names, "after", "limit", "x", ""]) if names else texts, encoded)
    return st.lists(pair, max_size=5).map(
        lambda pairs: "&".join(f"{quote(str(k), safe='')}={v}" for k, v in pairs)
    )


ROUTE_TABLE = [(r.method, r.path, r.body, r.query) for r in ROUTES]
ROUTE_TABLE += [("GET", "/openapi.json", None, None)] + [(m, p, None, None) for m, p in UI_ROUTES]
ROUTE_TABLE += [("GET", "/no/such/route", None, None), ("GET", "//health", None, None)]


HEADER_NAMES = [
    "Last-Event-ID", "Idempotency-Key", "X-Request-ID", "Content-Type", "Origin", "X-Forwarded-For",
    "Accept", "Accept-Encoding", "If-None-Match", "Range", "Cookie", "Access-Control-Request-Method",
    "X-Fuzz", "Content-Encoding", "Transfer-Encoding", "Expect",
]  # fmt: skip


@st.composite
def fuzzed_request(draw: st.DrawFn, key: str) -> bytes:
    method, template, body_model, query_model = draw(st.sampled_from(ROUTE_TABLE))
    method = draw(st.sampled_from([method] * 6 + ["GET", "POST", "PUT", "DELETE", "OPTIONS", "HEAD", "FOO"]))
    path = template
    while "{" in path:
        start, end = path.index("{"), path.index("}")
        path = path[:start] + draw(encoded.filter(lambda v: v not in {"", ".", ".."})) + path[end + 1 :]
    query = draw(query_for(query_model))
    target = path + (f"?{query}" if query else "")
    headers: list[tuple[bytes, bytes]] = [(b"Host", b"127.0.0.1")]
    credential = draw(st.sampled_from(["key"] * 6 + ["none", "bad-key", "bad-bearer", "both"]))
    if credential in {"key", "both"}:
        headers.append((b"X-API-Key", key.encode()))
    if credential == "bad-key":
        headers.append((b"X-API-Key", draw(header_values)))
    if credential in {"bad-bearer", "both"}:
        headers.append((b"Authorization", b"Bearer " + draw(header_values)))
    names = draw(st.lists(st.sampled_from(HEADER_NAMES), max_size=4))
    headers.extend((name.encode(), draw(header_values)) for name in names)
    body = b""
    if method in {"POST", "PUT", "PATCH"} or draw(st.booleans()):
        body = draw(body_for(body_model))
        if not any(name == b"Content-Type" for name, _ in headers):
            headers.append((b"Content-Type", b"application/json"))
    headers.append((b"Content-Length", str(len(body)).encode()))
    headers.append((b"Connection", b"close"))
    head = f"{method} {target} HTTP/1.1\r\n".encode() + b"".join(n + b": " + v + b"\r\n" for n, v in headers)
    return head + b"\r\n" + body


SHAPES = [  # what the HTTP parser must refuse, as one log line each
    b"GET /builds HTTP/1.1\r\nHost: x\r\nX-Fuzz: a\x00b\r\n\r\n",
    b"POST /builds HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    b"POST /builds HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST /builds HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    b"GET /builds HTTP/1.1\r\nHost: x\r\nX-Fuzz: a\rb\r\n\r\n",
    b"GET /builds HTTP/1.1\r\nHost: x\r\n X-Folded: yes\r\n\r\n",
    b"GET /builds/\xff HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /builds HTTP/1.1\r\nHost: x\r\nX-Fuzz: " + b"a" * 20000 + b"\r\n\r\n",
    b"G\x00T /builds HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /builds HTTP/9.9\r\nHost: x\r\n\r\n",
    b"GET /builds HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig\x01tail\r\n\r\n",
]


def send(port: int, raw: bytes, timeout: float = 20) -> int:
    """Write ``raw``, read the answer's status (0: the service closed without one)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        if b"text/event-stream" not in data.lower():  # an event stream never ends by itself
            while sock.recv(65536):
                pass
    line = data.split(b"\r\n", 1)[0].split()
    return int(line[1]) if len(line) > 1 and re.fullmatch(rb"[0-9]{3}", line[1]) else 0


def test_malformed_requests_are_refused_with_a_4xx(target: Target) -> None:
    for raw in SHAPES:
        status = send(target.port, raw.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1))
        assert 400 <= status < 500, (raw[:80], status)


def test_fuzzed_headers_paths_and_queries_never_get_a_5xx(target: Target) -> None:
    @settings(
        max_examples=REQUESTS,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,  # the same requests on every run: a CI failure reproduces locally
        database=None,
    )
    @given(raw=fuzzed_request(target.key))
    def one(raw: bytes) -> None:
        status = send(target.port, raw)
        target.statuses[status] += 1
        assert status < 500, raw[:300]

    one()
    assert sum(target.statuses.values()) >= REQUESTS
    assert target.statuses[0] <= REQUESTS // 100, target.statuses  # the service answers nearly every one
