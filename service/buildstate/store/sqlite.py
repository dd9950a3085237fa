"""SQLite store: the zero-configuration default, safe with several gunicorn workers on one file.

How it reaches the file (WAL, ``BEGIN IMMEDIATE``, the writers' ``flock``, group commit, one thread hop per
transaction) is ``store.sqlite_executor``; the reads, keys, users and audit are written once
(``store.sqlstore``). What is here is the write path of builds, per dialect because it is the hot path: it
runs as one synchronous function on the writer thread, inside the group commit's savepoint, where the
PostgreSQL store instead packs the append into one statement that holds the feed lock as briefly as it can.
With one writer at a time, ``AUTOINCREMENT`` hands out event numbers in commit order: the feed cannot skip.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from buildstate.domain import EVENT_RULES, EventType, types_where
from buildstate.errors import NotFound, Problem
from buildstate.models import Build, BuildCreate, Event
from buildstate.store import plan, sql
from buildstate.store.audit import insert as audit_row
from buildstate.store.builds import event_statement
from buildstate.store.key_changes import FileKeyChanges
from buildstate.store.migrate import SqliteMigrator
from buildstate.store.sqlite_executor import SqliteExecutor, dumps, execute
from buildstate.store.sqlstore import SqlStore
from buildstate.store.types import AuditEntry, Idempotency, SchemaStatus, WriteContext, WriteResult, replay

_DIALECT = sql.SqliteDialect()
# The type of a build's first event (what a repeated create answers with).
_FIRST = sql.types_in(types_where(lambda rule: rule.creates_build))


def _now() -> datetime:
    return datetime.now(UTC)


class SQLiteStore(SqlStore):
    executor: SqliteExecutor

    def __init__(
        self, path: Path, *, timeout: float = 5.0, readers: int = 4, synchronous: str = "FULL"
    ) -> None:
        self.path = path
        super().__init__(
            SqliteExecutor(path, timeout=timeout, readers=readers, synchronous=synchronous),
            FileKeyChanges(path),
        )

    async def schema_status(self) -> SchemaStatus:
        return await self.executor.run_read(SqliteMigrator.status_on)

    # ------------------------------------------------------------------ writes

    async def _write(
        self,
        ctx: WriteContext,
        action_name: str,
        target: str,
        action: Callable[[sqlite3.Connection], WriteResult],
    ) -> WriteResult:
        """Run one write with its idempotency record and its audit row, committed with whatever other
        writes of this process are waiting at the same moment (``_commit_group``)."""
        idem = ctx.idem

        def body(conn: sqlite3.Connection) -> WriteResult:
            outcome = self._claim(conn, idem) if idem is not None else None
            if outcome is None:
                outcome = action(conn)
                if idem is not None:
                    conn.execute(
                        "UPDATE idempotency_keys SET status_code = ?, body = ? WHERE actor = ? AND key = ?",
                        (outcome.status_code, outcome.body.decode(), idem.actor, idem.key),
                    )
            kind = "replayed" if outcome.replayed else "allowed"
            execute(conn, audit_row(AuditEntry.of(ctx, action_name, target, outcome.status_code, kind)))
            return outcome

        try:
            return await self.executor.grouped(body)
        except Problem as refused:
            await self.audit.refused(ctx, action_name, target, refused)
            raise

    @staticmethod
    def _claim(conn: sqlite3.Connection, idem: Idempotency) -> WriteResult | None:
        row = conn.execute(
            "SELECT fingerprint, status_code, body FROM idempotency_keys WHERE actor = ? AND key = ?",
            (idem.actor, idem.key),
        ).fetchone()
        if row is not None:
            return replay(idem, row["fingerprint"], row["status_code"], row["body"])
        conn.execute(
            "INSERT INTO idempotency_keys (actor, key, fingerprint, created_at) VALUES (?, ?, ?, ?)",
            (idem.actor, idem.key, idem.fingerprint, sql.format_time(_now())),
        )
        return None

    @staticmethod
    def _lookup_id(conn: sqlite3.Connection, column: str, name: str) -> int:
        table = sql.LOOKUP_TABLES[column]
        conn.execute(f"INSERT INTO {table} (name) VALUES (?) ON CONFLICT (name) DO NOTHING", (name,))
        row = conn.execute(f"SELECT id FROM {table} WHERE name = ?", (name,)).fetchone()
        return int(row[0])

    @staticmethod
    def _append(
        conn: sqlite3.Connection,
        row: sqlite3.Row,
        build: Build,
        draft: plan.Draft,
        actor: str,
        *,
        old_status: str | None,
        previous_at: datetime | None,
    ) -> WriteResult:
        recorded_at = _now()
        stamp = sql.format_time(recorded_at)
        duration_ms = None
        if previous_at is not None:
            duration_ms = int((recorded_at - previous_at).total_seconds() * 1000)
        build_uuid = str(build.id)
        seq = conn.execute(
            "INSERT INTO events (build_uuid, type, attempt, state_code, from_state_code, status, "
            "message, failure, reason, actor, provenance, duration_ms, platform_id, os_version_id, "
            "image_type_id, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                build_uuid,
                draft.type,
                draft.attempt,
                draft.state_code,
                draft.from_state_code,
                draft.status,
                draft.message,
                dumps(draft.failure),
                draft.reason,
                actor,
                dumps(draft.provenance),
                duration_ms,
                row["platform_id"],
                row["os_version_id"],
                row["image_type_id"],
                stamp,
            ),
        ).lastrowid
        if seq is None:  # pragma: no cover - an INSERT always sets lastrowid
            raise RuntimeError("event insert returned no seq")
        conn.execute(
            "UPDATE builds SET state_code = ?, status = ?, attempt = ?, message = ?, failure = ?, "
            "updated_at = ?, last_event_seq = ? WHERE id = ?",
            (
                draft.state_code,
                draft.status,
                draft.attempt,
                draft.message,
                dumps(draft.failure),
                stamp,
                seq,
                build_uuid,
            ),
        )
        if old_status != draft.status:
            conn.execute("UPDATE status_counts SET n = n + 1 WHERE status = ?", (draft.status,))
            if old_status is not None:
                conn.execute("UPDATE status_counts SET n = n - 1 WHERE status = ?", (old_status,))
        rule = EVENT_RULES[draft.type]
        if rule.records_failure and draft.failure is not None:
            conn.execute(
                "INSERT INTO failures (seq, build_uuid, error_message, error_code, component, details, "
                "recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    seq,
                    build_uuid,
                    draft.failure["error_message"],
                    draft.failure["error_code"],
                    draft.failure["component"],
                    dumps(draft.failure["details"]),
                    stamp,
                ),
            )
        token, extra_token = plan.state_tokens(draft)
        conn.execute(
            "INSERT INTO webhook_deliveries (webhook_id, event_seq, message_id, status, next_attempt_at, "
            "created_at) SELECT w.id, ?, 'msg_' || ? || '_' || w.id, 'pending', ?, ? FROM webhooks w "
            "WHERE w.enabled AND (w.platform IS NULL OR w.platform = ?) "
            "AND (w.os_version IS NULL OR w.os_version = ?) AND (w.image_type IS NULL OR w.image_type = ?) "
            "AND (w.event_types IS NULL OR w.event_types LIKE '%,' || ? || ',%') "
            "AND (w.states IS NULL OR w.states LIKE '%,' || ? || ',%' OR w.states LIKE '%,' || ? || ',%')",
            (
                seq, seq, stamp, stamp, build.platform, build.os_version, build.image_type,
                draft.type, token, extra_token,
            ),
        )  # fmt: skip
        if rule.creates_build:
            conn.execute(
                "INSERT INTO combos (platform_id, os_version_id, image_type_id) VALUES (?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (row["platform_id"], row["os_version_id"], row["image_type_id"]),
            )
        written = plan.result(
            build, draft, actor=actor, seq=seq, recorded_at=recorded_at, duration_ms=duration_ms
        )
        return WriteResult.of(written, created=rule.creates_build)

    @staticmethod
    def _lock_build(
        conn: sqlite3.Connection, ref: str, *, by_build_id: bool = False
    ) -> tuple[sqlite3.Row, Build]:
        """The build ``ref`` names (``by_build_id``: the build with exactly that ``build_id``, as a create
        looks for it). Inside BEGIN IMMEDIATE this process already holds the write lock: the row cannot
        change."""
        p = sql.Params(_DIALECT)
        condition = sql.build_id_condition(p, ref) if by_build_id else sql.ref_condition(p, ref)
        row = conn.execute(
            f"SELECT {sql.BUILD_COLUMNS}, b.platform_id, b.os_version_id, b.image_type_id "
            f"{sql.BUILD_FROM} WHERE {condition}",
            p.values,
        ).fetchone()
        if row is None:
            raise NotFound(f"no build {ref!r}", slug="build-not-found")
        return row, sql.decode_build(_DIALECT, row)

    @staticmethod
    def _event(conn: sqlite3.Connection, seq: int) -> Event:
        rows = execute(conn, event_statement(_DIALECT, seq))
        if not rows:
            raise NotFound(f"no event {seq}", slug="event-not-found")
        return sql.decode_event(_DIALECT, rows[0])

    async def create_build(self, request: BuildCreate, ctx: WriteContext) -> WriteResult:
        prepared = plan.prepare(request)  # here, not on the writer thread

        def action(conn: sqlite3.Connection) -> WriteResult:
            existing = conn.execute("SELECT 1 FROM builds WHERE build_id = ?", (request.build_id,)).fetchone()
            if existing is None:
                ids = [self._lookup_id(conn, col, getattr(request, col)) for col in sql.LOOKUP_TABLES]
                stamp = sql.format_time(_now())
                conn.execute(
                    "INSERT INTO builds (id, build_id, platform_id, os_version_id, image_type_id, "
                    "state_code, status, attempt, labels, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, 0, 'running', 1, ?, ?, ?)",
                    (
                        str(uuid.uuid4()),
                        request.build_id,
                        *ids,
                        dumps(request.labels),
                        stamp,
                        stamp,
                    ),
                )
            # The build with this very build_id, never one its text may spell (an id): a create
            # never appends to, or answers with, another build.
            row, build = self._lock_build(conn, request.build_id, by_build_id=True)
            if existing is not None:
                plan.same_build(build, request)
                seq = conn.execute(
                    f"SELECT min(seq) FROM events WHERE build_uuid = ? AND type IN {_FIRST}",
                    (str(build.id),),
                ).fetchone()[0]
                return WriteResult.of(plan.with_event(build, self._event(conn, seq)))
            return self._append(
                conn, row, build, plan.created(prepared), ctx.actor, old_status=None, previous_at=None
            )

        return await self._write(ctx, EVENT_RULES[EventType.CREATED].action, request.build_id, action)

    async def _transition(
        self,
        ref: str,
        ctx: WriteContext,
        action_name: str,
        decide: Callable[[Build], plan.Draft | None],
    ) -> WriteResult:
        def action(conn: sqlite3.Connection) -> WriteResult:
            row, build = self._lock_build(conn, ref)
            draft = decide(build)
            if draft is None:
                return WriteResult.of(plan.with_event(build, self._event(conn, build.last_event_seq)))
            return self._append(
                conn,
                row,
                build,
                draft,
                ctx.actor,
                old_status=build.status,
                previous_at=build.updated_at,
            )

        return await self._write(ctx, action_name, ref, action)
