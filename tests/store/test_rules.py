"""The build rules, proven against both real stores (no mocks)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from buildstate.errors import Conflict, NotFound, Unprocessable
from buildstate.models import BuildCreate, FailureReport, ResetRequest, StateChange
from buildstate.store import Store
from buildstate.store.types import Idempotency, WriteContext

CTX = WriteContext(actor="tester", request_id="r1", source="127.0.0.1")


def body(result: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(result.body)
    return data


def new_build(build_id: str = "rhel-8.8-base-1", **fields: Any) -> BuildCreate:
    values = {"platform": "aws", "os_version": "rhel-8.8", "image_type": "base", "build_id": build_id}
    values.update(fields)
    return BuildCreate(**values)


async def create(store: Store, build_id: str = "rhel-8.8-base-1", **fields: Any) -> dict[str, Any]:
    return body(await store.create_build(new_build(build_id, **fields), CTX))


async def state(store: Store, ref: str, code: int, message: str | None = None) -> dict[str, Any]:
    return body(await store.record_state(ref, StateChange(state_code=code, message=message), CTX))


async def test_new_build_starts_running_at_zero_with_a_created_event(store: Store) -> None:
    result = await store.create_build(new_build(labels={"region": "eu-west-1"}), CTX)
    build = body(result)
    assert result.status_code == 201
    assert (build["state_code"], build["status"], build["attempt"]) == (0, "running", 1)
    assert build["labels"] == {"region": "eu-west-1"}
    assert build["event"]["type"] == "created"
    assert build["event"]["seq"] == build["last_event_seq"]
    stored = await store.get_build(build["id"])
    assert stored.build_id == "rhel-8.8-base-1"
    assert (await store.get_build("rhel-8.8-base-1")).id == stored.id


async def test_same_build_id_with_same_fields_replays_and_different_fields_conflict(store: Store) -> None:
    first = await create(store)
    again = await store.create_build(new_build(), CTX)
    assert again.status_code == 200
    assert body(again)["id"] == first["id"]
    assert body(again)["event"]["seq"] == first["event"]["seq"]
    with pytest.raises(Conflict) as refused:
        await store.create_build(new_build(platform="azure"), CTX)
    assert refused.value.extra["differing_fields"] == ["platform"]
    history = await store.history(first["id"])
    assert [e.type for e in history.events] == ["created"]


async def test_states_only_move_forward_and_repeats_are_replays(store: Store) -> None:
    build = await create(store)
    for code in (10, 25, 50):
        assert (await state(store, build["id"], code, f"at {code}"))["state_code"] == code
    replay = await state(store, build["id"], 50)
    assert replay["state_code"] == 50
    assert replay["event"]["state_code"] == 50
    with pytest.raises(Conflict) as lower:
        await state(store, build["id"], 25)
    assert lower.value.type_slug == "state-regression"
    history = await store.history(build["id"])
    assert [(e.type, e.state_code) for e in history.events] == [
        ("created", 0),
        ("state", 10),
        ("state", 25),
        ("state", 50),
    ]
    assert [e.from_state_code for e in history.events] == [None, 0, 10, 25]
    assert history.events[-1].message == "at 50"
    assert all(e.duration_ms is not None and e.duration_ms >= 0 for e in history.events[1:])


async def test_one_hundred_succeeds_and_freezes_the_build_until_reset(store: Store) -> None:
    build = await create(store)
    done = await state(store, build["id"], 100, "done")
    assert done["status"] == "succeeded"
    assert (await state(store, build["id"], 100))["status"] == "succeeded"  # replay
    with pytest.raises(Conflict) as after:
        await state(store, build["id"], 95)
    assert after.value.type_slug == "build-succeeded"
    with pytest.raises(Conflict):
        await store.record_failure(build["id"], FailureReport(error_message="late"), CTX)
    reset = body(await store.reset_build(build["id"], ResetRequest(reason="rebuild"), CTX))
    assert (reset["state_code"], reset["status"], reset["attempt"]) == (0, "running", 2)


async def test_failure_sticks_until_reset_which_starts_a_new_attempt(store: Store) -> None:
    build = await create(store)
    await state(store, build["id"], 25)
    report = FailureReport(
        error_message="packer exited 1", error_code="PACKER", component="packer", details={"exit": 1}
    )
    failed = body(await store.record_failure(build["id"], report, CTX))
    assert (failed["status"], failed["state_code"]) == ("failed", 25)
    assert failed["failure"] == {
        "error_message": "packer exited 1",
        "error_code": "PACKER",
        "component": "packer",
        "details": {"exit": 1},
    }
    assert failed["event"]["type"] == "failure"
    with pytest.raises(Conflict) as blocked:
        await state(store, build["id"], 50)
    assert "reset" in blocked.value.detail
    assert blocked.value.type_slug == "build-failed"
    with pytest.raises(Conflict):  # the same code is no replay either while failed
        await state(store, build["id"], 25)
    same = body(await store.record_failure(build["id"], report, CTX))
    assert same["event"]["seq"] == failed["event"]["seq"]
    with pytest.raises(Conflict):
        await store.record_failure(build["id"], FailureReport(error_message="other"), CTX)

    reset_ctx = WriteContext(actor="alice")
    reset = body(await store.reset_build(build["id"], ResetRequest(reason="flaky mirror"), reset_ctx))
    assert (reset["status"], reset["state_code"], reset["attempt"], reset["failure"]) == (
        "running",
        0,
        2,
        None,
    )
    assert reset["event"]["reason"] == "flaky mirror"
    assert reset["event"]["actor"] == "alice"
    assert (await state(store, build["id"], 10))["attempt"] == 2
    history = await store.history(build["id"])
    assert [(e.type, e.attempt, e.state_code) for e in history.events] == [
        ("created", 1, 0),
        ("state", 1, 25),
        ("failure", 1, 25),
        ("reset", 2, 0),
        ("state", 2, 10),
    ]


async def test_unknown_build_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.get_build("nope")
    with pytest.raises(NotFound):
        await store.get_build("6f1c0000-0000-4000-8000-000000000000")
    with pytest.raises(NotFound):
        await state(store, "nope", 10)
    with pytest.raises(NotFound):
        await store.get_event(999)


async def test_idempotency_key_replays_the_first_response_and_rejects_another_body(store: Store) -> None:
    build = await create(store)
    idem = Idempotency.for_request("tester", "k1", "POST", "/s", b'{"state_code": 10}')
    ctx = WriteContext(actor="tester", idem=idem)
    first = await store.record_state(build["id"], StateChange(state_code=10), ctx)
    await state(store, build["id"], 25)  # the build moves on...
    retry = await store.record_state(build["id"], StateChange(state_code=10), ctx)
    assert retry.replayed
    assert retry.body == first.body  # ...but the retry still gets the first answer, not a 409
    other = WriteContext(
        actor="tester", idem=Idempotency.for_request("tester", "k1", "POST", "/s", b'{"state_code": 50}')
    )
    with pytest.raises(Unprocessable):
        await store.record_state(build["id"], StateChange(state_code=50), other)
    # Keys belong to their actor: another caller's same key is a new request.
    mallory = WriteContext(actor="mallory", idem=Idempotency.for_request("mallory", "k1", "POST", "/s", b"x"))
    assert not (await store.record_state(build["id"], StateChange(state_code=50), mallory)).replayed
    history = await store.history(build["id"])
    assert [e.state_code for e in history.events] == [0, 10, 25, 50]


async def test_refused_write_keeps_no_idempotency_record(store: Store) -> None:
    build = await create(store)
    await state(store, build["id"], 50)
    ctx = WriteContext(actor="t", idem=Idempotency.for_request("t", "k", "POST", "/s", b"1"))
    with pytest.raises(Conflict):
        await store.record_state(build["id"], StateChange(state_code=25), ctx)
    with pytest.raises(Conflict):  # the retry is judged again, not replayed as a success
        await store.record_state(build["id"], StateChange(state_code=25), ctx)


async def test_a_write_says_what_it_did_an_event_appended_or_not_and_a_replayed_key(store: Store) -> None:
    made = await store.create_build(new_build(), CTX)
    assert (made.appended, made.created, made.key_replayed, made.status_code) == (True, True, False, 201)
    assert made.event is not None and made.event.type == "created"
    again = await store.create_build(new_build(), CTX)
    assert (again.appended, again.created, again.replayed, again.event) == (False, False, True, None)
    keyed = WriteContext(actor="tester", idem=Idempotency.for_request("tester", "k1", "POST", "/s", b"{}"))
    moved = await store.record_state(made.build.build_id, StateChange(state_code=10), keyed)
    assert (moved.appended, moved.key_replayed) == (True, False)
    assert moved.event is not None and moved.event.state_code == 10
    repeated = await store.record_state(made.build.build_id, StateChange(state_code=10), keyed)
    assert (repeated.appended, repeated.key_replayed, repeated.event) == (False, True, None)
    assert repeated.body == moved.body  # the first answer, as it was
