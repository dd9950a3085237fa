"""The PostgreSQL store ceilings write what the store writes: same statement, same parameters, same rows.

``pg-one-statement`` runs the store's ``APPEND_EVENT`` with ``_append_args``; here one build goes through a
full cycle (5 to 100, a reset, 5 again) that way and another through ``PostgresStore`` with the requests
``pg-store`` sends, and their events, build rows and audit rows must come out the same.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import asyncpg

from bench import store_ceiling as ceiling
from buildstate.models import BuildCreate, ResetRequest, StateChange
from buildstate.store.postgres import APPEND_EVENT, PostgresStore
from buildstate.store.types import WriteContext

STEPS = 22  # 0 -> 5 -> ... -> 100, a reset, then 5
EVENT_COLUMNS = (
    "type, attempt, state_code, from_state_code, status, message, failure, reason, actor, provenance, "
    "platform_id, os_version_id, image_type_id"
)
AUDIT_COLUMNS = "actor, action, outcome, status_code, request_id, source, detail"


async def _ceiling_build(conn: asyncpg.Connection, build_id: str) -> ceiling.Build:
    async with conn.transaction():
        r = await conn.fetchrow(ceiling._LOCK, build_id)
    return ceiling.Build(
        r["id"],
        r["build_id"],
        r["platform"],
        r["os_version"],
        r["image_type"],
        (r["platform_id"], r["os_version_id"], r["image_type_id"]),
        updated_at=r["updated_at"],
    )


async def _written(conn: asyncpg.Connection, build_id: str) -> dict[str, Any]:
    uuid = await conn.fetchval("SELECT id FROM builds WHERE build_id = $1", build_id)
    events = await conn.fetch(f"SELECT {EVENT_COLUMNS} FROM events WHERE build_uuid = $1 ORDER BY seq", uuid)
    build = await conn.fetchrow(
        "SELECT state_code, status, attempt, message, failure FROM builds WHERE id = $1", uuid
    )
    audit = await conn.fetch(f"SELECT {AUDIT_COLUMNS} FROM audit_log WHERE target = $1 ORDER BY id", build_id)
    return {"events": [dict(e) for e in events], "build": dict(build), "audit": [dict(a) for a in audit]}


async def test_pg_one_statement_writes_the_rows_the_store_writes(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    await store.open()
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
        ctx = WriteContext(actor=ceiling.ACTOR, request_id=ceiling.REQUEST_ID, source=ceiling.SOURCE)
        for name in ("by-store", "by-ceiling"):
            await store.create_build(
                BuildCreate(platform="aws", os_version="rhel-9", image_type="base", build_id=name), ctx
            )

        mirror = await _ceiling_build(conn, "by-store")  # the bench's view of the store's build
        for _ in range(STEPS):
            kind, code, attempt, status = ceiling._next(mirror)
            if kind == "reset":
                await store.reset_build("by-store", ResetRequest(reason="cycle"), ctx)
            else:
                await store.record_state(
                    "by-store", StateChange(state_code=code, message=f"bench {code}"), ctx
                )
            ceiling._apply(mirror, kind, code, attempt, status, datetime.now(UTC))

        build = await _ceiling_build(conn, "by-ceiling")
        for _ in range(STEPS):
            kind, code, attempt, status = ceiling._next(build)
            args = ceiling._append_args(
                build, ceiling._draft(build, kind, code, attempt, status), audited=True
            )
            row = await conn.fetchrow(APPEND_EVENT, *args)
            ceiling._apply(build, kind, code, attempt, status, row["recorded_at"])

        by_store, by_ceiling = await _written(conn, "by-store"), await _written(conn, "by-ceiling")
        assert len(by_store["events"]) == STEPS + 1
        assert [e["type"] for e in by_store["events"]].count("reset") == 1
        assert by_ceiling == by_store
    finally:
        await conn.close()
        await store.close()
