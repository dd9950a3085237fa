"""Turns a write request and a locked build into the event to append, the same way for both stores."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from buildstate import domain
from buildstate.domain import EVENT_RULES, EventType
from buildstate.errors import Conflict
from buildstate.models import (
    Build,
    BuildCreate,
    BuildWithEvent,
    Event,
    EventBuild,
    Failure,
    FailureReport,
    ResetRequest,
    StateChange,
)


@dataclass(frozen=True, slots=True)
class Draft:
    """An event about to be appended, with the build's state right after it."""

    type: EventType
    attempt: int
    state_code: int
    from_state_code: int | None
    status: str
    message: str | None
    failure: dict[str, Any] | None
    reason: str | None
    provenance: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class SideEvent:
    """An event that leaves its build as it is (``EventRule.changes_state`` false): the event row copies the
    build's state, and ``detail`` says what happened (artifacts, a channel move, a revocation)."""

    type: EventType
    build: Build
    actor: str
    reason: str | None
    detail: dict[str, Any]
    provenance: dict[str, Any] | None = None

    def committed(self, seq: int, recorded_at: datetime) -> Event:
        """The event as its append recorded it: the build's state copied, nothing else changed."""
        build = self.build
        return Event(
            seq=seq,
            type=self.type,
            recorded_at=recorded_at,
            attempt=build.attempt,
            state_code=build.state_code,
            from_state_code=build.state_code,
            status=build.status,
            message=None,
            failure=None,
            reason=self.reason,
            actor=self.actor,
            provenance=self.provenance,
            duration_ms=None,
            build=event_build(build),
            detail=self.detail,
        )


def _current(build: Build) -> domain.Current:
    failure = build.failure.model_dump() if build.failure else None
    return domain.Current(build.build_id, build.state_code, build.status, build.attempt, failure)


@dataclass(frozen=True, slots=True)
class Prepared:
    """A validated write request as the plain values its event needs, made by ``prepare`` before the write
    is queued: the SQLite writer thread (one per process, shared by every write) and a held row lock
    only compare and copy them, they never validate or convert a request."""

    state_code: int | None = None
    message: str | None = None
    failure: dict[str, Any] | None = None
    reason: str | None = None
    provenance: dict[str, Any] | None = None


def prepare(request: BuildCreate | StateChange | FailureReport | ResetRequest) -> Prepared:
    provenance = request.provenance.model_dump(exclude_none=True) if request.provenance else None
    if isinstance(request, StateChange):
        return Prepared(state_code=request.state_code, message=request.message, provenance=provenance)
    if isinstance(request, FailureReport):
        report = Failure(
            error_message=request.error_message,
            error_code=request.error_code,
            component=request.component,
            details=request.details,
        ).model_dump()
        return Prepared(message=request.error_message, failure=report, provenance=provenance)
    if isinstance(request, ResetRequest):
        return Prepared(message=request.reason, reason=request.reason, provenance=provenance)
    return Prepared(provenance=provenance)


def _draft(change: domain.Change, prepared: Prepared, *, failure: bool = False) -> Draft:
    return Draft(
        type=change.type,
        attempt=change.attempt,
        state_code=change.state_code,
        from_state_code=change.from_state_code,
        status=change.status,
        message=prepared.message,
        failure=prepared.failure if failure else None,
        reason=prepared.reason,
        provenance=prepared.provenance,
    )


def created(prepared: Prepared) -> Draft:
    return _draft(domain.Change(EventType.CREATED, 0, domain.RUNNING, 1, None), prepared)


def state(build: Build, prepared: Prepared) -> Draft | None:
    if prepared.state_code is None:  # pragma: no cover - prepare() of a StateChange always sets it
        raise ValueError("a state change without a state code")
    change = domain.decide_state(_current(build), prepared.state_code)
    return None if change is None else _draft(change, prepared)


def failure(build: Build, prepared: Prepared) -> Draft | None:
    change = domain.decide_failure(_current(build), prepared.failure or {})
    return None if change is None else _draft(change, prepared, failure=True)


def reset(build: Build, prepared: Prepared) -> Draft:
    return _draft(domain.decide_reset(_current(build)), prepared)


def state_tokens(draft: Draft) -> tuple[str, str | None]:
    """What a ``states`` filter matches an event by: its code, or failed/reset; and succeeded at 100."""
    return tokens(draft.type, draft.state_code)


def tokens(event_type: EventType, state_code: int) -> tuple[str, str | None]:
    """``state_tokens`` of an event of ``event_type`` that leaves its build at ``state_code``."""
    word = EVENT_RULES[event_type].state_word
    if word is not None:
        return word, None
    return str(state_code), domain.SUCCEEDED if state_code == domain.MAX_STATE else None


def same_build(existing: Build, request: BuildCreate) -> None:
    """A repeated create is a replay only if it names the same build; otherwise it is a conflict."""
    differing = [
        name
        for name in ("platform", "os_version", "image_type", "labels")
        if getattr(existing, name) != getattr(request, name)
    ]
    if differing:
        raise Conflict(
            f"build_id {request.build_id!r} already exists with different {', '.join(differing)}",
            slug="build-exists",
            extra={"id": str(existing.id), "differing_fields": differing},
        )


def result(
    build: Build,
    draft: Draft,
    *,
    actor: str,
    seq: int,
    recorded_at: datetime,
    duration_ms: int | None,
) -> BuildWithEvent:
    """The build and event as committed, built from what the transaction knows (no re-read): each model
    validated once (no ``model_dump`` and ``model_copy`` round trip: this is every write's answer)."""
    failure_model = Failure(**draft.failure) if draft.failure else None
    event = Event(
        seq=seq,
        type=draft.type,
        recorded_at=recorded_at,
        attempt=draft.attempt,
        state_code=draft.state_code,
        from_state_code=draft.from_state_code,
        status=draft.status,
        message=draft.message,
        failure=failure_model,
        reason=draft.reason,
        actor=actor,
        provenance=draft.provenance,
        duration_ms=duration_ms,
        build=event_build(build),
    )
    fields = dict(build)  # the build's fields, as they are (a shallow copy)
    fields.update(
        state_code=draft.state_code,
        status=draft.status,
        attempt=draft.attempt,
        message=draft.message,
        failure=failure_model,
        updated_at=recorded_at,
        last_event_seq=seq,
    )
    return BuildWithEvent(**fields, event=event)


def event_build(build: Build) -> EventBuild:
    return EventBuild(
        id=build.id,
        build_id=build.build_id,
        platform=build.platform,
        os_version=build.os_version,
        image_type=build.image_type,
        labels=build.labels,
        created_at=build.created_at,
    )


def with_event(build: Build, event: Event) -> BuildWithEvent:
    """The answer to a change that was already true (a replay): the build as it is, with its earlier event."""
    return BuildWithEvent(**dict(build), event=event, replayed=True)
