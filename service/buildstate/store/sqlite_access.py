"""``AccessStore`` on SQLite: runs on the build store's writer thread and reader pool.

Every change is one ``BEGIN IMMEDIATE`` transaction that also inserts its audit row, like a build write.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from buildstate.errors import Conflict, NotFound, Problem
from buildstate.store import sql
from buildstate.store.access import (
    KEY_COLUMNS,
    USER_COLUMNS,
    ApiKeyRecord,
    AuditFilter,
    AuditRecord,
    KeyPrefixTaken,
    NewApiKey,
    UserRecord,
    audit_query,
    decode_audit,
    decode_key,
    decode_user,
    key_target,
    user_target,
)
from buildstate.store.sqlite_executor import SqliteExecutor, insert_audit
from buildstate.store.types import AuditEntry, WriteContext

T = TypeVar("T")
_DIALECT = sql.SqliteDialect()


def _now() -> datetime:
    return datetime.now(UTC)


class SqliteAccess:
    def __init__(self, executor: SqliteExecutor) -> None:
        self._executor = executor

    async def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await self._executor.read(work)

    async def _change(
        self,
        ctx: WriteContext,
        action: str,
        target: str,
        work: Callable[[sqlite3.Connection], T],
        *,
        status_code: int = 200,
        detail: dict[str, Any] | None = None,
    ) -> T:
        """One transaction: the change and its audit row. A refusal (4xx) is audited on its own."""
        entry = AuditEntry(
            ctx.actor, action, target, "allowed", status_code, ctx.request_id, ctx.source, detail
        )

        def change(conn: sqlite3.Connection) -> T:
            result = work(conn)
            insert_audit(conn, entry)
            return result

        try:
            return await self._executor.write(change)
        except Problem as refused:
            if refused.status < 500:
                refusal = AuditEntry(
                    ctx.actor,
                    action,
                    target,
                    "refused",
                    refused.status,
                    ctx.request_id,
                    ctx.source,
                    {"reason": refused.detail},
                )
                await self._executor.write(lambda conn: insert_audit(conn, refusal))
            raise

    # ------------------------------------------------------------------ keys

    async def create_key(self, key: NewApiKey, ctx: WriteContext) -> ApiKeyRecord:
        def work(conn: sqlite3.Connection) -> ApiKeyRecord:
            if conn.execute("SELECT 1 FROM api_keys WHERE prefix = ?", (key.prefix,)).fetchone():
                raise KeyPrefixTaken(key.prefix)
            row = conn.execute(
                f"INSERT INTO api_keys (prefix, key_hash, name, scopes, platforms, created_at, created_by, "
                f"expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING {KEY_COLUMNS}",
                (
                    key.prefix,
                    key.key_hash,
                    key.name,
                    json.dumps(list(key.scopes)),
                    json.dumps(list(key.platforms)) if key.platforms is not None else None,
                    sql.format_time(_now()),
                    ctx.actor,
                    sql.format_time(key.expires_at) if key.expires_at is not None else None,
                ),
            ).fetchone()
            return decode_key(_DIALECT, row)

        detail = {
            "name": key.name,
            "scopes": list(key.scopes),
            "platforms": list(key.platforms) if key.platforms is not None else None,
            "expires_at": key.expires_at.isoformat() if key.expires_at is not None else None,
        }
        return await self._change(
            ctx, "key.create", key_target(key.prefix), work, status_code=201, detail=detail
        )

    async def key_by_prefix(self, prefix: str) -> ApiKeyRecord | None:
        def work(conn: sqlite3.Connection) -> ApiKeyRecord | None:
            row = conn.execute(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE prefix = ?", (prefix,)).fetchone()
            return None if row is None else decode_key(_DIALECT, row)

        return await self._read(work)

    async def list_keys(self, *, include_revoked: bool) -> list[ApiKeyRecord]:
        where = "" if include_revoked else "WHERE revoked_at IS NULL"
        query = f"SELECT {KEY_COLUMNS} FROM api_keys {where} ORDER BY id"
        return await self._read(lambda conn: [decode_key(_DIALECT, row) for row in conn.execute(query)])

    async def revoke_key(self, prefix: str, ctx: WriteContext) -> ApiKeyRecord:
        def work(conn: sqlite3.Connection) -> ApiKeyRecord:
            conn.execute(
                "UPDATE api_keys SET revoked_at = ?, revoked_by = ? WHERE prefix = ? AND revoked_at IS NULL",
                (sql.format_time(_now()), ctx.actor, prefix),
            )
            row = conn.execute(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE prefix = ?", (prefix,)).fetchone()
            if row is None:
                raise NotFound(f"no API key {prefix!r}", slug="key-not-found")
            return decode_key(_DIALECT, row)

        return await self._change(ctx, "key.revoke", key_target(prefix), work)

    async def touch_key(self, key_id: int, at: datetime, unless_since: datetime) -> None:
        def work(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE api_keys SET last_used_at = ? WHERE id = ? "
                "AND (last_used_at IS NULL OR last_used_at < ?)",
                (sql.format_time(at), key_id, sql.format_time(unless_since)),
            )

        await self._executor.write(work)

    # ------------------------------------------------------------------ users

    async def create_user(
        self, username: str, password_hash: str, role: str, ctx: WriteContext
    ) -> UserRecord:
        def work(conn: sqlite3.Connection) -> UserRecord:
            if conn.execute("SELECT 1 FROM users WHERE username = ?", (username,)).fetchone():
                raise Conflict(f"user {username!r} already exists", slug="user-exists")
            stamp = sql.format_time(_now())
            row = conn.execute(
                f"INSERT INTO users (username, password_hash, role, created_at, created_by, "
                f"password_changed_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING {USER_COLUMNS}",
                (username, password_hash, role, stamp, ctx.actor, stamp),
            ).fetchone()
            return decode_user(_DIALECT, row)

        return await self._change(
            ctx, "user.create", user_target(username), work, status_code=201, detail={"role": role}
        )

    async def user_by_name(self, username: str) -> UserRecord | None:
        def work(conn: sqlite3.Connection) -> UserRecord | None:
            row = conn.execute(f"SELECT {USER_COLUMNS} FROM users WHERE username = ?", (username,)).fetchone()
            return None if row is None else decode_user(_DIALECT, row)

        return await self._read(work)

    async def list_users(self) -> list[UserRecord]:
        query = f"SELECT {USER_COLUMNS} FROM users ORDER BY username"
        return await self._read(lambda conn: [decode_user(_DIALECT, row) for row in conn.execute(query)])

    async def _update_user(
        self, ctx: WriteContext, action: str, username: str, statement: str, values: tuple[Any, ...]
    ) -> UserRecord:
        def work(conn: sqlite3.Connection) -> UserRecord:
            conn.execute(statement, (*values, username))
            row = conn.execute(f"SELECT {USER_COLUMNS} FROM users WHERE username = ?", (username,)).fetchone()
            if row is None:
                raise NotFound(f"no user {username!r}", slug="user-not-found")
            return decode_user(_DIALECT, row)

        return await self._change(ctx, action, user_target(username), work)

    async def set_user_disabled(self, username: str, disabled: bool, ctx: WriteContext) -> UserRecord:
        if disabled:
            return await self._update_user(
                ctx,
                "user.disable",
                username,
                "UPDATE users SET disabled_at = ?, token_version = token_version + 1 "
                "WHERE username = ? AND disabled_at IS NULL",
                (sql.format_time(_now()),),
            )
        return await self._update_user(
            ctx, "user.enable", username, "UPDATE users SET disabled_at = NULL WHERE username = ?", ()
        )

    async def set_password(self, username: str, password_hash: str, ctx: WriteContext) -> UserRecord:
        return await self._update_user(
            ctx,
            "user.password",
            username,
            "UPDATE users SET password_hash = ?, password_changed_at = ?, "
            "token_version = token_version + 1 WHERE username = ?",
            (password_hash, sql.format_time(_now())),
        )

    async def has_admin(self) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM api_keys WHERE revoked_at IS NULL "
                "AND (expires_at IS NULL OR expires_at > ?) AND EXISTS "
                "(SELECT 1 FROM json_each(api_keys.scopes) WHERE value = 'admin')) "
                "OR EXISTS (SELECT 1 FROM users WHERE role = 'admin' AND disabled_at IS NULL)",
                (sql.format_time(_now()),),
            ).fetchone()
            return bool(row[0])

        return await self._read(work)

    # ------------------------------------------------------------------ audit

    async def list_audit(self, where: AuditFilter) -> list[AuditRecord]:
        def work(conn: sqlite3.Connection) -> list[AuditRecord]:
            p = sql.Params(_DIALECT)
            return [decode_audit(_DIALECT, row) for row in conn.execute(audit_query(p, where), p.values)]

        return await self._read(work)
