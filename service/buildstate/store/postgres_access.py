"""``AccessStore`` on PostgreSQL: runs on the build store's pool.

Every change is one transaction that also inserts its audit row, like a build write. Key and user rows are
locked (``FOR UPDATE``) by the statement that changes them, so concurrent admins serialise per row.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import asyncpg

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
from buildstate.store.postgres_executor import PostgresExecutor, insert_audit
from buildstate.store.types import AuditEntry, WriteContext

T = TypeVar("T")
_DIALECT = sql.PostgresDialect()


class PostgresAccess:
    def __init__(self, executor: PostgresExecutor) -> None:
        self._executor = executor

    async def _run(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        result: T = await self._executor.run(work)
        return result

    async def _change(
        self,
        ctx: WriteContext,
        action: str,
        target: str,
        work: Callable[[asyncpg.Connection], Awaitable[T]],
        *,
        status_code: int = 200,
        detail: dict[str, Any] | None = None,
    ) -> T:
        """One transaction: the change and its audit row. A refusal (4xx) is audited on its own."""
        entry = AuditEntry(
            ctx.actor, action, target, "allowed", status_code, ctx.request_id, ctx.source, detail
        )

        async def transaction(conn: asyncpg.Connection) -> T:
            async with conn.transaction():
                result = await work(conn)
                await insert_audit(conn, entry)
                return result

        try:
            return await self._run(transaction)
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
                await self._run(lambda conn: insert_audit(conn, refusal))
            raise

    async def _one(self, query: str, *values: Any) -> asyncpg.Record | None:
        async def work(conn: asyncpg.Connection) -> asyncpg.Record | None:
            row: asyncpg.Record | None = await conn.fetchrow(query, *values)
            return row

        return await self._run(work)

    async def _all(self, query: str, *values: Any) -> list[asyncpg.Record]:
        async def work(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            rows: list[asyncpg.Record] = await conn.fetch(query, *values)
            return rows

        return await self._run(work)

    # ------------------------------------------------------------------ keys

    async def create_key(self, key: NewApiKey, ctx: WriteContext) -> ApiKeyRecord:
        async def work(conn: asyncpg.Connection) -> ApiKeyRecord:
            row = await conn.fetchrow(
                f"INSERT INTO api_keys (prefix, key_hash, name, scopes, platforms, created_by, expires_at) "
                f"VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6, $7) ON CONFLICT (prefix) DO NOTHING "
                f"RETURNING {KEY_COLUMNS}",
                key.prefix,
                key.key_hash,
                key.name,
                list(key.scopes),
                list(key.platforms) if key.platforms is not None else None,
                ctx.actor,
                key.expires_at,
            )
            if row is None:
                raise KeyPrefixTaken(key.prefix)
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
        row = await self._one(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE prefix = $1", prefix)
        return None if row is None else decode_key(_DIALECT, row)

    async def list_keys(self, *, include_revoked: bool) -> list[ApiKeyRecord]:
        where = "" if include_revoked else "WHERE revoked_at IS NULL"
        return [
            decode_key(_DIALECT, row)
            for row in await self._all(f"SELECT {KEY_COLUMNS} FROM api_keys {where} ORDER BY id")
        ]

    async def revoke_key(self, prefix: str, ctx: WriteContext) -> ApiKeyRecord:
        async def work(conn: asyncpg.Connection) -> ApiKeyRecord:
            await conn.execute(
                "UPDATE api_keys SET revoked_at = clock_timestamp(), revoked_by = $1 "
                "WHERE prefix = $2 AND revoked_at IS NULL",
                ctx.actor,
                prefix,
            )
            row = await conn.fetchrow(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE prefix = $1", prefix)
            if row is None:
                raise NotFound(f"no API key {prefix!r}", slug="key-not-found")
            return decode_key(_DIALECT, row)

        return await self._change(ctx, "key.revoke", key_target(prefix), work)

    async def touch_key(self, key_id: int, at: datetime, unless_since: datetime) -> None:
        async def work(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "UPDATE api_keys SET last_used_at = $1 WHERE id = $2 "
                "AND (last_used_at IS NULL OR last_used_at < $3)",
                at,
                key_id,
                unless_since,
            )

        await self._run(work)

    # ------------------------------------------------------------------ users

    async def create_user(
        self, username: str, password_hash: str, role: str, ctx: WriteContext
    ) -> UserRecord:
        async def work(conn: asyncpg.Connection) -> UserRecord:
            row = await conn.fetchrow(
                f"INSERT INTO users (username, password_hash, role, created_by) VALUES ($1, $2, $3, $4) "
                f"ON CONFLICT (username) DO NOTHING RETURNING {USER_COLUMNS}",
                username,
                password_hash,
                role,
                ctx.actor,
            )
            if row is None:
                raise Conflict(f"user {username!r} already exists", slug="user-exists")
            return decode_user(_DIALECT, row)

        return await self._change(
            ctx, "user.create", user_target(username), work, status_code=201, detail={"role": role}
        )

    async def user_by_name(self, username: str) -> UserRecord | None:
        row = await self._one(f"SELECT {USER_COLUMNS} FROM users WHERE username = $1", username)
        return None if row is None else decode_user(_DIALECT, row)

    async def list_users(self) -> list[UserRecord]:
        return [
            decode_user(_DIALECT, row)
            for row in await self._all(f"SELECT {USER_COLUMNS} FROM users ORDER BY username")
        ]

    async def _update_user(
        self, ctx: WriteContext, action: str, username: str, assignments: str, *values: Any
    ) -> UserRecord:
        """``assignments`` uses $2.. for ``values``; $1 is the username."""

        async def work(conn: asyncpg.Connection) -> UserRecord:
            row = await conn.fetchrow(
                f"UPDATE users SET {assignments} WHERE username = $1 RETURNING {USER_COLUMNS}",
                username,
                *values,
            )
            if row is None:
                raise NotFound(f"no user {username!r}", slug="user-not-found")
            return decode_user(_DIALECT, row)

        return await self._change(ctx, action, user_target(username), work)

    async def set_user_disabled(self, username: str, disabled: bool, ctx: WriteContext) -> UserRecord:
        if disabled:
            # Disabling twice keeps the first time and does not bump the token version again.
            return await self._update_user(
                ctx,
                "user.disable",
                username,
                "disabled_at = coalesce(disabled_at, clock_timestamp()), "
                "token_version = token_version + (CASE WHEN disabled_at IS NULL THEN 1 ELSE 0 END)",
            )
        return await self._update_user(ctx, "user.enable", username, "disabled_at = NULL")

    async def set_password(self, username: str, password_hash: str, ctx: WriteContext) -> UserRecord:
        return await self._update_user(
            ctx,
            "user.password",
            username,
            "password_hash = $2, password_changed_at = clock_timestamp(), token_version = token_version + 1",
            password_hash,
        )

    async def has_admin(self) -> bool:
        async def work(conn: asyncpg.Connection) -> bool:
            found: bool = await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM api_keys WHERE revoked_at IS NULL "
                "AND (expires_at IS NULL OR expires_at > now()) AND scopes ? 'admin') "
                "OR EXISTS (SELECT 1 FROM users WHERE role = 'admin' AND disabled_at IS NULL)"
            )
            return found

        return await self._run(work)

    # ------------------------------------------------------------------ audit

    async def list_audit(self, where: AuditFilter) -> list[AuditRecord]:
        p = sql.Params(_DIALECT)
        query = audit_query(p, where)
        return [decode_audit(_DIALECT, row) for row in await self._all(query, *p.values)]
