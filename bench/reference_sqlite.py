"""The reference ceiling on SQLite: the same minimal aiohttp server as ``bench/reference.py``, on sqlite3.

The same routes, answers and writes as the PostgreSQL reference, and the same omissions: no audit row, no
ordered feed, no idempotency, no rules beyond what the SQL does, no middleware; API keys and lookup ids in
memory (read once at start-up). Same gunicorn worker class, worker count and keep-alive as the service
(``bench/serve.py``), on a database of its own with the same schema and history.

The plain ``sqlite3`` module, not aiosqlite: aiosqlite runs every statement on its connection's thread,
one hand-over per statement (four or five per write), where a minimal server can hand the whole
transaction to a thread in one call. So, per worker:

- reads on the event loop itself, on one connection: a point read by a unique index, which in WAL mode
  never waits for a writer (sqlite3 releases the GIL while SQLite works);
- each write as the minimal statements SQLite needs (SQLite has no data-modifying CTE, so the one
  statement of the PostgreSQL reference is three or four), run on the worker's one writer thread, so the
  commit's fsync does not stop the loop; the writer **group-commits**: it takes every write queued at
  that moment into one ``BEGIN IMMEDIATE`` ... ``COMMIT`` (one fsync for all of them), each write under
  a ``SAVEPOINT`` of its own with its own answer, so a failing write is rolled back alone and the others
  commit, as the service's SQLite writer does;
- the two workers' writers take turns through an ``flock`` on ``<database>.write-lock`` (the kernel wakes
  the next one as soon as a commit is done) instead of SQLite's busy handler, which sleeps in steps of
  milliseconds; the service hands its writers over the same way, so the two compare alike there.

WAL, ``synchronous`` as the service (FULL; ``BENCH_REFERENCE_SYNCHRONOUS``), foreign keys on as the
service. The database is ``BENCH_REFERENCE_DSN`` (``sqlite:///<path>``).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import queue
import sqlite3
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiohttp import web

# The parts that do not touch the database are the PostgreSQL reference's own: one minimal server, two stores.
from bench.reference import _KEYS, _authorized, _json, minimal_app

T = TypeVar("T")
_TABLES = ("platforms", "os_versions", "image_types")

_BUILD = """
SELECT b.id, b.build_id, p.name AS platform, o.name AS os_version, t.name AS image_type, b.state_code,
       b.status, b.attempt, b.labels, b.message, b.created_at, b.updated_at, b.last_event_seq
FROM builds b JOIN platforms p ON p.id = b.platform_id JOIN os_versions o ON o.id = b.os_version_id
JOIN image_types t ON t.id = b.image_type_id WHERE b.build_id = ?
"""
_LOCK_BUILD = (
    "SELECT id, state_code, status, attempt, platform_id, os_version_id, image_type_id FROM builds "
    "WHERE build_id = ?"
)
_EVENT = (
    "INSERT INTO events (build_uuid, type, attempt, state_code, from_state_code, status, message, reason, "
    "actor, platform_id, os_version_id, image_type_id, recorded_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'key:reference', ?, ?, ?, ?)"
)
_UPDATE = (
    "UPDATE builds SET state_code = ?, status = ?, attempt = ?, message = ?, updated_at = ?, "
    "last_event_seq = ? WHERE id = ?"
)
_COUNTS = "UPDATE status_counts SET n = n + (CASE WHEN status = ? THEN 1 ELSE -1 END) WHERE status IN (?, ?)"
_CREATE = (
    "INSERT INTO builds (id, build_id, platform_id, os_version_id, image_type_id, state_code, status, "
    "attempt, labels, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 0, 'running', 1, ?, ?, ?) "
    "ON CONFLICT (build_id) DO NOTHING"
)
_CREATED = (
    "INSERT INTO events (build_uuid, type, attempt, state_code, status, actor, platform_id, os_version_id, "
    "image_type_id, recorded_at) VALUES (?, 'created', 1, 0, 'running', 'key:reference', ?, ?, ?, ?)"
)


def _now() -> str:
    """The service's time format on SQLite (fixed-width ISO-8601 in UTC, ``store/sql.py``)."""
    return datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


_Write = tuple[Callable[[sqlite3.Connection], Any], "Future[Any]"]


class Database:
    """One worker's connections: the loop's reader and the writer thread's writer."""

    def __init__(self, path: str, synchronous: str) -> None:
        self.path, self.synchronous = path, synchronous
        self.reader = self._connect()
        self._lock = os.open(f"{path}.write-lock", os.O_RDWR | os.O_CREAT, 0o600)
        self.keys = frozenset(
            r[0] for r in self.reader.execute("SELECT key_hash FROM api_keys WHERE revoked_at IS NULL")
        )
        self.lookups: dict[tuple[str, str], int] = {
            (table, name): id_
            for table in _TABLES
            for id_, name in self.reader.execute(f"SELECT id, name FROM {table}")
        }
        self.batches: list[int] = []  # the number of writes of each committed transaction, for the tests
        self._queue: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write_loop, name="reference-writer", daemon=True)
        self._writer.start()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=5, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _write_loop(self) -> None:
        """The writer thread: every write queued at the moment in one transaction, until ``None``."""
        conn = self._connect()
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                batch = [first]
                stop = False
                while True:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stop = True
                        break
                    batch.append(more)
                self._commit(conn, batch)
                if stop:
                    return
        finally:
            conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[_Write]) -> None:
        """``BEGIN IMMEDIATE``, each write under its own savepoint, ``COMMIT``, holding the workers' lock;
        the answers are given only once the commit is done."""
        answers: list[tuple[Future[Any], Any, BaseException | None]] = []
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for work, future in batch:
                    conn.execute("SAVEPOINT write")
                    try:
                        answers.append((future, work(conn), None))
                    except Exception as error:  # this write alone is undone; the others go on
                        conn.execute("ROLLBACK TO write")
                        answers.append((future, None, error))
                    conn.execute("RELEASE write")
                conn.execute("COMMIT")
            except BaseException as failed:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                for _, future in batch:
                    future.set_exception(failed)
                return
        finally:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
        self.batches.append(len(batch))
        for future, result, refused in answers:
            if refused is None:
                future.set_result(result)
            else:
                future.set_exception(refused)

    async def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        future: Future[T] = Future()
        self._queue.put((work, future))
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        self._queue.put(None)
        self._writer.join()
        self.reader.close()
        os.close(self._lock)


_DB = web.AppKey("db", Database)


class _NotFound(Exception):
    pass


async def get_build(request: web.Request) -> web.Response:
    if not _authorized(request):
        return _json({"title": "Unauthorized"}, 401)
    conn = request.app[_DB].reader
    cursor = conn.execute(_BUILD, (request.match_info["ref"],))
    row = cursor.fetchone()
    if row is None:
        return _json({"title": "Not Found"}, 404)
    return _json(dict(zip((c[0] for c in cursor.description), row, strict=True)))


def _change(
    conn: sqlite3.Connection, ref: str, kind: str, code: int, status: str, text: Any
) -> tuple[int, str]:
    row = conn.execute(_LOCK_BUILD, (ref,)).fetchone()
    if row is None:
        raise _NotFound
    build, from_code, from_status, attempt, *ids = row
    attempt += 1 if kind == "reset" else 0
    now = _now()
    reason = text if kind == "reset" else None
    seq = conn.execute(
        _EVENT, (build, kind, attempt, code, from_code, status, text, reason, *ids, now)
    ).lastrowid
    assert seq is not None
    conn.execute(_UPDATE, (code, status, attempt, text, now, seq, build))
    if from_status != status:
        conn.execute(_COUNTS, (status, status, from_status))
    return seq, build


async def change(request: web.Request) -> web.Response:
    if not _authorized(request):
        return _json({"title": "Unauthorized"}, 401)
    body = await request.json()
    if request.match_info["action"] == "reset":
        kind, code, status, text = "reset", 0, "running", body.get("reason")
    else:
        code = int(body["state_code"])
        kind, status, text = "state", "succeeded" if code == 100 else "running", body.get("message")
    ref = request.match_info["ref"]
    try:
        seq, build = await request.app[_DB].write(lambda conn: _change(conn, ref, kind, code, status, text))
    except _NotFound:
        return _json({"title": "Not Found"}, 404)
    return _json({"id": build, "state_code": code, "status": status, "event": {"seq": seq}})


def _lookup(conn: sqlite3.Connection, table: str, name: str) -> int:
    found: int = conn.execute(
        f"INSERT INTO {table} (name) VALUES (?) ON CONFLICT (name) DO UPDATE SET name = excluded.name "
        "RETURNING id",
        (name,),
    ).fetchone()[0]
    return found


def _create(
    conn: sqlite3.Connection, build_id: str, ids: list[int], labels: str
) -> tuple[str, str, int] | None:
    build, now = str(uuid.uuid4()), _now()
    if not conn.execute(_CREATE, (build, build_id, *ids, labels, now, now)).rowcount:
        return None
    seq = conn.execute(_CREATED, (build, *ids, now)).lastrowid
    assert seq is not None
    conn.execute("UPDATE status_counts SET n = n + 1 WHERE status = 'running'")
    return build, now, seq


async def create(request: web.Request) -> web.Response:
    if not _authorized(request):
        return _json({"title": "Unauthorized"}, 401)
    body = await request.json()
    db = request.app[_DB]
    ids = []
    for table, name in zip(_TABLES, (body["platform"], body["os_version"], body["image_type"]), strict=True):
        if (table, name) not in db.lookups:  # a name never seen: added once, as the service does
            db.lookups[table, name] = await db.write(lambda conn, t=table, n=name: _lookup(conn, t, n))
        ids.append(db.lookups[table, name])
    labels = json.dumps(body.get("labels") or {})
    made = await db.write(lambda conn: _create(conn, body["build_id"], ids, labels))
    if made is None:
        return _json({"title": "Conflict"}, 409)
    return _json({"id": made[0], "build_id": body["build_id"], "event": {"seq": made[2]}}, 201)


async def _database(app: web.Application) -> Any:
    path = os.environ["BENCH_REFERENCE_DSN"].removeprefix("sqlite:///")
    app[_DB] = db = Database(path, os.environ.get("BENCH_REFERENCE_SYNCHRONOUS", "FULL"))
    app[_KEYS] = db.keys
    yield
    db.close()


async def reference_app() -> web.Application:
    return minimal_app(_database, get_build, create, change)
