"""The rules of a build's life, as pure functions over its current state.

Both stores call these inside their write transaction, after locking the build, so the rules are written once
and hold the same on SQLite and PostgreSQL.

A build is ``running`` from 0 upwards; it only moves forward within an attempt; 100 makes it ``succeeded``;
a failure makes it ``failed`` at its current code. Only a reset (attempt + 1, back to 0) leaves ``failed`` or
``succeeded``. Repeating exactly what is already true is a replay: no new event, the current state returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from buildstate.errors import Conflict

MAX_STATE = 100
STATE_STEP = 5

RUNNING, FAILED, SUCCEEDED = "running", "failed", "succeeded"


@dataclass(frozen=True, slots=True)
class Current:
    """What the rules need to know about a build."""

    ref: str
    state_code: int
    status: str
    attempt: int
    failure: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Change:
    """A change to record: the build's state right after it."""

    type: str
    state_code: int
    status: str
    attempt: int
    from_state_code: int | None


REPLAY = None  # a decision of "nothing to record"


def build_uuid_of(ref: str) -> UUID | None:
    """The build id a reference spells, or None when the reference is a pipeline's ``build_id``.

    A reference names exactly one build: when it reads as a UUID (in any spelling Python's ``uuid.UUID``
    accepts: upper case, no hyphens, braces, ``urn:uuid:``, even ``+``, ``0x`` or ``_`` inside) it names the
    build with that id and nothing else; otherwise the build with that ``build_id``. The two never meet
    because a ``build_id`` that reads as a UUID is refused at creation (``models.BuildName``). Every
    spelling PostgreSQL's uuid input accepts is among Python's (tests/store/test_build_refs.py checks it
    against a real server), so neither parser can read a ``build_id`` as an id.
    """
    try:
        return UUID(ref)
    except ValueError:
        return None


def _reset_hint(ref: str) -> str:
    return f'POST /builds/{ref}/reset with {{"reason": "..."}} starts a new attempt at 0'


def decide_state(current: Current, state_code: int) -> Change | None:
    if current.status == FAILED:
        raise Conflict(
            f"build {current.ref} is failed at state {current.state_code} "
            f"(attempt {current.attempt}); {_reset_hint(current.ref)}",
            slug="build-failed",
            extra={"state_code": current.state_code, "build_status": current.status},
        )
    if state_code == current.state_code:
        return REPLAY
    if current.status == SUCCEEDED:
        raise Conflict(
            f"build {current.ref} already succeeded (state 100, attempt {current.attempt}); "
            f"{_reset_hint(current.ref)}",
            slug="build-succeeded",
            extra={"state_code": current.state_code, "build_status": current.status},
        )
    if state_code < current.state_code:
        raise Conflict(
            f"build {current.ref} is at state {current.state_code}; a build only moves forward "
            f"within an attempt, so {state_code} is refused",
            slug="state-regression",
            extra={"state_code": current.state_code, "build_status": current.status},
        )
    return Change(
        type="state",
        state_code=state_code,
        status=SUCCEEDED if state_code == MAX_STATE else RUNNING,
        attempt=current.attempt,
        from_state_code=current.state_code,
    )


def decide_failure(current: Current, failure: dict[str, Any]) -> Change | None:
    if current.status == FAILED:
        if current.failure == failure:
            return REPLAY
        raise Conflict(
            f"build {current.ref} is already failed at state {current.state_code}; "
            f"{_reset_hint(current.ref)}",
            slug="build-failed",
            extra={"state_code": current.state_code, "build_status": current.status},
        )
    if current.status == SUCCEEDED:
        raise Conflict(
            f"build {current.ref} already succeeded; a failure cannot be recorded on it; "
            f"{_reset_hint(current.ref)}",
            slug="build-succeeded",
            extra={"state_code": current.state_code, "build_status": current.status},
        )
    return Change(
        type="failure",
        state_code=current.state_code,
        status=FAILED,
        attempt=current.attempt,
        from_state_code=current.state_code,
    )


def decide_reset(current: Current) -> Change:
    """A reset always starts a new attempt: a stuck running build may be restarted too."""
    return Change(
        type="reset",
        state_code=0,
        status=RUNNING,
        attempt=current.attempt + 1,
        from_state_code=current.state_code,
    )
