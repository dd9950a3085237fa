"""Logs: one JSON object a line with the request's fields, text on a terminal, no secrets."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from buildstate.observability.logging import JsonFormatter, TextFormatter, choose_format, scrub
from buildstate.store import Store
from buildstate.store.access import AuditFilter

Client = TestClient[Any, Any]
SECRET_KEY = "bs_live_" + "s3cr3t" * 6


def record(message: str = "hello %s", *args: Any, **extra: Any) -> logging.LogRecord:
    made = logging.LogRecord("buildstate.test", logging.INFO, __file__, 1, message, args or None, None)
    made.__dict__.update(extra)
    return made


def test_json_lines_carry_the_request_fields_and_nothing_else() -> None:
    line = JsonFormatter().format(
        record("GET %s", "/builds", request_id="r-1", route="/builds", status=200, duration_ms=1.5,
               actor="key:bs_ab12cd", headers={"X-API-Key": SECRET_KEY})
    )  # fmt: skip
    entry = json.loads(line)
    assert "\n" not in line
    assert entry["message"] == "GET /builds"
    assert entry["level"] == "info"
    assert entry["timestamp"].endswith("+00:00")
    assert (entry["request_id"], entry["route"], entry["status"], entry["actor"]) == (
        "r-1", "/builds", 200, "key:bs_ab12cd",
    )  # fmt: skip
    assert "headers" not in entry
    assert SECRET_KEY not in line


def test_text_lines_are_for_people() -> None:
    line = TextFormatter().format(record("started", request_id="r-2", status=201))
    assert "INFO" in line
    assert line.endswith("started request_id=r-2 status=201")


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        ("connect postgresql://bs:hunter2@db:5432/bs failed", "hunter2"),
        ("Authorization: Bearer eyJhbGciOi.payload.sig", "eyJhbGciOi.payload.sig"),
        (f"X-API-Key: {SECRET_KEY}", SECRET_KEY),
        (f"headers={{'X-API-Key': '{SECRET_KEY}'}}", SECRET_KEY),
        # What aiohttp's parser quotes from a refused header line: an escaped byte inside the token.
        ("Invalid header value char: b'Authorization: Bearer eyJhbGciOi.e30.sig\\x01tail'", "tail"),
        ("b'X-API-Key: bs_0123abcd_" + "S" * 43 + "\\x00'", "S" * 43),
        ("Authorization: Basic YWxpY2U6aHVudGVyMg==", "YWxpY2U6aHVudGVyMg=="),
        ("Proxy-Authorization: Digest username=alice", "username=alice"),
        ("retrying with key bs_0123abcd_" + "k" * 43 + " now", "k" * 43),
        ("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl in a sentence", "c2lnbmF0dXJl"),
    ],
)
def test_credentials_are_scrubbed_from_messages(text: str, hidden: str) -> None:
    assert hidden not in scrub(text)
    assert "***" in scrub(text)
    assert hidden not in JsonFormatter().format(record(text.replace("%", "%%")))


def test_auto_format_is_text_on_a_terminal_and_json_elsewhere() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert choose_format("auto", Terminal()) == "text"
    assert choose_format("auto", io.StringIO()) == "json"
    assert choose_format("json", Terminal()) == "json"
    assert choose_format("text", io.StringIO()) == "text"


async def test_each_request_is_logged_once_with_id_route_status_and_actor(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="buildstate.access")
    body = {"platform": "aws", "os_version": "rhel-9", "image_type": "base", "build_id": "log-1"}
    headers = {"X-Request-ID": "pipeline-run-42", "Authorization": f"Bearer {SECRET_KEY}"}
    response = await client.post("/builds", json=body, headers=headers)
    assert response.headers["X-Request-ID"] == "pipeline-run-42"
    await client.get("/builds/log-1/state", headers={"X-Request-ID": "bad id <script>"})
    await client.get("/health")

    access = [r for r in caplog.records if r.name == "buildstate.access"]
    lines = [json.loads(JsonFormatter().format(r)) for r in access]
    by_route = {line["route"]: line for line in lines}
    created = by_route["/builds"]
    assert created["request_id"] == "pipeline-run-42"
    assert created["status"] == response.status
    assert created["method"] == "POST"
    assert created["duration_ms"] >= 0
    assert isinstance(created["actor"], str)
    state = by_route["/builds/{ref}/state"]
    assert len(state["request_id"]) == 32  # the unsafe id was replaced by a fresh one
    assert by_route["/health"]["level"] == "debug"  # probes stay out of INFO
    assert [line["route"] for line in lines].count("/builds") == 1
    assert not any(SECRET_KEY in JsonFormatter().format(r) for r in caplog.records)


def test_a_request_the_http_parser_refuses_is_one_warning_line_without_a_traceback() -> None:
    from aiohttp.http_exceptions import BadHttpMessage

    from buildstate.web.parser_log import ParserRejections

    secret = "bs_0123abcd_" + "Q" * 43
    error = BadHttpMessage(f"Invalid header value char:\n\n    b'X-API-Key: {secret}\\x00'\n     ^")
    made = logging.LogRecord(
        "aiohttp.server", logging.ERROR, __file__, 1, "Error handling request from %s", ("10.1.2.3",),
        (BadHttpMessage, error, None),
    )  # fmt: skip
    assert ParserRejections().filter(made)
    line = JsonFormatter().format(made)
    entry = json.loads(line)
    assert entry["level"] == "warning"
    assert entry["message"].startswith("refused a malformed HTTP request from 10.1.2.3 (400): Invalid header")
    assert "Traceback" not in line
    assert "\n" not in entry["message"]
    assert "Q" * 43 not in line


def test_other_errors_of_aiohttps_server_logger_keep_their_traceback() -> None:
    from buildstate.web.parser_log import ParserRejections

    error = RuntimeError("a bug")
    made = logging.LogRecord(
        "aiohttp.server",
        logging.ERROR,
        __file__,
        1,
        "Error handling request",
        None,
        (RuntimeError, error, None),
    )
    assert ParserRejections().filter(made)
    assert made.levelno == logging.ERROR
    assert "RuntimeError: a bug" in JsonFormatter().format(made)


def test_a_line_break_in_a_path_cannot_start_a_log_line_of_its_own() -> None:
    """JSON lets U+2028, U+2029 and U+0085 stand unescaped in a string, and many readers take them for
    line breaks; a text line would print a decoded newline as it is (issue 13's fuzzing found it)."""
    forged = '/builds/x\u2028{"level": "error", "message": "forged"}\x85\n'
    made = record("GET %s", forged, path=forged)
    line = JsonFormatter().format(made)
    assert len(line.splitlines()) == 1
    assert json.loads(line)["path"] == forged
    text = TextFormatter().format(made)
    assert len(text.splitlines()) == 1
    assert "forged" in text


async def test_a_key_pasted_into_a_path_is_neither_logged_nor_audited(
    anon_client: Client, make_key: Any, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """``curl -X POST $URL/builds/$KEY/state``: the path is the client's text, so it is redacted too, in the
    access line's fields (not only its message) and in the audit row's target."""
    caplog.set_level(logging.DEBUG)
    key = await make_key("read", "write")
    await anon_client.post(f"/builds/{key}/state", json={"state_code": 5})  # 401: audited as denied
    await anon_client.post(f"/builds/{key}/state", json={"state_code": 5}, headers={"X-API-Key": key})
    lines = [JsonFormatter().format(r) + TextFormatter().format(r) for r in caplog.records]
    assert [line for line in lines if key[12:] in line] == []
    assert any(f'"path": "/builds/{key[:12]}***/state"' in line for line in lines)
    rows = await store.access.list_audit(AuditFilter())
    assert {row.target for row in rows if row.action == "build.state"} == {f"{key[:12]}***"}


def test_json_lines_are_what_json_dumps_makes_of_the_entry() -> None:
    """The formatter writes the line itself: it must be byte for byte the encoder's line."""
    odd = object()
    made = record(
        "say \"%s\" \\ \t\u00e9\u2603", "x", request_id="r\"1\\", route="/b/{ref}", status=True,
        duration_ms=float("nan"), actor=odd, remote=None, method="G\x01T", path="/p\u00e9\x7f",
    )  # fmt: skip
    entry = json.loads(JsonFormatter().format(made).replace("NaN", '"nan"'))
    expected = {
        "timestamp": entry["timestamp"], "level": "info", "logger": "buildstate.test",
        "message": "say \"x\" \\ \t\u00e9\u2603", "pid": made.process, "request_id": "r\"1\\",
        "method": "G\x01T", "route": "/b/{ref}", "path": "/p\u00e9\x7f", "status": True,
        "duration_ms": float("nan"), "actor": odd,
    }  # fmt: skip
    assert JsonFormatter().format(made) == json.dumps(expected, ensure_ascii=False, default=str)
    for value in (3, 2.5, -0.0, 10**30, 1e300, float("inf"), "", None):
        made = record("m", status=value)
        line = JsonFormatter().format(made)
        entry = json.loads(line)
        wanted = {k: v for k, v in entry.items() if k != "status"}
        if value is not None:
            wanted["status"] = value
        assert line == json.dumps(wanted, ensure_ascii=False)
