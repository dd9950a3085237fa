"""The rules of a build's life, as pure functions over its current state.

Both stores call these inside their write transaction, after locking the build, so the rules are written once
and hold the same on SQLite and PostgreSQL.

A build is ``running`` from 0 upwards; it only moves forward within an attempt; 100 makes it ``succeeded``;
a failure makes it ``failed`` at its current code. Only a reset (attempt + 1, back to 0) leaves ``failed`` or
``succeeded``. Repeating exactly what is already true is a replay: no new event, the current state returned.

Event types: ``EventType`` and ``EVENT_RULES`` are the one list of them. The route that records each, the
``type`` and ``states`` filters (HTTP, SQL, webhooks), the CLI's choices, the append's side rows and the
metrics all read them from here, so a new type is its member, its rule, and its payload mapping
(``webhooks/cdevents.py``); ``tests/test_event_types.py`` fails when one of them is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from uuid import UUID

from buildstate.errors import Conflict

MAX_STATE = 100
STATE_STEP = 5

RUNNING, FAILED, SUCCEEDED = "running", "failed", "succeeded"


class EventType(StrEnum):
    CREATED = "created"
    STATE = "state"
    FAILURE = "failure"
    RESET = "reset"
    ARTIFACT = "artifact"
    CHANNEL = "channel"
    REVOKED = "revoked"
    RESTORED = "restored"


@dataclass(frozen=True, slots=True)
class EventRule:
    """What the rest of the service needs to know about one event type."""

    # The audit log's name for the write that records it: also that route's ``action`` (``web/routes``).
    action: str
    # What a ``states`` filter (of ``/events``, ``/events/stream`` and webhooks) calls it; None: its code.
    state_word: str | None = None
    # It records a row of ``failures`` (the dashboard's failure groups).
    records_failure: bool = False
    # It is a build's first event: answered 201, and its platform x OS x image type joins the matrix.
    creates_build: bool = False
    # What ``buildstate events tail`` shows for it instead of the build's status ("": the status).
    label: str = ""
    # It moves the build (state, status, attempt, message, failure, ``updated_at``, ``last_event_seq``).
    # An event that does not (``artifact``, ``channel``, ``revoked``, ``restored``) copies the build's
    # state into its row and leaves the build row as it is. A ``states`` filter matches it by its own word
    # only (``revoked``), never by the code it copies: ``states=100`` asks for the moment a build reached
    # 100, not for what was recorded about it afterwards.
    changes_state: bool = True


EVENT_RULES: dict[EventType, EventRule] = {
    EventType.CREATED: EventRule("build.create", creates_build=True, label="created"),
    EventType.STATE: EventRule("build.state"),
    EventType.FAILURE: EventRule("build.failure", state_word=FAILED, records_failure=True, label="FAILED"),
    EventType.RESET: EventRule("build.reset", state_word="reset", label="RESET"),
    EventType.ARTIFACT: EventRule("build.artifacts", label="artifacts", changes_state=False),
    EventType.CHANNEL: EventRule(
        "channel.assign", state_word="channel", label="CHANNEL", changes_state=False
    ),
    EventType.REVOKED: EventRule("build.revoke", state_word="revoked", label="REVOKED", changes_state=False),
    EventType.RESTORED: EventRule(
        "build.restore", state_word="restored", label="RESTORED", changes_state=False
    ),
}
# The words a ``states`` filter takes besides state codes: each type's word, and succeeded (a code of 100).
STATE_WORDS: tuple[str, ...] = (*(r.state_word for r in EVENT_RULES.values() if r.state_word), SUCCEEDED)
# One token of a ``states`` filter, as a regular expression: a state code (0..100 in steps of 5) or a word.
STATE_TOKEN = "100|[1-9]?[05]|" + "|".join(STATE_WORDS)
# One token of a ``type`` filter.
EVENT_TYPE_TOKEN = "|".join(EventType)


def types_where(predicate: Callable[[EventRule], bool]) -> tuple[EventType, ...]:
    """The event types whose rule says so, in the enum's order."""
    return tuple(t for t, rule in EVENT_RULES.items() if predicate(rule))


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

    type: EventType
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


def _build_failed(current: Current, why: str) -> Conflict:
    """The 409 of a write that a failed build takes no more: ``why`` it is refused, then how to go on."""
    return Conflict(
        f"build {current.ref} {why}; {_reset_hint(current.ref)}",
        slug="build-failed",
        extra={"state_code": current.state_code, "build_status": current.status},
    )


def decide_state(current: Current, state_code: int) -> Change | None:
    if current.status == FAILED:
        raise _build_failed(current, f"is failed at state {current.state_code} (attempt {current.attempt})")
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
        type=EventType.STATE,
        state_code=state_code,
        status=status_at(state_code),
        attempt=current.attempt,
        from_state_code=current.state_code,
    )


def status_at(state_code: int) -> str:
    """The status a state change to ``state_code`` leaves a build in."""
    return SUCCEEDED if state_code == MAX_STATE else RUNNING


def moves_forward(status: str, current_code: int, state_code: int) -> bool:
    """Whether ``decide_state`` records a change to ``state_code`` (rather than a replay or a 409): the
    build runs and is below it. PostgreSQL's one-statement state change checks exactly this in SQL
    (``store.postgres.STATE_BY_ID``); tests/store/test_state_in_one.py holds the two to each other."""
    return status == RUNNING and current_code < state_code


def decide_failure(current: Current, failure: dict[str, Any]) -> Change | None:
    if current.status == FAILED:
        if current.failure == failure:
            return REPLAY
        raise _build_failed(current, f"is already failed at state {current.state_code}")
    if current.status == SUCCEEDED:
        raise Conflict(
            f"build {current.ref} already succeeded; a failure cannot be recorded on it; "
            f"{_reset_hint(current.ref)}",
            slug="build-succeeded",
            extra={"state_code": current.state_code, "build_status": current.status},
        )
    return Change(
        type=EventType.FAILURE,
        state_code=current.state_code,
        status=FAILED,
        attempt=current.attempt,
        from_state_code=current.state_code,
    )


def allow_artifacts(current: Current) -> None:
    """New artifacts are recorded while a build runs and after it succeeded; a failed build keeps what it
    recorded but takes no more: what a failed attempt made is not an image anyone should find, and its
    pipeline records the artifacts of the next attempt after a reset. (Artifacts it already has are a
    replay, whatever the build's status: a retry of a write that was accepted is answered the same.)"""
    if current.status == FAILED:
        raise _build_failed(
            current,
            f"is failed at state {current.state_code} (attempt {current.attempt}); "
            "artifacts are recorded while a build runs or after it succeeded",
        )


def decide_reset(current: Current) -> Change:
    """A reset always starts a new attempt: a stuck running build may be restarted too."""
    return Change(
        type=EventType.RESET,
        state_code=0,
        status=RUNNING,
        attempt=current.attempt + 1,
        from_state_code=current.state_code,
    )
