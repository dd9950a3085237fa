"""The one store interface, and the values that cross it.

Two implementations keep the same behaviour: ``SQLiteStore`` (the zero-configuration default) and
``PostgresStore`` (production). The tests in ``tests/store`` run every case against both.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

from buildstate.errors import BadRequest, Unprocessable
from buildstate.models import (
    Build,
    BuildCreate,
    BuildPage,
    BuildWithEvent,
    Event,
    EventPage,
    FailureReport,
    History,
    ResetRequest,
    StateChange,
    Summary,
    utc_time,
)
from buildstate.redaction import redact

if TYPE_CHECKING:
    from buildstate.store.access import AccessStore
    from buildstate.store.sql import Dialect


@dataclass(frozen=True, slots=True)
class Idempotency:
    """An ``Idempotency-Key`` with what it must be replayed for: the same actor and the same request."""

    actor: str
    key: str
    fingerprint: str

    @classmethod
    def for_request(cls, actor: str, key: str, method: str, path: str, body: bytes) -> Idempotency:
        digest = hashlib.sha256()
        for part in (method.encode(), path.encode(), body):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
        return cls(actor=actor, key=key, fingerprint=digest.hexdigest())


@dataclass(frozen=True, slots=True)
class WriteContext:
    """Who asks for a write, and how to recognise a retry of it; recorded in the audit log."""

    actor: str
    request_id: str | None = None
    source: str | None = None
    idem: Idempotency | None = None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    actor: str
    action: str
    target: str | None
    outcome: str  # "allowed", "replayed", "refused" (a rule said no), "denied" (auth said no)
    status_code: int | None = None
    request_id: str | None = None
    source: str | None = None
    detail: dict[str, Any] | None = None
    # Entries with the same key are one row whose ``repeats`` counts them (repeated denials, see
    # auth.service.Authenticator.record_denial); None: a row of its own.
    repeat_key: str | None = None

    def __post_init__(self) -> None:
        # The target comes from the request's path: a key pasted there by mistake must not be kept.
        if self.target is not None:
            object.__setattr__(self, "target", redact(self.target))
        if self.detail is not None:
            detail = {k: redact(v) if isinstance(v, str) else v for k, v in self.detail.items()}
            object.__setattr__(self, "detail", detail)

    @classmethod
    def of(
        cls, ctx: WriteContext, action: str, target: str | None, status_code: int, outcome: str
    ) -> AuditEntry:
        return cls(ctx.actor, action, target, outcome, status_code, ctx.request_id, ctx.source)


@dataclass(frozen=True, slots=True)
class WriteResult:
    """The response to a write, as the store committed it (or as first committed, on a replay).

    ``replayed``: this request recorded nothing, either because its ``Idempotency-Key`` was seen before (the
    first answer, as it was) or because the change was already true (``BuildWithEvent.replayed``)."""

    status_code: int
    body: bytes
    replayed: bool = False

    @classmethod
    def of(cls, build: BuildWithEvent, *, created: bool = False) -> WriteResult:
        return cls(201 if created else 200, build.model_dump_json().encode(), replayed=build.replayed)


@dataclass(frozen=True, slots=True)
class BuildFilter:
    platform: str | None = None
    os_version: str | None = None
    image_type: str | None = None
    status: str | None = None
    min_state: int | None = None
    max_state: int | None = None
    updated_since: datetime | None = None


@dataclass(frozen=True, slots=True)
class EventFilter:
    platform: str | None = None
    os_version: str | None = None
    image_type: str | None = None
    build_id: str | None = None
    status: str | None = None
    types: tuple[str, ...] = ()
    # Codes and/or the words "failed", "succeeded", "reset": an event matches if any of them does.
    states: tuple[int | str, ...] = ()
    min_state: int | None = None
    max_state: int | None = None
    updated_since: datetime | None = None


@dataclass(frozen=True, slots=True)
class BuildCursor:
    updated_at: datetime
    id: UUID

    def encode(self) -> str:
        raw = json.dumps([self.updated_at.isoformat(), str(self.id)]).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> BuildCursor:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            stamp, ident = json.loads(raw)
            return cls(updated_at=utc_time(datetime.fromisoformat(stamp)), id=UUID(ident))
        except (ValueError, TypeError, UnicodeDecodeError) as exc:
            raise BadRequest("cursor is not one this service issued", slug="bad-cursor") from exc


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    current: int | None
    expected: int
    pending: list[str] = field(default_factory=list)


class Store(Protocol):
    """Everything the HTTP layer needs from storage. Writes are atomic and race-free across processes."""

    kind: str
    dialect: Dialect
    # API keys, users and audit queries, on the same connections (``store/access.py``).
    access: AccessStore

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def schema_status(self) -> SchemaStatus: ...

    async def create_build(self, request: BuildCreate, ctx: WriteContext) -> WriteResult: ...
    async def record_state(self, ref: str, request: StateChange, ctx: WriteContext) -> WriteResult: ...
    async def record_failure(self, ref: str, request: FailureReport, ctx: WriteContext) -> WriteResult: ...
    async def reset_build(self, ref: str, request: ResetRequest, ctx: WriteContext) -> WriteResult: ...

    async def get_build(self, ref: str) -> Build: ...
    async def list_builds(self, where: BuildFilter, limit: int, cursor: BuildCursor | None) -> BuildPage: ...
    async def history(self, ref: str) -> History: ...
    async def list_events(
        self, where: EventFilter, *, after: int, before: int | None, limit: int, newest_first: bool
    ) -> EventPage: ...
    async def get_event(self, seq: int) -> Event: ...
    async def summary(self, window_hours: int) -> Summary: ...
    async def purge_idempotency_keys(self, older_than: datetime) -> int: ...
    async def record_audit(self, entry: AuditEntry) -> None: ...
    async def max_seq(self) -> int: ...
    async def run_batch(
        self, statements: Sequence[tuple[str, Sequence[Any]]], *, write: bool = True
    ) -> list[list[Any]]: ...


def replay(idem: Idempotency, fingerprint: str, status_code: int, body: str) -> WriteResult:
    """The response first recorded under an idempotency key, if the request is the same one."""
    if fingerprint != idem.fingerprint:
        raise Unprocessable(
            "this Idempotency-Key was already used with a different request; use a new key",
            slug="idempotency-key-reused",
        )
    return WriteResult(status_code, body.encode(), replayed=True)
