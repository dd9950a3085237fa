"""The values that cross the store interface: who writes, what to filter by, what a write answered.

Plain frozen dataclasses, importing nothing of the store, so that the HTTP layer, the auth rules and every
store module can share them without an import cycle (the interfaces are in ``store.base``).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any
from uuid import UUID

from buildstate.errors import BadRequest, Unprocessable
from buildstate.models import BuildWithEvent, Event, utc_time
from buildstate.redaction import redact


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


@dataclass(frozen=True)
class WriteResult:
    """What a write did, as the store committed it: the HTTP status, the metrics and the audit row are
    derived from this, never from a response body.

    - ``build``: the build right after the write, with the event this request recorded, or (when it recorded
      nothing) the event that already said so; on an ``Idempotency-Key`` replay, the first answer as it was.
    - ``appended``: this request recorded a new event (``event``).
    - ``created``: the answer is a build's creation (201), also when it is replayed under its key.
    - ``key_replayed``: the answer is the one first given under this ``Idempotency-Key``.
    """

    build: BuildWithEvent
    appended: bool
    created: bool = False
    key_replayed: bool = False

    @classmethod
    def of(cls, build: BuildWithEvent, *, created: bool = False) -> WriteResult:
        """A write's own answer: it appended ``build.event`` unless the change was already true."""
        return cls(build, appended=not build.replayed, created=created)

    @property
    def event(self) -> Event | None:
        """The event this request recorded, if it recorded one."""
        return self.build.event if self.appended else None

    @property
    def replayed(self) -> bool:
        """This request recorded nothing: its key was seen before, or the change was already true."""
        return not self.appended

    @property
    def status_code(self) -> int:
        return 201 if self.created else 200

    @cached_property
    def body(self) -> bytes:
        """The answer's JSON (serialised once, for the response and for the idempotency record)."""
        return self.build.model_dump_json().encode()


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
class PoolStats:
    """A connection pool's sizes, for the metrics (a store without a pool has none)."""

    in_use: int
    idle: int
    maximum: int


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    current: int | None
    expected: int
    pending: list[str] = field(default_factory=list)


def same_request(idem: Idempotency, fingerprint: str) -> None:
    """422 when the key was first used with another request."""
    if fingerprint != idem.fingerprint:
        raise Unprocessable(
            "this Idempotency-Key was already used with a different request; use a new key",
            slug="idempotency-key-reused",
        )


def replay(
    idem: Idempotency,
    fingerprint: str,
    status_code: int,
    body: str,
    answer: type[BuildWithEvent] = BuildWithEvent,
) -> WriteResult:
    """The response first recorded under an idempotency key, if the request is the same one (``answer``:
    what that route answers, a ``BuildWithEvent`` or a model that extends it)."""
    same_request(idem, fingerprint)
    build = answer.model_validate_json(body)
    return WriteResult(build, appended=False, created=status_code == 201, key_replayed=True)
