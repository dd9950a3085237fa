"""Access records: API keys, users and the audit log, written once over both databases.

``AccessStore`` is the part of storage that the auth rules (``buildstate.auth``) and the admin routes need.
Each ``Store`` carries one as ``store.access``, on the same executor (connections, threads, transactions) as
the build store, so a key or user change and its audit row commit together, exactly as build writes do.

Secrets never reach this layer: keys arrive as a SHA-256 hex digest, passwords as an argon2 hash.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from buildstate.errors import Conflict, NotFound
from buildstate.store.audit import AuditLog
from buildstate.store.executor import Executor, Json, Statement, Transaction, one
from buildstate.store.key_changes import KeyChanges
from buildstate.store.queries import Queries
from buildstate.store.sql import Dialect, Params
from buildstate.store.types import WriteContext

ACCESS = Queries("access")


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    id: int
    prefix: str  # the key's public id, "bs_" and 8 hex digits: shown in lists and recorded as the actor
    key_hash: str
    name: str
    scopes: tuple[str, ...]
    platforms: tuple[str, ...] | None  # None: every platform
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str | None


@dataclass(frozen=True, slots=True)
class NewApiKey:
    prefix: str
    key_hash: str
    name: str
    scopes: tuple[str, ...]
    platforms: tuple[str, ...] | None
    expires_at: datetime | None


class KeyPrefixTaken(Exception):
    """A new key's public prefix is already in use (about one in 4 billion): draw another key."""


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: int
    username: str
    password_hash: str
    role: str
    # Bumped by a password change or a disable: tokens carry it and stop working once it moves on.
    token_version: int
    created_at: datetime
    created_by: str
    password_changed_at: datetime
    disabled_at: datetime | None


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    at: datetime
    actor: str
    action: str
    target: str | None
    outcome: str
    status_code: int | None
    request_id: str | None
    source: str | None
    detail: dict[str, Any] | None
    repeats: int = 1  # denials of one source, actor, action and status in one window are one row
    last_at: datetime | None = None  # when the last of them happened


@dataclass(frozen=True, slots=True)
class AuditFilter:
    actor: str | None = None
    action: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    before: int | None = None  # only rows with id < before: the next page, newest first
    limit: int = 100


class AccessStore:
    """Keys, users and the audit log, written once over the store's executor. Every change writes its audit
    row in the same transaction (``AuditLog.audited``); the SQL is ``queries/access.sql``."""

    def __init__(self, executor: Executor, audit: AuditLog, key_changes: KeyChanges) -> None:
        self._executor = executor
        self._audit = audit
        self._dialect = executor.dialect
        self.key_changes = key_changes

    def _key(self, rows: list[Any]) -> ApiKeyRecord | None:
        return decode_key(self._dialect, rows[0]) if rows else None

    def _user(self, rows: list[Any]) -> UserRecord | None:
        return decode_user(self._dialect, rows[0]) if rows else None

    # ------------------------------------------------------------------ keys

    async def create_key(self, key: NewApiKey, ctx: WriteContext) -> ApiKeyRecord:
        """Raises ``KeyPrefixTaken`` if the prefix exists (nothing is written): draw another key."""

        def work() -> Transaction[ApiKeyRecord]:
            rows = yield ACCESS.statement(
                "create_key",
                prefix=key.prefix,
                key_hash=key.key_hash,
                name=key.name,
                scopes=Json(list(key.scopes)),
                platforms=Json(list(key.platforms) if key.platforms is not None else None),
                now=_now(),
                actor=ctx.actor,
                expires_at=key.expires_at,
            )
            created = self._key(rows)
            if created is None:
                raise KeyPrefixTaken(key.prefix)
            return created

        detail = {
            "name": key.name,
            "scopes": list(key.scopes),
            "platforms": list(key.platforms) if key.platforms is not None else None,
            "expires_at": key.expires_at.isoformat() if key.expires_at is not None else None,
        }
        return await self._audit.audited(
            ctx, "key.create", key_target(key.prefix), work(), status_code=201, detail=detail
        )

    async def key_by_prefix(self, prefix: str) -> ApiKeyRecord | None:
        return self._key(await self._executor.read(one(ACCESS.statement("key_by_prefix", prefix=prefix))))

    async def list_keys(self, *, include_revoked: bool) -> list[ApiKeyRecord]:
        rows = await self._executor.read(one(ACCESS.statement("all_keys", include_revoked=include_revoked)))
        return [decode_key(self._dialect, row) for row in rows]

    async def revoke_key(self, prefix: str, ctx: WriteContext) -> ApiKeyRecord:
        """Revoke the key, and answer once every worker's key cache has heard of it (``key_changes``)."""

        def work(token: str) -> Transaction[ApiKeyRecord]:
            yield ACCESS.statement(
                "revoke_key", self._dialect, prefix=prefix, actor=ctx.actor, now=_now(), token=token
            )
            revoked = self._key((yield ACCESS.statement("key_by_prefix", prefix=prefix)))
            if revoked is None:
                raise NotFound(f"no API key {prefix!r}", slug="key-not-found")
            return revoked

        async with self.key_changes.signalling() as token:
            return await self._audit.audited(ctx, "key.revoke", key_target(prefix), work(token))

    async def touch_key(self, key_id: int, at: datetime, unless_since: datetime) -> None:
        """Set ``last_used_at`` unless it is already ``unless_since`` or later (a cheap, rare write)."""
        await self._executor.write(
            one(ACCESS.statement("touch_key", id=key_id, at=at, unless_since=unless_since))
        )

    # ------------------------------------------------------------------ users

    async def create_user(
        self, username: str, password_hash: str, role: str, ctx: WriteContext
    ) -> UserRecord:
        def work() -> Transaction[UserRecord]:
            rows = yield ACCESS.statement(
                "create_user",
                username=username, password_hash=password_hash, role=role, now=_now(), actor=ctx.actor,
            )  # fmt: skip
            created = self._user(rows)
            if created is None:
                raise Conflict(f"user {username!r} already exists", slug="user-exists")
            return created

        return await self._audit.audited(
            ctx, "user.create", user_target(username), work(), status_code=201, detail={"role": role}
        )

    async def user_by_name(self, username: str) -> UserRecord | None:
        return self._user(await self._executor.read(one(ACCESS.statement("user_by_name", username=username))))

    async def list_users(self) -> list[UserRecord]:
        rows = await self._executor.read(one(ACCESS.statement("all_users")))
        return [decode_user(self._dialect, row) for row in rows]

    async def _update_user(
        self, ctx: WriteContext, action: str, username: str, statement: Statement
    ) -> UserRecord:
        def work() -> Transaction[UserRecord]:
            updated = self._user((yield statement))
            if updated is None:
                raise NotFound(f"no user {username!r}", slug="user-not-found")
            return updated

        return await self._audit.audited(ctx, action, user_target(username), work())

    async def set_user_disabled(self, username: str, disabled: bool, ctx: WriteContext) -> UserRecord:
        if disabled:
            statement = ACCESS.statement("disable_user", username=username, now=_now())
            return await self._update_user(ctx, "user.disable", username, statement)
        statement = ACCESS.statement("enable_user", username=username)
        return await self._update_user(ctx, "user.enable", username, statement)

    async def set_password(self, username: str, password_hash: str, ctx: WriteContext) -> UserRecord:
        statement = ACCESS.statement(
            "set_password", username=username, password_hash=password_hash, now=_now()
        )
        return await self._update_user(ctx, "user.password", username, statement)

    async def has_admin(self) -> bool:
        """Is there any usable admin credential (an active admin key or an enabled admin user)?"""
        rows = await self._executor.read(one(ACCESS.statement("has_admin", self._dialect, now=_now())))
        return bool(rows[0]["found"])

    # ------------------------------------------------------------------ audit

    async def list_audit(self, where: AuditFilter) -> list[AuditRecord]:
        p = Params(self._dialect)
        rows = await self._executor.read(one(Statement(audit_query(p, where), p.values)))
        return [decode_audit(self._dialect, row) for row in rows]


def _now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------- SQL shared by both dialects

AUDIT_COLUMNS = (
    "id, at, actor, action, target, outcome, status_code, request_id, source, detail, repeats, last_at"
)


def audit_query(p: Params, where: AuditFilter) -> str:
    conditions = []
    if where.actor is not None:
        conditions.append(f"actor = {p(where.actor)}")
    if where.action is not None:
        conditions.append(f"action = {p(where.action)}")
    if where.outcome is not None:
        conditions.append(f"outcome = {p(where.outcome)}")
    if where.since is not None:
        conditions.append(f"at >= {p.time(where.since)}")
    if where.before is not None:
        conditions.append(f"id < {p(where.before)}")
    where_sql = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    return f"SELECT {AUDIT_COLUMNS} FROM audit_log {where_sql} ORDER BY id DESC LIMIT {p(where.limit)}"


def key_target(prefix: str) -> str:
    return f"key:{prefix}"


def user_target(username: str) -> str:
    return f"user:{username}"


# ---------------------------------------------------------------------- rows -> records (both stores)


def _time_or_none(dialect: Dialect, value: Any) -> datetime | None:
    return None if value is None else dialect.time_value(value)


def decode_key(dialect: Dialect, row: Any) -> ApiKeyRecord:
    platforms = dialect.json_value(row["platforms"])
    return ApiKeyRecord(
        id=row["id"],
        prefix=row["prefix"],
        key_hash=row["key_hash"],
        name=row["name"],
        scopes=tuple(dialect.json_value(row["scopes"])),
        platforms=tuple(platforms) if platforms is not None else None,
        created_at=dialect.time_value(row["created_at"]),
        created_by=row["created_by"],
        expires_at=_time_or_none(dialect, row["expires_at"]),
        last_used_at=_time_or_none(dialect, row["last_used_at"]),
        revoked_at=_time_or_none(dialect, row["revoked_at"]),
        revoked_by=row["revoked_by"],
    )


def decode_user(dialect: Dialect, row: Any) -> UserRecord:
    return UserRecord(
        id=row["id"],
        username=row["username"],
        password_hash=row["password_hash"],
        role=row["role"],
        token_version=row["token_version"],
        created_at=dialect.time_value(row["created_at"]),
        created_by=row["created_by"],
        password_changed_at=dialect.time_value(row["password_changed_at"]),
        disabled_at=_time_or_none(dialect, row["disabled_at"]),
    )


def decode_audit(dialect: Dialect, row: Any) -> AuditRecord:
    return AuditRecord(
        id=row["id"],
        at=dialect.time_value(row["at"]),
        actor=row["actor"],
        action=row["action"],
        target=row["target"],
        outcome=row["outcome"],
        status_code=row["status_code"],
        request_id=row["request_id"],
        source=row["source"],
        detail=dialect.json_value(row["detail"]),
        repeats=row["repeats"],
        last_at=_time_or_none(dialect, row["last_at"]),
    )
