"""The Concourse scripts fed what a broken pipeline, worker or server can hand them: malformed stdin,
directories that are missing or unwritable, a server answering HTML or garbage. Each run ends in one
``buildstate <script>: ...`` line on stderr, a non-zero exit and nothing on stdout (``Run.error``), so the
ATC shows the reason and never parses half a result. Reuses the resource harness and scripted server of
tests/resource (which covers bad source/params values, retries, TLS and secrets)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "resource"))  # the harness, by path

import resource_harness as harness
from resource_fake_server import FakeServer, Reply, problem

SCRIPTS = ["check", "in", "out"]


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer() as fake:
        yield fake


def run_bytes(script: str, stdin: bytes, args: list[str]) -> harness.Run:
    completed = subprocess.run(
        [str(harness.SCRIPTS[script]), *args], input=stdin, capture_output=True, env=harness.build_env(),
        timeout=60, check=False,
    )  # fmt: skip
    return harness.Run(script, completed.returncode, completed.stdout.decode(), completed.stderr.decode())


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize(
    "stdin",
    [b"", b"   ", b"null", b"[]", b'"source"', b"42", b'{"source": {', b'{"source": "http://x"}',
     b"\xff\xfe{\x00}", b'{"source": {"url": "\xff"}}', b"[" * 100_000, b'{"source": {}} trailing'],
    ids=["empty", "blank", "null", "list", "string", "number", "truncated", "source-string", "binary",
         "invalid-utf8", "deep", "trailing"],
)  # fmt: skip
def test_malformed_stdin_fails_in_one_line(script: str, stdin: bytes, tmp_path: Path) -> None:
    run = run_bytes(script, stdin, [str(tmp_path)])
    assert run.error().startswith(f"buildstate {script}: ")


EVENT = {
    "seq": 7, "type": "state", "recorded_at": "2026-11-27T06:41:10.001000Z", "attempt": 1, "state_code": 50,
    "from_state_code": 25, "status": "running", "message": None, "failure": None, "reason": None,
    "actor": "key:bs_00000000", "provenance": None, "duration_ms": 1,
    "build": {"id": "6f1c0000-0000-4000-8000-000000000001", "build_id": "b-1", "platform": "aws",
              "os_version": "rhel-8.8", "image_type": "base", "labels": {},
              "created_at": "2026-11-27T06:30:00.123456Z"},
}  # fmt: skip


def test_in_cannot_write_its_destination(server: FakeServer, tmp_path: Path) -> None:
    # The event, and (in asks for the build's artifacts since issue 16) an empty list of artifacts.
    server.fallback = lambda request: Reply(
        200, {"artifacts": []} if request.path.endswith("/artifacts") else EVENT
    )
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the destination's parent should be")
    run = harness.get({"url": server.url}, {"seq": "7"}, blocker / "get")
    assert "not-a-directory" in run.error()


def test_out_with_a_missing_sources_directory_and_a_build_file(server: FakeServer, tmp_path: Path) -> None:
    run = harness.put({"url": server.url}, {"build_file": "ids/build_id", "state": 50}, tmp_path / "missing")
    assert "ids/build_id" in run.error()
    assert server.requests == []


def test_out_with_a_build_file_that_is_a_directory_or_binary(server: FakeServer, tmp_path: Path) -> None:
    (tmp_path / "ids" / "build_id").mkdir(parents=True)
    run = harness.put({"url": server.url}, {"build_file": "ids/build_id", "state": 50}, tmp_path)
    assert "ids/build_id" in run.error()
    assert server.requests == []
    # Binary content is read as text with replacement characters; the service then finds no such build
    # (a NUL in the path is a 404 there), and the script says so in one line.
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "build_id").write_bytes(b"\xff\xfe\x00garbage")
    server.queue(problem(404, "Not Found", "no such resource: the path holds a NUL character"))
    run = harness.put({"url": server.url}, {"build_file": "bin/build_id", "state": 50}, tmp_path)
    assert "404 Not Found" in run.error()


GARBAGE = [
    Reply(
        200, b"<!DOCTYPE html><html><body><h1>Welcome to nginx!</h1></body></html>", content_type="text/html"
    ),
    Reply(
        502,
        b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
        content_type="text/html",
    ),
    Reply(200, b"\x00\xff\xfe garbage \x1b[31m", content_type="application/octet-stream"),
    Reply(200, b'{"events": [{"seq": 1', content_type="application/json"),
    Reply(200, b"", content_type="application/json"),
    Reply(200, b"[1, 2, 3]", content_type="application/json"),
    Reply(200, b'{"events": "all of them", "next_after": "x", "has_more": "maybe"}'),
    Reply(200, b"[" * 50_000 + b"]" * 50_000, content_type="application/json"),
    Reply(404, b"Not Found", content_type="text/plain"),
]
GARBAGE_IDS = [
    "html-200",
    "html-502",
    "binary",
    "truncated-json",
    "empty",
    "list",
    "wrong-types",
    "deep",
    "text-404",
]


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("reply", GARBAGE, ids=GARBAGE_IDS)
def test_a_server_answering_garbage_is_a_clear_error(
    script: str, reply: Reply, server: FakeServer, tmp_path: Path
) -> None:
    server.fallback = lambda _request: reply
    source: dict[str, Any] = {"url": server.url, "retry_seconds": 0}
    if script == "check":
        run = harness.check(source, {"seq": "1"})
    elif script == "in":
        run = harness.get(source, {"seq": "1"}, tmp_path / "get")
    else:
        run = harness.put(source, {"build": "b-1", "state": 50}, tmp_path)
    error = run.error()
    assert "Traceback" not in run.stderr and len(error) < 600, error
    if reply.content_type == "text/html":
        assert "<html" not in error.lower() or "502" in error  # markup is cut down, not dumped
