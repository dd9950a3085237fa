"""``plan.result``, every write's answer, built with one validation per model: the same JSON, to the
byte, as the build re-validated through ``model_dump`` and updated with ``model_copy`` (how it was built
before), for each kind of draft."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from buildstate.models import (
    Build,
    BuildCreate,
    BuildWithEvent,
    Event,
    Failure,
    FailureReport,
    Provenance,
    ResetRequest,
    StateChange,
)
from buildstate.store import plan

NOW = datetime(2026, 12, 1, 12, 0, 0, 120000, tzinfo=UTC)


def _build(**fields: object) -> Build:
    values: dict[str, object] = {
        "id": uuid.UUID("6f1c2a3e-0000-4000-8000-000000000001"),
        "build_id": "rhel-9-base-1",
        "platform": "aws",
        "os_version": "rhel-9",
        "image_type": "base",
        "state_code": 40,
        "status": "running",
        "attempt": 2,
        "labels": {"arch": "x86_64"},
        "message": "before",
        "failure": None,
        "created_at": NOW - timedelta(hours=1),
        "updated_at": NOW - timedelta(minutes=5),
        "last_event_seq": 41,
    }
    values.update(fields)
    return Build.model_validate(values)


def _as_before(build: Build, draft: plan.Draft, seq: int, duration_ms: int | None) -> BuildWithEvent:
    event = Event(
        seq=seq,
        type=draft.type,
        recorded_at=NOW,
        attempt=draft.attempt,
        state_code=draft.state_code,
        from_state_code=draft.from_state_code,
        status=draft.status,
        message=draft.message,
        failure=Failure(**draft.failure) if draft.failure else None,
        reason=draft.reason,
        actor="key:abc",
        provenance=draft.provenance,
        duration_ms=duration_ms,
        build=plan.event_build(build),
    )
    return BuildWithEvent(
        **build.model_dump(exclude={"state_code", "status", "attempt", "message", "failure"}),
        state_code=draft.state_code,
        status=draft.status,
        attempt=draft.attempt,
        message=draft.message,
        failure=Failure(**draft.failure) if draft.failure else None,
        event=event,
    ).model_copy(update={"updated_at": NOW, "last_event_seq": seq})


PROVENANCE = Provenance(team="t", pipeline="p", instance_vars={"n": 1.5, "deep": {"x": [1, "two"]}})
FAILED = _build(status="failed", failure=Failure(error_message="old", details={"k": "v"}))
CASES = [
    (_build(), plan.state(_build(), plan.prepare(StateChange(state_code=55, message="step")))),
    (_build(), plan.state(_build(), plan.prepare(StateChange(state_code=100, provenance=PROVENANCE)))),
    (
        _build(),
        plan.failure(
            _build(),
            plan.prepare(FailureReport(error_message="boom", error_code="E1", details={"a": [1, None]})),
        ),
    ),
    (FAILED, plan.reset(FAILED, plan.prepare(ResetRequest(reason="flaky", provenance=PROVENANCE)))),
    (
        _build(),
        plan.created(plan.prepare(BuildCreate(platform="aws", os_version="r", image_type="b", build_id="x"))),
    ),
]


@pytest.mark.parametrize(("build", "draft"), CASES)
def test_the_answer_is_the_one_built_through_model_dump(build: Build, draft: plan.Draft | None) -> None:
    assert draft is not None
    for duration in (None, 1234):
        made = plan.result(build, draft, actor="key:abc", seq=42, recorded_at=NOW, duration_ms=duration)
        before = _as_before(build, draft, 42, duration)
        assert made == before
        assert made.model_dump_json() == before.model_dump_json()


def test_a_replay_is_the_build_as_it_is_with_its_event() -> None:
    build = _build(failure=Failure(error_message="x"))
    event = _as_before(build, CASES[0][1], 41, 5).event  # type: ignore[arg-type]
    replay = plan.with_event(build, event)
    before = BuildWithEvent(**build.model_dump(), event=event, replayed=True)
    assert replay.model_dump_json() == before.model_dump_json()
