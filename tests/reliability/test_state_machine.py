"""Property-based: random sequences of create, state, failure, reset and retries with an Idempotency-Key,
run against the real store (SQLite and PostgreSQL), compared step by step with a model small enough to be
obviously right. Hypothesis shrinks any disagreement to the shortest sequence that shows it."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from buildstate.config import Settings
from buildstate.errors import Conflict, NotFound, Problem, Unprocessable
from buildstate.models import BuildCreate, FailureReport, ResetRequest, StateChange
from buildstate.store import Store, create_store
from buildstate.store.types import Idempotency, WriteContext, WriteResult
from buildstate.store.verify import verify

NAMES = ("alpha", "beta", "gamma")
CODES = st.sampled_from(range(0, 101, 5))
FAILURES = st.sampled_from([("packer exited 1", "packer"), ("ansible failed", "ansible")])


@dataclass(frozen=True)
class ModelBuild:
    platform: str
    state_code: int = 0
    status: str = "running"
    attempt: int = 1
    failure: tuple[str, str] | None = None
    events: int = 1


@dataclass
class Sent:
    """The last write, kept to retry it with its Idempotency-Key."""

    op: str
    name: str
    request: Any
    key: str
    status: int  # what it got: an HTTP status
    body: bytes | None


@dataclass
class Model:
    builds: dict[str, ModelBuild] = field(default_factory=dict)

    def create(self, name: str, platform: str) -> int:
        existing = self.builds.get(name)
        if existing is None:
            self.builds[name] = ModelBuild(platform)
            return 201
        return 200 if existing.platform == platform else 409

    def state(self, name: str, code: int) -> int:
        build = self.builds.get(name)
        if build is None:
            return 404
        if build.status == "failed":
            return 409
        if code == build.state_code:
            return 200  # a replay: no event
        if build.status == "succeeded" or code < build.state_code:
            return 409
        status = "succeeded" if code == 100 else "running"
        self.builds[name] = replace(build, state_code=code, status=status, events=build.events + 1)
        return 200

    def fail(self, name: str, failure: tuple[str, str]) -> int:
        build = self.builds.get(name)
        if build is None:
            return 404
        if build.status == "failed":
            return 200 if build.failure == failure else 409
        if build.status == "succeeded":
            return 409
        self.builds[name] = replace(build, status="failed", failure=failure, events=build.events + 1)
        return 200

    def reset(self, name: str) -> int:
        build = self.builds.get(name)
        if build is None:
            return 404
        self.builds[name] = replace(
            build,
            state_code=0,
            status="running",
            attempt=build.attempt + 1,
            failure=None,
            events=build.events + 1,
        )
        return 200


def _machine(database_url: str) -> type[RuleBasedStateMachine]:
    class BuildRules(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.loop = asyncio.new_event_loop()
            self.store: Store = create_store(Settings(database_url=database_url))
            self.loop.run_until_complete(self.store.open())
            self.run = uuid.uuid4().hex[:8]  # each example's builds are its own, in one shared database
            self.model = Model()
            self.last: Sent | None = None

        def teardown(self) -> None:
            try:
                report = self.loop.run_until_complete(verify(self.store))
                assert report.ok, report.as_dict()  # the maintained tables agree with the event log
            finally:
                self.loop.run_until_complete(self.store.close())
                self.loop.close()

        def build_id(self, name: str) -> str:
            return f"{name}-{self.run}"

        def send(
            self, op: str, name: str, request: Any, key: str | None = None
        ) -> tuple[int, WriteResult | None]:
            ctx = WriteContext(actor="test:model")
            if key is not None:
                body = request.model_dump_json().encode()
                ctx = replace(
                    ctx, idem=Idempotency.for_request("test:model", key, "POST", f"/{op}/{name}", body)
                )
            ref = self.build_id(name)
            calls = {
                "create": lambda: self.store.create_build(request, ctx),
                "state": lambda: self.store.record_state(ref, request, ctx),
                "failure": lambda: self.store.record_failure(ref, request, ctx),
                "reset": lambda: self.store.reset_build(ref, request, ctx),
            }
            try:
                result = self.loop.run_until_complete(calls[op]())
            except Problem as problem:
                assert isinstance(problem, (Conflict, NotFound, Unprocessable)), problem
                return problem.status, None
            return result.status_code, result

        def record(self, op: str, name: str, request: Any, expected: int) -> None:
            key = uuid.uuid4().hex
            status, result = self.send(op, name, request, key)
            assert status == expected, (op, name, request, status, expected)
            self.last = Sent(op, name, request, key, status, result.body if result else None)

        @rule(name=st.sampled_from(NAMES), platform=st.sampled_from(["aws", "gcp"]))
        def create(self, name: str, platform: str) -> None:
            request = BuildCreate(
                platform=platform, os_version="rhel-9", image_type="base", build_id=self.build_id(name)
            )
            self.record("create", name, request, self.model.create(name, platform))

        @rule(name=st.sampled_from(NAMES), code=CODES)
        def state(self, name: str, code: int) -> None:
            self.record("state", name, StateChange(state_code=code), self.model.state(name, code))

        @rule(name=st.sampled_from(NAMES), failure=FAILURES)
        def failure(self, name: str, failure: tuple[str, str]) -> None:
            request = FailureReport(error_message=failure[0], component=failure[1])
            self.record("failure", name, request, self.model.fail(name, failure))

        @rule(name=st.sampled_from(NAMES))
        def reset(self, name: str) -> None:
            self.record("reset", name, ResetRequest(reason="retry"), self.model.reset(name))

        @precondition(lambda self: self.last is not None and self.last.status < 300)
        @rule()
        def retry_last_write(self) -> None:
            """A pipeline retrying after a lost answer: the first answer again, nothing new recorded."""
            assert self.last is not None
            status, result = self.send(self.last.op, self.last.name, self.last.request, self.last.key)
            assert result is not None and result.replayed
            assert (status, result.body) == (self.last.status, self.last.body)

        @precondition(lambda self: self.last is not None and self.last.status < 300)
        @rule()
        def reuse_the_key_for_another_request(self) -> None:
            assert self.last is not None
            other = ResetRequest(reason=f"not the request first sent with key {self.last.key}")
            assert self.send("reset", self.last.name, other, self.last.key)[0] == 422

        @invariant()
        def store_matches_model(self) -> None:
            for name, expected in self.model.builds.items():
                history = self.loop.run_until_complete(self.store.history(self.build_id(name)))
                build = history.build
                failure = (build.failure.error_message, build.failure.component) if build.failure else None
                actual = (build.platform, build.state_code, build.status.value, build.attempt, failure)
                wanted = (expected.platform, expected.state_code, expected.status, expected.attempt)
                assert actual == (*wanted, expected.failure), name
                assert len(history.events) == expected.events, (name, [e.type for e in history.events])
                assert build.last_event_seq == history.events[-1].seq
            for name in set(NAMES) - set(self.model.builds):
                with pytest.raises(NotFound):
                    self.loop.run_until_complete(self.store.get_build(self.build_id(name)))

    return BuildRules


def test_random_operation_sequences_agree_with_the_model(database_url: str) -> None:
    run_state_machine_as_test(
        _machine(database_url),
        settings=settings(
            max_examples=25,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
