"""The reference ceiling: a minimal aiohttp + asyncpg server doing buildstate's writes, each as one statement.

What it leaves out is what buildstate is for: no audit row, no ordered feed (no feed lock, no NOTIFY), no
idempotency, no rules beyond what the SQL does, no middleware. API keys are checked in memory (their
digests read once at start-up). Same gunicorn worker class, worker count and keep-alive as the service
(``bench/serve.py``), on a database of its own with the same schema and history. Its routes answer the
bench's requests (``bench/lua``) the way the service does:

    GET  /bench/ping            the authenticated trivial route
    GET  /builds/{ref}          a build by build_id, with its lookups' names
    POST /builds                a build and its created event (one statement)
    POST /builds/{ref}/state    the event, the build row and the status counts (one statement)
    POST /builds/{ref}/reset    the same, back to 0 with the next attempt

PostgreSQL only (``BENCH_REFERENCE_DSN``), pool of ``BENCH_REFERENCE_POOL`` connections per worker.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aiohttp import web

BODY = b'{"ok":true}'
Handler = Callable[[web.Request], Awaitable[web.Response]]
_KEYS = web.AppKey("keys", frozenset)
_POOL = web.AppKey("pool", asyncpg.Pool)
_LOOKUPS = web.AppKey("lookups", dict)  # (table, name) -> id, as the service keeps them
_TABLES = ("platforms", "os_versions", "image_types")

_BUILD = """
SELECT b.id, b.build_id, p.name AS platform, o.name AS os_version, t.name AS image_type, b.state_code,
       b.status, b.attempt, b.labels, b.message, b.created_at, b.updated_at, b.last_event_seq
FROM builds b JOIN platforms p ON p.id = b.platform_id JOIN os_versions o ON o.id = b.os_version_id
JOIN image_types t ON t.id = b.image_type_id WHERE b.build_id = $1
"""

_CHANGE = """
WITH b AS (SELECT id, state_code, status, attempt, platform_id, os_version_id, image_type_id
           FROM builds WHERE build_id = $1 FOR UPDATE),
ev AS (
    INSERT INTO events (seq, build_uuid, type, attempt, state_code, from_state_code, status, message, reason,
                        actor, platform_id, os_version_id, image_type_id, recorded_at)
    SELECT nextval('events_seq'), b.id, $2, b.attempt + $6, $3, b.state_code, $4, $5,
           CASE WHEN $2 = 'reset' THEN $5 END, 'key:reference', b.platform_id, b.os_version_id,
           b.image_type_id, clock_timestamp()
    FROM b RETURNING seq, recorded_at, attempt, build_uuid
),
up AS (
    UPDATE builds SET state_code = $3, status = $4, attempt = ev.attempt, message = $5,
                      updated_at = ev.recorded_at, last_event_seq = ev.seq
    FROM ev WHERE builds.id = ev.build_uuid
),
counts AS (
    UPDATE status_counts SET n = n + (CASE WHEN status_counts.status = $4 THEN 1 ELSE -1 END)
    FROM b WHERE status_counts.status IN ($4, b.status) AND b.status <> $4
)
SELECT ev.seq, ev.recorded_at, ev.attempt, b.id, b.state_code AS from_state_code FROM ev, b
"""

_CREATE = """
WITH b AS (
    INSERT INTO builds (id, build_id, platform_id, os_version_id, image_type_id, state_code, status, attempt,
                        labels, created_at, updated_at)
    VALUES (gen_random_uuid(), $1, $2, $3, $4, 0, 'running', 1, $5::jsonb,
            clock_timestamp(), clock_timestamp())
    ON CONFLICT (build_id) DO NOTHING
    RETURNING id, platform_id, os_version_id, image_type_id, created_at
),
ev AS (
    INSERT INTO events (seq, build_uuid, type, attempt, state_code, status, actor, platform_id, os_version_id,
                        image_type_id, recorded_at)
    SELECT nextval('events_seq'), b.id, 'created', 1, 0, 'running', 'key:reference', b.platform_id,
           b.os_version_id, b.image_type_id, b.created_at
    FROM b RETURNING seq
),
counts AS (UPDATE status_counts SET n = n + 1 FROM b WHERE status_counts.status = 'running')
SELECT b.id, b.created_at, ev.seq FROM b, ev
"""


def _authorized(request: web.Request) -> bool:
    key = request.headers.get("X-API-Key", "")
    return hashlib.sha256(key.encode()).hexdigest() in request.app[_KEYS]


def _json(data: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(data, default=str).encode(), status=status, content_type="application/json"
    )


async def ping(request: web.Request) -> web.Response:
    if not _authorized(request):
        return _json({"title": "Unauthorized"}, 401)
    return web.Response(body=BODY, content_type="application/json")


async def get_build(request: web.Request) -> web.Response:
    if not _authorized(request):
        return _json({"title": "Unauthorized"}, 401)
    row = await request.app[_POOL].fetchrow(_BUILD, request.match_info["ref"])
    if row is None:
        return _json({"title": "Not Found"}, 404)
    return _json(dict(row))


async def change(request: web.Request) -> web.Response:
    if not _authorized(request):
        return _json({"title": "Unauthorized"}, 401)
    body = await request.json()
    if request.match_info["action"] == "reset":
        args = ("reset", 0, "running", body.get("reason"), 1)
    else:
        code = int(body["state_code"])
        args = ("state", code, "succeeded" if code == 100 else "running", body.get("message"), 0)
    row = await request.app[_POOL].fetchrow(_CHANGE, request.match_info["ref"], *args)
    if row is None:
        return _json({"title": "Not Found"}, 404)
    return _json({"id": row["id"], "state_code": args[1], "status": args[2], "event": {"seq": row["seq"]}})


async def create(request: web.Request) -> web.Response:
    if not _authorized(request):
        return _json({"title": "Unauthorized"}, 401)
    body = await request.json()
    pool, lookups = request.app[_POOL], request.app[_LOOKUPS]
    ids = []
    for table, name in zip(_TABLES, (body["platform"], body["os_version"], body["image_type"]), strict=True):
        if (table, name) not in lookups:  # a name never seen: added once, as the service does
            lookups[table, name] = await pool.fetchval(
                f"INSERT INTO {table} (name) VALUES ($1) "
                "ON CONFLICT (name) DO UPDATE SET name = $1 RETURNING id",
                name,
            )
        ids.append(lookups[table, name])
    row = await pool.fetchrow(_CREATE, body["build_id"], *ids, json.dumps(body.get("labels") or {}))
    if row is None:
        return _json({"title": "Conflict"}, 409)
    return _json({"id": row["id"], "build_id": body["build_id"], "event": {"seq": row["seq"]}}, 201)


async def health(_request: web.Request) -> web.Response:
    return web.Response(body=BODY, content_type="application/json")


async def _database(app: web.Application) -> Any:
    dsn = os.environ["BENCH_REFERENCE_DSN"]
    size = int(os.environ.get("BENCH_REFERENCE_POOL", "4"))
    app[_POOL] = pool = await asyncpg.create_pool(dsn, min_size=size, max_size=size)
    digests = await pool.fetch("SELECT key_hash FROM api_keys WHERE revoked_at IS NULL")
    app[_KEYS] = frozenset(r["key_hash"] for r in digests)
    app[_LOOKUPS] = {
        (table, r["name"]): r["id"]
        for table in _TABLES
        for r in await pool.fetch(f"SELECT id, name FROM {table}")
    }
    yield
    await pool.close()


def minimal_app(database: Any, get_build: Handler, create: Handler, change: Handler) -> web.Application:
    """The reference's routes, on either store (``bench.reference_sqlite`` gives its own handlers)."""
    app = web.Application()
    app.cleanup_ctx.append(database)
    app.router.add_get("/health", health)
    app.router.add_get("/bench/ping", ping)
    app.router.add_get("/builds/{ref}", get_build)
    app.router.add_post("/builds", create)
    app.router.add_post("/builds/{ref}/{action:state|reset}", change)
    return app


async def reference_app() -> web.Application:
    return minimal_app(_database, get_build, create, change)
