"""Hostile headers, path parameters and query values: each a clear 4xx on both stores, never a 500.

The regressions of issue 13, finding 4, one mechanism each: credentials that are not printable ASCII
(``Authenticator.identify``), integers from paths and headers (``routes.int_param``: ASCII digits only),
and times from queries and cursors (``models.QueryTime``: converted to UTC, within what both stores hold).
Raw sockets, because an HTTP client library would refuse to send most of this.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import logging
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from buildstate.web.parser_log import ParserRejections

Client = TestClient[Any, Any]


async def raw(client: Client, request: bytes, later: bytes = b"") -> tuple[int, bytes]:
    """Send ``request`` as written (then ``later``, a moment after); the status and body of the answer."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(request)
    await writer.drain()
    if later:
        await asyncio.sleep(0.05)
        writer.write(later)
        await writer.drain()
    answer = await reader.read()
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def get(path: bytes, *headers: bytes) -> bytes:
    return (
        b"GET "
        + path
        + b" HTTP/1.1\r\nHost: x\r\n"
        + b"".join(h + b"\r\n" for h in headers)
        + (b"Connection: close\r\n\r\n")
    )


@pytest.fixture
def no_unhandled_errors(caplog: pytest.LogCaptureFixture) -> Any:
    caplog.set_level(logging.DEBUG)
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage()[:200] for r in errors]


@pytest.mark.parametrize(
    "header",
    [b"X-API-Key: bs_\xff\xfe", b"X-API-Key: bs_12345678_" + b"\xe9" * 43, b"Authorization: Bearer \xff\xfe",
     b"Authorization: Bearer eyJ\xc3(", b"X-API-Key: bs_\xc2\xa0x"],
)  # fmt: skip
async def test_a_credential_that_is_not_printable_ascii_is_a_401(
    anon_client: Client, header: bytes, no_unhandled_errors: None
) -> None:
    status, body = await raw(anon_client, get(b"/builds", header))
    assert status == 401, body
    assert json.loads(body)["type"].endswith("/invalid-credential")


@pytest.mark.parametrize("digits", ["%C2%B2", "%D9%A1%D9%A2", "%EF%BC%91", "1%E2%80%8B", "+1", "1_0", "0x1"])
async def test_an_integer_in_a_path_is_ascii_digits_or_a_400(
    client: Client, admin_key: str, digits: str, no_unhandled_errors: None
) -> None:
    key = f"X-API-Key: {admin_key}".encode()
    for path in ("/events/{}", "/admin/webhooks/{}", "/admin/webhooks/{}/deliveries",
                 "/admin/webhooks/1/deliveries/{}"):  # fmt: skip
        status, body = await raw(client, get(path.format(digits).encode(), key))
        assert status == 400, (path, digits, body)


@pytest.mark.parametrize("value", ["²", "١٢", "1²", "+5", " 5 5"])
async def test_last_event_id_is_ascii_digits_or_a_400(
    client: Client, admin_key: str, value: str, no_unhandled_errors: None
) -> None:
    request = get(b"/events/stream", f"X-API-Key: {admin_key}".encode(), b"Last-Event-ID: " + value.encode())
    status, body = await raw(client, request)
    assert status == 400, body
    assert json.loads(body)["type"].endswith("/bad-last-event-id")


@pytest.mark.parametrize(
    "path",
    [
        "/builds?updated_since=0001-01-01T00:00:00%2B14:00",
        "/events?updated_since=0001-01-01T00:00:00%2B14:00",
        "/events/stream?updated_since=0001-01-01T00:30:00%2B01:00",
        "/audit?since=9999-12-31T23:00:00-05:00",
        "/builds?updated_since=9999-12-31T23:59:59-00:01",
    ],
)
async def test_a_time_past_what_a_store_holds_is_a_422(
    client: Client, path: str, no_unhandled_errors: None
) -> None:
    answer = await client.get(path)
    assert answer.status == 422, await answer.text()
    assert "out of range" in json.dumps(await answer.json())


async def test_the_earliest_and_latest_times_are_answered(client: Client, no_unhandled_errors: None) -> None:
    for since in ("0001-01-01T00:00:00Z", "0001-01-01T14:00:00+14:00", "9999-12-31T23:59:59.999999Z"):
        for path in ("/builds", "/events", "/audit"):
            name = "since" if path == "/audit" else "updated_since"
            answer = await client.get(path, params={name: since})
            assert answer.status == 200, (path, since, await answer.text())


async def test_a_forged_cursor_with_an_impossible_time_is_a_400(
    client: Client, no_unhandled_errors: None
) -> None:
    for stamp in ("0001-01-01T00:00:00+14:00", "not a time", 5):
        forged = base64.urlsafe_b64encode(json.dumps([stamp, "0" * 32]).encode()).decode().rstrip("=")
        answer = await client.get("/builds", params={"cursor": forged})
        assert answer.status == 400, (stamp, await answer.text())
    answer = await client.get("/builds", params={"cursor": "\u00e9\u00e9"})
    assert answer.status == 400


async def test_a_time_with_an_offset_names_the_same_instant_on_both_stores(client: Client) -> None:
    """SQLite compared the text of a time with an offset as if it were UTC."""
    created = await client.post(
        "/builds", json={"platform": "aws", "os_version": "rhel-9", "image_type": "base", "build_id": "t-1"}
    )
    updated_at = datetime.fromisoformat((await created.json())["updated_at"])
    east = timezone(timedelta(hours=5))
    before, after = updated_at - timedelta(hours=1), updated_at + timedelta(hours=1)
    for since, found in ((before, ["t-1"]), (after, [])):
        for spelled in (since.isoformat(), since.astimezone(east).isoformat()):
            page = await (await client.get("/builds", params={"updated_since": spelled})).json()
            assert [b["build_id"] for b in page["builds"]] == found, spelled
            feed = await (await client.get("/events", params={"updated_since": spelled})).json()
            assert [e["build"]["build_id"] for e in feed["events"]] == found, spelled


async def test_a_sign_in_form_with_too_many_fields_is_a_400(anon_client: Client) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    body = b"grant_type=password&username=a&password=b" + b"&x=1" * 200_000
    answer = await anon_client.post("/token", data=body, headers=form)
    assert answer.status == 400
    assert (await answer.json())["type"].endswith("/bad-form")


async def test_json_labelled_as_a_form_gets_every_json_check(anon_client: Client) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    flood = b'{"username": "a", "password": "b", "scope": ' + b"[" + b"[]," * 200_000 + b"[]]}"
    answer = await anon_client.post("/token", data=flood, headers=form)
    assert answer.status == 422
    assert (await answer.json())["type"].endswith("/too-many-values")


def post(path: bytes, body: bytes, *headers: bytes) -> bytes:
    return (
        b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + b"".join(h + b"\r\n" for h in headers)
        + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
    )  # fmt: skip


@pytest.mark.parametrize(
    ("coding", "status", "slug"),
    [(b"gzip", 400, "unreadable-body"), (b"deflate", 400, "unreadable-body"),
     (b"GZIP", 400, "unreadable-body"),
     (b"compress", 415, "unsupported-content-encoding"), (b"x-gzip", 415, "unsupported-content-encoding"),
     (b"gzip, gzip", 415, "unsupported-content-encoding"), (b"\xff", 415, "unsupported-content-encoding")],
)  # fmt: skip
@pytest.mark.parametrize("path", [b"/token", b"/builds"])
async def test_a_body_that_is_not_in_its_content_encoding_is_a_4xx_without_a_traceback(  # noqa: PLR0917
    anon_client: Client, admin_key: str, path: bytes, coding: bytes, status: int, slug: str,
    no_unhandled_errors: None,
) -> None:  # fmt: skip
    """A body labelled gzip or deflate that is not was a 500 with two tracebacks, anonymously on /token;
    a coding aiohttp does not decode reached the handler undecoded. (A body whose undecodable end arrives
    with the rest is refused by aiohttp's parser before any handler runs: its own 400, logged as one line
    by ``ParserRejections``, as the service installs it.)"""
    request = post(path, b"notgzip!", b"X-API-Key: " + admin_key.encode(), b"Content-Encoding: " + coding)
    server_log, one_line = logging.getLogger("aiohttp.server"), ParserRejections()
    server_log.addFilter(one_line)
    try:
        for first, later in ((request, b""), (request[:-4], request[-4:])):
            got, body = await raw(anon_client, first, later)
            assert got == status, body
            if body.startswith(b"{"):
                assert json.loads(body)["type"].endswith(f"/{slug}")
            else:
                assert status == 400  # the parser's own answer
    finally:
        server_log.removeFilter(one_line)


async def test_a_compressed_body_is_still_read(anon_client: Client, admin_key: str) -> None:
    body = gzip.compress(
        json.dumps(
            {"platform": "aws", "os_version": "rhel-9", "image_type": "base", "build_id": "gz"}
        ).encode()
    )
    got, answer = await raw(
        anon_client, post(b"/builds", body, b"X-API-Key: " + admin_key.encode(), b"Content-Encoding: gzip")
    )
    assert got == 201, answer


@pytest.mark.parametrize(
    "expect", [b"100-continue\xff", b"\xff\xfe", b"bogus", b"100-continue", b"100-CONTINUE"]
)
@pytest.mark.parametrize("path", [b"/token", b"/nowhere"])
async def test_any_expect_header_is_answered_by_the_route_not_a_500(
    anon_client: Client, path: bytes, expect: bytes, no_unhandled_errors: None
) -> None:
    """aiohttp's Expect handler runs before the middlewares: bytes it could not encode were a text 500 with
    a traceback, other values a text 417 echoing them. Now 100-continue is answered and the rest ignored."""
    reader, writer = await asyncio.open_connection(anon_client.host, anon_client.port)
    writer.write(post(path, b"{}", b"Expect: " + expect))
    await writer.drain()
    answer = await reader.read()
    writer.close()
    if expect.lower() == b"100-continue":
        assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        answer = answer.removeprefix(b"HTTP/1.1 100 Continue\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert int(head.split()[1]) == (422 if path == b"/token" else 401)
    assert b"application/problem+json" in head and expect not in body


# ---------------------------------------------------------------- artifacts (issue 16)

LATEST = b"/artifacts/latest?platform=aws&os_version=rhel-8.8&image_type=base"


async def _succeeded_with_an_ami(client: Client) -> None:
    build = {"platform": "aws", "os_version": "rhel-8.8", "image_type": "base", "build_id": "ami-1"}
    assert (await client.post("/builds", json=build)).status == 201
    amis = {"artifacts": [{"region": "eu-west-1", "kind": "ami", "external_id": "ami-0abc"}]}
    assert (await client.post("/builds/ami-1/artifacts", json=amis)).status == 200
    assert (await client.post("/builds/ami-1/state", json={"state_code": 100})).status == 200


@pytest.mark.parametrize(
    ("query", "status"),
    [
        (b"&label.%FF=1", 422), (b"&label.a%00b=1", 422), (b"&label.%E2%80%8B=1", 422),
        (b"&label.a=%00", 422), (b"&label.a=%FF", 404), (b"&label." + b"k" * 5000 + b"=1", 422),
        (b"&label.a=" + b"a" * 1025, 422),
        (b"&label.a\"]')--=1", 422), (b"&label.$.a=1", 422), (b"&label.a=" + b"%E2%80%AE" * 400, 404),
        (b"&region=%0Aeu", 422), (b"&region=eu-west-1%00", 422), (b"&region=" + b"e" * 200, 422),
        (b"&kind=%C3%A1mi", 422), (b"&kind=ami%20", 422),
        (b"&" + b"&".join(b"label.k%d=v" % n for n in range(300)), 422),
    ],
)  # fmt: skip
async def test_a_hostile_artifact_lookup_is_a_clear_4xx(
    client: Client, admin_key: str, query: bytes, status: int, no_unhandled_errors: None
) -> None:
    await _succeeded_with_an_ami(client)
    got, body = await raw(client, get(LATEST + query, f"X-API-Key: {admin_key}".encode()))
    assert got == status, body
    assert json.loads(body)["status"] == status


@pytest.mark.parametrize(
    ("accept", "answer"),
    [
        (b"text/plain", b"ami-0abc\n"), (b"TEXT/PLAIN;q=1.000", b"ami-0abc\n"), (b"text/plain\xff", None),
        (b"text/plain;q=1e999", None), (b"text/plain;q=NaN", None), (b"text/plain;q=-1", None),
        (b"text/plain;;;q==0.5", None), (b"*/*;q=0.1," * 500, None), (b"\xff\xfe/\xfd", None),
        (b"text/plain;q=0.5," * 300, b"ami-0abc\n"),
        (b"text/plain;q=0.5," * 100 + b"application/json", None),
    ],
)  # fmt: skip
async def test_any_accept_header_gets_json_or_the_id_as_text(
    client: Client, admin_key: str, accept: bytes, answer: bytes | None, no_unhandled_errors: None
) -> None:
    """406 is never the answer: JSON unless text/plain is preferred, whatever the header holds."""
    await _succeeded_with_an_ami(client)
    got, body = await raw(
        client, get(LATEST + b"&region=eu-west-1", f"X-API-Key: {admin_key}".encode(), b"Accept: " + accept)
    )
    assert got == 200, body
    if answer is None:
        assert json.loads(body)["external_id"] == "ami-0abc"
    else:
        assert body == answer


@pytest.mark.parametrize(
    "external_id",
    ["ami-1\u2028", "ami-\u202e1", "ami-1\r\nX-Injected: 1", "\u00a0ami-1", "ami-\u0085", "ami-1\t", ""],
)
async def test_an_external_id_that_is_not_one_printable_line_is_refused(
    client: Client, external_id: str, no_unhandled_errors: None
) -> None:
    """What ``Accept: text/plain`` answers is one line: nothing that a shell, a terminal or a header
    would read as more (a line separator, a bidi override, a CR LF) is ever recorded."""
    build = {"platform": "aws", "os_version": "rhel-8.8", "image_type": "base", "build_id": "hostile-1"}
    assert (await client.post("/builds", json=build)).status == 201
    body = {"artifacts": [{"kind": "ami", "external_id": external_id}]}
    answer = await client.post("/builds/hostile-1/artifacts", json=body)
    assert answer.status == 422, await answer.text()
    listed = await (await client.get("/builds/hostile-1/artifacts")).json()
    assert listed["artifacts"] == []


@pytest.mark.parametrize("ref", [b"%FF", b"..%2F..%2Fadmin", b"%00", b"a" * 4000, b"%E2%80%AE"])
@pytest.mark.parametrize("route", [b"/builds/{}/artifacts", b"/builds/{}/packer-manifest"])
async def test_a_hostile_build_reference_on_the_artifact_routes_is_a_4xx(
    client: Client, admin_key: str, ref: bytes, route: bytes, no_unhandled_errors: None
) -> None:
    path = route.replace(b"{}", ref)
    key = f"X-API-Key: {admin_key}".encode()
    got, body = await raw(client, get(path, key))
    assert got in {404, 405, 422}, (path, body)
    got, body = await raw(client, post(path, b'{"artifacts": [{"kind": "ami", "external_id": "x"}]}', key))
    assert got in {404, 422}, (path, body)
