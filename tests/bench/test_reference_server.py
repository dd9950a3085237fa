"""The reference servers (``bench/reference.py`` on PostgreSQL, ``bench/reference_sqlite.py`` on SQLite)
answer the bench's requests and write what they claim.

Each is a ceiling, so it must do the same work per request as the service, not less by accident: the state
change lands as an event, a build row and the status counts; the create as a build and its event; a key
that is not in its memory is refused. One real gunicorn with its two workers on a test database, per store.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import threading
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from bench.db import Database
from bench.reference_sqlite import Database as Reference

from bench import servers
from buildstate.auth import keys

BUILD = {"platform": "aws", "os_version": "rhel-9.4", "image_type": "base", "build_id": "ref-1", "labels": {}}


def call(url: str, method: str = "GET", body: Any = None, key: str | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data else {}
    if key:
        headers["X-API-Key"] = key
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def _pg(url: str, query: str, *args: Any) -> list[Any]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


def _sql(url: str, query: str, *args: Any) -> list[Any]:
    """``query`` (``$1`` placeholders) on either store."""
    if url.startswith("postgresql"):
        return asyncio.run(_pg(url, query, *args))
    conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        return conn.execute(re.sub(r"\$\d+", "?", query), args).fetchall()
    finally:
        conn.close()


def test_the_reference_server_answers_the_bench_requests_with_the_same_writes(
    database_url: str, tmp_path: Path
) -> None:
    key = keys.generate()
    _sql(
        database_url,
        "INSERT INTO api_keys (prefix, key_hash, name, scopes, created_at, created_by) "
        "VALUES ($1, $2, 'ref', '[\"read\", \"write\"]', $3, 'test')",
        key.public_id,
        key.digest,
        datetime.now(UTC) if database_url.startswith("postgresql") else "2026-01-01T00:00:00.000000Z",
    )
    kind = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    with servers.reference(Database(kind, database_url, "test"), tmp_path / "reference.log") as ref:
        assert call(f"{ref.url}/bench/ping", key=key.key) == (200, {"ok": True})
        assert call(f"{ref.url}/bench/ping", key=keys.generate().key)[0] == 401
        assert call(f"{ref.url}/builds", "POST", BUILD)[0] == 401
        status, created = call(f"{ref.url}/builds", "POST", BUILD, key.key)
        assert status == 201
        assert call(f"{ref.url}/builds", "POST", BUILD, key.key)[0] == 409
        for code in (5, 100):
            status, changed = call(f"{ref.url}/builds/ref-1/state", "POST", {"state_code": code}, key.key)
            assert status == 200 and changed["state_code"] == code
        assert call(f"{ref.url}/builds/ref-1/reset", "POST", {"reason": "again"}, key.key)[0] == 200
        status, build = call(f"{ref.url}/builds/ref-1", key=key.key)
        assert status == 200 and (build["state_code"], build["status"], build["attempt"]) == (0, "running", 2)
        assert call(f"{ref.url}/builds/no-such", key=key.key)[0] == 404
    events = _sql(database_url, "SELECT type, state_code, from_state_code FROM events ORDER BY seq")
    assert [tuple(e) for e in events] == [
        ("created", 0, None),
        ("state", 5, 0),
        ("state", 100, 5),
        ("reset", 0, 100),
    ]
    counts = dict(_sql(database_url, "SELECT status, n FROM status_counts"))
    assert (counts["running"], counts.get("succeeded", 0)) == (1, 0)
    assert build["last_event_seq"] == created["event"]["seq"] + 3


def test_the_sqlite_reference_commits_the_writes_queued_together_in_one_transaction(tmp_path: Path) -> None:
    """Group commit: writes that wait while one is being written go in one transaction, each its own answer;
    one that fails is undone alone and the others commit."""
    path = str(tmp_path / "ref.db")
    setup = sqlite3.connect(path, isolation_level=None)
    setup.executescript(
        "CREATE TABLE api_keys (key_hash TEXT, revoked_at TEXT);"
        "CREATE TABLE platforms (id INTEGER PRIMARY KEY, name TEXT);"
        "CREATE TABLE os_versions (id INTEGER PRIMARY KEY, name TEXT);"
        "CREATE TABLE image_types (id INTEGER PRIMARY KEY, name TEXT);"
        "CREATE TABLE t (n INTEGER PRIMARY KEY);"
    )
    setup.close()
    reference = Reference(path, "FULL")
    started, go = threading.Event(), threading.Event()

    def first(conn: sqlite3.Connection) -> int:
        started.set()
        go.wait(10)
        conn.execute("INSERT INTO t (n) VALUES (0)")
        return 0

    def insert(n: int) -> Any:
        def work(conn: sqlite3.Connection) -> int:
            conn.execute("INSERT INTO t (n) VALUES (?)", (n,))
            if n == 3:
                raise LookupError("refused")
            return n

        return work

    async def scenario() -> list[Any]:
        held = asyncio.ensure_future(reference.write(first))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
        queued = [asyncio.ensure_future(reference.write(insert(n))) for n in range(1, 6)]
        await asyncio.sleep(0.05)  # all five are queued while the first one holds the writer
        go.set()
        return await asyncio.gather(held, *queued, return_exceptions=True)

    try:
        answers = asyncio.run(scenario())
    finally:
        reference.close()
    assert answers[:3] + answers[4:] == [0, 1, 2, 4, 5]
    assert isinstance(answers[3], LookupError)
    assert reference.batches == [1, 5]
    assert [r[0] for r in _sql(f"sqlite:///{path}", "SELECT n FROM t ORDER BY n")] == [0, 1, 2, 4, 5]
