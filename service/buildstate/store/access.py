"""Access records: API keys, users and the audit log, as one interface over both databases.

``AccessStore`` is the part of storage that the auth rules (``buildstate.auth``) and the admin routes need.
Each ``Store`` carries one as ``store.access``; ``sqlite_access`` and ``postgres_access`` implement it on the
same connections, thread pools and transactions as the build store, so a key or user change and its audit
row commit together, exactly as build writes do.

Secrets never reach this layer: keys arrive as a SHA-256 hex digest, passwords as an argon2 hash.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from buildstate.store.sql import Dialect, Params
from buildstate.store.types import WriteContext


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


class AccessStore(Protocol):
    """Keys, users and the audit log. Every change writes its audit row in the same transaction."""

    async def create_key(self, key: NewApiKey, ctx: WriteContext) -> ApiKeyRecord:
        """Raises ``KeyPrefixTaken`` if the prefix exists (nothing is written): draw another key."""
        ...

    async def key_by_prefix(self, prefix: str) -> ApiKeyRecord | None: ...
    async def list_keys(self, *, include_revoked: bool) -> list[ApiKeyRecord]: ...
    async def revoke_key(self, prefix: str, ctx: WriteContext) -> ApiKeyRecord: ...
    async def touch_key(self, key_id: int, at: datetime, unless_since: datetime) -> None:
        """Set ``last_used_at`` unless it is already ``unless_since`` or later (a cheap, rare write)."""
        ...

    async def create_user(
        self, username: str, password_hash: str, role: str, ctx: WriteContext
    ) -> UserRecord: ...
    async def user_by_name(self, username: str) -> UserRecord | None: ...
    async def list_users(self) -> list[UserRecord]: ...
    async def set_user_disabled(self, username: str, disabled: bool, ctx: WriteContext) -> UserRecord: ...
    async def set_password(self, username: str, password_hash: str, ctx: WriteContext) -> UserRecord: ...
    async def has_admin(self) -> bool:
        """Is there any usable admin credential (an active admin key or an enabled admin user)?"""
        ...

    async def list_audit(self, where: AuditFilter) -> list[AuditRecord]: ...


# ---------------------------------------------------------------- SQL shared by both dialects

KEY_COLUMNS = (
    "id, prefix, key_hash, name, scopes, platforms, created_at, created_by, expires_at, last_used_at, "
    "revoked_at, revoked_by"
)
USER_COLUMNS = (
    "id, username, password_hash, role, token_version, created_at, created_by, password_changed_at, "
    "disabled_at"
)
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
