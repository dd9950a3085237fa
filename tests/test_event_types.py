"""One source for event types: every member of ``EventType`` has its rule, its route, its payload mapping,
and passes every filter and choice that names event types, so a new member cannot be half added.

Adding a type means its member and its rule (``domain.py``) and its CDEvents mapping
(``webhooks/cdevents.py``); everything checked here reads them from there.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from uuid import uuid4

import pytest
from pydantic import TypeAdapter, ValidationError

from buildstate.domain import EVENT_RULES, STATE_WORDS, EventType
from buildstate.models import Event, EventBuild, Status
from buildstate.web.app import create_app  # noqa: F401 - importing the app registers every route
from buildstate.web.requests import EventQuery
from buildstate.web.routing import ROUTES
from buildstate.webhooks import cdevents, cli, payloads
from buildstate.webhooks.models import StateWord, WebhookKind
from buildstate_resource import config as resource_config


def _event(kind: EventType) -> Event:
    build = EventBuild(
        id=uuid4(),
        build_id="rhel-9-base-1",
        platform="aws",
        os_version="rhel-9",
        image_type="base",
        labels={},
        created_at=datetime.now(UTC),
    )
    return Event(
        seq=1, type=kind, recorded_at=datetime.now(UTC), attempt=1, state_code=0, from_state_code=None,
        status=Status.RUNNING, message=None, failure=None, reason=None, actor="tester", provenance=None,
        duration_ms=None, build=build,
    )  # fmt: skip


def test_every_event_type_has_a_rule_with_an_action_of_its_own() -> None:
    assert set(EVENT_RULES) == set(EventType)
    actions = [rule.action for rule in EVENT_RULES.values()]
    assert len(set(actions)) == len(actions)


@pytest.mark.parametrize("kind", list(EventType))
def test_every_event_type_is_recorded_by_a_route_of_its_own(kind: EventType) -> None:
    """Its own: the action is no other type's (above). Artifacts have two ways in, a list and a Packer
    manifest, both recording the same event."""
    recording = [r for r in ROUTES if r.action == EVENT_RULES[kind].action]
    assert recording, f"no route records {kind} events"
    assert {r.method for r in recording} == ({"PUT"} if kind == EventType.CHANNEL else {"POST"})
    assert len(recording) == (2 if kind == EventType.ARTIFACT else 1)


@pytest.mark.parametrize("kind", list(EventType))
def test_every_event_type_has_a_payload_for_every_webhook_kind(kind: EventType) -> None:
    assert kind in cdevents.MAPPING
    event = _event(kind)
    for webhook_kind in (WebhookKind.JSON, WebhookKind.CDEVENTS):
        request = payloads.build_request(
            webhook_kind, "https://hooks.example.com/", "whsec_" + "A" * 43, event, "msg_1", source="test"
        )
        assert request.body
    assert (
        b'"buildstate.' + kind.value.encode() + b'"'
        in payloads.build_request(
            WebhookKind.JSON, "https://hooks.example.com/", "whsec_" + "A" * 43, event, "msg_1", source="test"
        ).body
    )


@pytest.mark.parametrize("kind", list(EventType))
def test_every_event_type_passes_the_type_filter_and_the_cli_choices(kind: EventType) -> None:
    assert EventQuery.model_validate({"type": kind.value}).type == kind.value
    assert EventQuery.model_validate({"type": ",".join(EventType)}).type == ",".join(EventType)
    parser = argparse.ArgumentParser()
    cli.add_commands(parser.add_subparsers())
    args = parser.parse_args(
        ["webhooks", "create", "--name", "n", "--url", "https://x.example", "--event-type", kind]
    )
    assert args.event_types == [kind.value]


def test_the_type_filter_refuses_what_is_not_an_event_type() -> None:
    with pytest.raises(ValidationError):
        EventQuery.model_validate({"type": "deleted"})


@pytest.mark.parametrize("word", STATE_WORDS)
def test_every_state_word_passes_the_states_filters(word: str) -> None:
    assert EventQuery.model_validate({"states": word}).states == word
    assert TypeAdapter(StateWord).validate_python(word) == word


def test_the_concourse_resource_knows_every_event_type_and_state_word() -> None:
    """The resource imports nothing of the service (the layers contract), so it spells the lists itself:
    a new member would be refused by ``source.event_types`` or ``source.states`` without this test."""
    assert set(resource_config.EVENT_TYPES) == {t.value for t in EventType}
    assert set(resource_config.STATE_NAMES) == set(STATE_WORDS)
