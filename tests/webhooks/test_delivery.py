"""Webhook deliveries against a real local HTTP receiver, on both stores."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook as ReferenceVerifier
from tests.conftest import make_settings
from tests.specs import cdevents_validator
from tests.store.test_rules import CTX, create
from tests.webhooks.conftest import SECRET, Receiver

from buildstate.config import Settings
from buildstate.errors import Unprocessable
from buildstate.models import (
    ArtifactsRecord,
    ChannelAssign,
    EventType,
    FailureReport,
    ResetRequest,
    RestoreRequest,
    RevokeRequest,
    StateChange,
)
from buildstate.store import Store, create_store
from buildstate.store.types import WriteContext
from buildstate.webhooks import cdevents, payloads
from buildstate.webhooks.dispatcher import Dispatcher, next_attempt, retry_after_seconds
from buildstate.webhooks.models import WebhookKind
from buildstate.webhooks.secrets import SecretBox, new_signing_secret
from buildstate.webhooks.store import StoredWebhook, WebhookStore
from buildstate.webhooks.targets import TargetPolicy

# A constant of the wire format: receivers de-duplicate on the ids made with it.
CONTEXT_IDS = uuid.UUID("9d3f5b2e-6c1a-4f4e-9b7d-2a8c1e0f4b61")


@pytest.fixture
def fast_settings(database_url: str, tmp_path: Path) -> Settings:
    # The receivers listen on 127.0.0.1, which the target policy refuses unless private targets are allowed.
    return make_settings(
        database_url, tmp_path, webhook_retry_base_seconds=0.01, webhook_timeout_seconds=3,
        webhook_allow_private=True,
    )  # fmt: skip


@pytest.fixture
async def wstore(fast_settings: Settings) -> AsyncIterator[Store]:
    opened = create_store(fast_settings)
    await opened.open()
    yield opened
    await opened.close()


async def subscribe(
    store: Store, settings: Settings, url: str, *, kind: WebhookKind = WebhookKind.JSON,
    secret: str = SECRET, **filters: Any,
) -> StoredWebhook:  # fmt: skip
    box = SecretBox.from_settings(settings)
    return await WebhookStore(store).create(
        name="test", url=url, url_sealed=box.seal(url), kind=kind, filters=filters,
        secret_encrypted=box.seal(secret),
        ctx=WriteContext(actor="admin"), now=datetime.now(UTC),
    )  # fmt: skip


async def drain(dispatcher: Dispatcher, until: Callable[[], bool], rounds: int = 200) -> None:
    async with dispatcher.session() as session:
        for _ in range(rounds):
            await dispatcher.run_once(session)
            if until():
                return
            await asyncio.sleep(0.02)
    raise AssertionError("deliveries did not settle")


async def test_delivery_is_signed_and_verifies_with_the_reference_library(
    wstore: Store, fast_settings: Settings, receiver: Receiver
) -> None:
    await subscribe(wstore, fast_settings, receiver.url)
    build = await create(wstore, "signed")
    await wstore.record_state("signed", StateChange(state_code=10, message="packer"), CTX)
    await drain(Dispatcher(wstore, fast_settings), lambda: len(receiver.received) == 2)
    # Deliveries run concurrently: no order is promised (receivers sort by data.seq if they care).
    [(headers, body, _)] = [r for r in receiver.received if b'"buildstate.state"' in r[1]]
    payload = ReferenceVerifier(SECRET).verify(body, headers)  # raises unless the signature is valid
    assert payload["type"] == "buildstate.state"
    assert payload["data"]["build"]["id"] == build["id"]
    assert payload["data"]["state_code"] == 10
    assert headers["webhook-id"] == f"msg_{payload['data']['seq']}_1"
    with pytest.raises(Exception, match=r"[Ss]ignature"):
        ReferenceVerifier(new_signing_secret()).verify(body, headers)


async def test_failed_deliveries_are_retried_with_the_same_id_until_they_succeed(
    wstore: Store, fast_settings: Settings, receiver: Receiver
) -> None:
    hook = await subscribe(wstore, fast_settings, receiver.url)
    receiver.answers = [(500, {}), (503, {}), (200, {})]
    await create(wstore, "retry")
    hooks = WebhookStore(wstore)

    def delivered() -> bool:
        return len(receiver.received) == 3

    await drain(Dispatcher(wstore, fast_settings), delivered)
    assert len({h["webhook-id"] for h, _, _ in receiver.received}) == 1
    page = await hooks.deliveries(hook.public.id, status=None, before=None, limit=10)
    [delivery] = page.deliveries
    detail = await hooks.delivery(hook.public.id, delivery.id)
    assert detail.status == "delivered"
    assert [(a.attempt, a.status_code) for a in detail.attempt_log or []] == [(1, 500), (2, 503), (3, 200)]
    assert (await hooks.get(hook.public.id)).public.consecutive_failures == 0


async def test_410_disables_the_subscription(
    wstore: Store, fast_settings: Settings, receiver: Receiver
) -> None:
    hook = await subscribe(wstore, fast_settings, receiver.url)
    receiver.answers = [(410, {})]
    await create(wstore, "gone")
    await drain(Dispatcher(wstore, fast_settings), lambda: len(receiver.received) == 1)
    stored = await WebhookStore(wstore).get(hook.public.id)
    assert not stored.public.enabled
    assert "410" in (stored.public.disabled_reason or "")
    await create(wstore, "after-gone")  # nothing is queued for a disabled subscription
    page = await WebhookStore(wstore).deliveries(hook.public.id, status=None, before=None, limit=10)
    assert [d.status for d in page.deliveries] == ["dead"]


async def test_a_run_of_failures_disables_the_subscription(
    database_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    settings = make_settings(
        database_url, tmp_path, webhook_retry_base_seconds=0.001, webhook_disable_after_failures=3,
        webhook_allow_private=True,
    )  # fmt: skip
    store = create_store(settings)
    await store.open()
    try:
        hook = await subscribe(store, settings, receiver.url)
        receiver.answers = [(500, {})] * 10
        await create(store, "flaky")
        hooks = WebhookStore(store)

        async def disabled() -> bool:
            return not (await hooks.get(hook.public.id)).public.enabled

        dispatcher = Dispatcher(store, settings)
        async with dispatcher.session() as session:
            for _ in range(100):
                await dispatcher.run_once(session)
                if await disabled():
                    break
                await asyncio.sleep(0.01)
        assert await disabled()
        assert len(receiver.received) == 3
    finally:
        await store.close()


async def test_two_dispatchers_never_deliver_the_same_attempt(
    fast_settings: Settings, receiver: Receiver
) -> None:
    stores = [create_store(fast_settings), create_store(fast_settings)]
    for store in stores:
        await store.open()
    try:
        await subscribe(stores[0], fast_settings, receiver.url)
        for i in range(30):
            await create(stores[0], f"b{i}")
        receiver.delay = 0.005
        dispatchers = [Dispatcher(store, fast_settings) for store in stores]
        await asyncio.gather(*(drain(d, lambda: len(receiver.received) >= 30) for d in dispatchers))
        ids = [h["webhook-id"] for h, _, _ in receiver.received]
        assert len(ids) == 30
        assert len(set(ids)) == 30
    finally:
        for store in stores:
            await store.close()


async def test_a_delivery_whose_dispatcher_died_is_taken_over_after_its_lease(
    wstore: Store, fast_settings: Settings, receiver: Receiver
) -> None:
    hook = await subscribe(wstore, fast_settings, receiver.url)
    await create(wstore, "orphan")
    hooks = WebhookStore(wstore)
    now = datetime.now(UTC)
    [claimed] = await hooks.claim(now=now, lease=timedelta(seconds=1), limit=10)  # ...and then "dies"
    assert await hooks.claim(now=now, lease=timedelta(seconds=1), limit=10) == []
    [again] = await hooks.claim(now=now + timedelta(seconds=2), lease=timedelta(seconds=30), limit=10)
    assert (again.id, again.attempt) == (claimed.id, 2)
    # The dead holder's late report of attempt 1 cannot overwrite the new holder's attempt.
    await hooks.finish(
        claimed, now=now, delivered=True, next_attempt_at=None, status_code=200, error=None,
        duration_ms=1, disable_reason=None, disable_after_failures=50,
    )  # fmt: skip
    detail = await hooks.delivery(hook.public.id, claimed.id)
    assert detail.status == "delivering"


async def test_any_due_says_exactly_when_a_claim_would_take_something(
    wstore: Store, fast_settings: Settings, receiver: Receiver
) -> None:
    """The dispatcher reads ``any_due`` before it claims (woken by every move of the feed, it would
    otherwise write each time): it must never say no while a claim would take a delivery."""
    hooks = WebhookStore(wstore)
    now = datetime.now(UTC)
    lease = timedelta(seconds=1)
    assert not await hooks.any_due(now=now)  # nothing queued at all
    await subscribe(wstore, fast_settings, receiver.url)
    assert not await hooks.any_due(now=now)  # a subscription, no event yet
    await create(wstore, "due")
    later = datetime.now(UTC)
    assert await hooks.any_due(now=later)
    [claimed] = await hooks.claim(now=later, lease=lease, limit=10)
    assert not await hooks.any_due(now=later)  # held, lease running
    assert await hooks.claim(now=later, lease=lease, limit=10) == []
    assert await hooks.any_due(now=later + 2 * lease)  # the holder's lease ran out
    [again] = await hooks.claim(now=later + 2 * lease, lease=lease, limit=10)
    assert again.id == claimed.id


def test_backoff_grows_honours_retry_after_and_gives_up_after_a_day() -> None:
    import random

    rng = random.Random(1)
    now = datetime.now(UTC)
    delays = [
        (next_attempt(attempt=n, now=now, created_at=now, base_seconds=5, max_age=timedelta(hours=24),
                      retry_after=None, rng=rng) - now).total_seconds()  # type: ignore[operator]
        for n in (1, 2, 3, 4, 10, 20)
    ]  # fmt: skip
    assert 2.5 <= delays[0] <= 5
    assert 20 <= delays[3] <= 40
    assert delays[-1] <= 3600
    later = next_attempt(
        attempt=1, now=now, created_at=now, base_seconds=5, max_age=timedelta(hours=24), retry_after=120,
        rng=rng,
    )  # fmt: skip
    assert later is not None
    assert later - now >= timedelta(seconds=120)
    expired = next_attempt(
        attempt=30, now=now, created_at=now - timedelta(hours=24), base_seconds=5,
        max_age=timedelta(hours=24), retry_after=None, rng=rng,
    )  # fmt: skip
    assert expired is None
    assert retry_after_seconds("7", now) == 7
    assert retry_after_seconds("garbage", now) is None


async def test_429_retry_after_is_honoured(
    wstore: Store, fast_settings: Settings, receiver: Receiver
) -> None:
    hook = await subscribe(wstore, fast_settings, receiver.url)
    receiver.answers = [(429, {"Retry-After": "600"})]
    await create(wstore, "busy")
    await drain(Dispatcher(wstore, fast_settings), lambda: len(receiver.received) == 1)
    page = await WebhookStore(wstore).deliveries(hook.public.id, status=None, before=None, limit=10)
    [delivery] = page.deliveries
    assert delivery.status == "pending"
    assert delivery.next_attempt_at - datetime.now(UTC) > timedelta(seconds=590)


async def test_filters_pick_which_events_queue_deliveries(
    wstore: Store, fast_settings: Settings, receiver: Receiver
) -> None:
    await subscribe(wstore, fast_settings, receiver.url, platform="aws", states=["100", "failed"])
    await create(wstore, "aws-a", platform="aws")
    await create(wstore, "gcp-a", platform="gcp")
    for ref in ("aws-a", "gcp-a"):
        await wstore.record_state(ref, StateChange(state_code=50), CTX)
        await wstore.record_state(ref, StateChange(state_code=100), CTX)
    await create(wstore, "aws-b", platform="aws")
    await wstore.record_failure("aws-b", FailureReport(error_message="x"), CTX)
    await drain(Dispatcher(wstore, fast_settings), lambda: len(receiver.received) == 2)
    await asyncio.sleep(0.05)
    got = sorted((json.loads(body)["data"] for _, body, _ in receiver.received), key=lambda d: d["seq"])
    assert [(d["build"]["build_id"], d["type"], d["state_code"]) for d in got] == [
        ("aws-a", "state", 100),
        ("aws-b", "failure", 0),
    ]


async def test_artifact_events_queue_for_their_type_and_never_for_a_states_filter(
    wstore: Store, fast_settings: Settings, receiver: Receiver
) -> None:
    """An artifact event changes no state, so a webhook's ``states`` filter never matches it (as the
    ``states`` filter of ``/events`` does not); ``event_types`` and the build filters do."""
    by_state = await subscribe(wstore, fast_settings, receiver.url, states=["100"])
    by_type = await subscribe(wstore, fast_settings, receiver.url, event_types=["artifact"])
    other_os = await subscribe(wstore, fast_settings, receiver.url, os_version="rhel-9")
    everything = await subscribe(wstore, fast_settings, receiver.url)
    await create(wstore, "hooked")
    await wstore.record_state("hooked", StateChange(state_code=100), CTX)
    amis = {"artifacts": [{"region": "eu-west-1", "kind": "ami", "external_id": "ami-0hook"}]}
    await wstore.artifacts.record("hooked", ArtifactsRecord.model_validate(amis), CTX)
    hooks = WebhookStore(wstore)

    async def queued(hook: StoredWebhook) -> list[int]:
        page = await hooks.deliveries(hook.public.id, status=None, before=None, limit=10)
        return sorted(d.event_seq for d in page.deliveries)

    [artifact_event] = (await wstore.history("hooked")).events[-1:]
    assert artifact_event.type == "artifact"
    assert artifact_event.seq not in await queued(by_state)
    assert await queued(by_type) == [artifact_event.seq]
    assert await queued(other_os) == []
    assert artifact_event.seq in await queued(everything)
    assert len(await queued(everything)) == 3


async def test_every_cdevent_validates_against_the_cdevents_schemas(
    wstore: Store, fast_settings: Settings, receiver: Receiver
) -> None:
    """Every kind of event the service records, delivered by a cdevents webhook, checked against the
    CDEvents 0.5.1 schema its type names (the published files, used in place)."""
    await subscribe(wstore, fast_settings, receiver.url, kind=WebhookKind.CDEVENTS)
    done = await create(wstore, "cde-done")
    for code in (5, 50, 100):
        await wstore.record_state("cde-done", StateChange(state_code=code, message=f"step {code}"), CTX)
    await create(wstore, "cde-failed")
    await wstore.record_failure("cde-failed", FailureReport(error_message="x", error_code="E1"), CTX)
    await wstore.reset_build("cde-failed", ResetRequest(reason="retry"), CTX)
    ami = ArtifactsRecord.model_validate(
        {"artifacts": [{"region": "eu-west-1", "kind": "ami", "external_id": "ami-0abc"}]}
    )
    await wstore.artifacts.record("cde-done", ami, CTX)
    bucket = {"platform": "aws", "os_version": "rhel-8.8", "image_type": "base"}
    await wstore.release.assign("production", ChannelAssign(build="cde-done", reason="go", **bucket), CTX)
    await wstore.release.revoke("cde-done", RevokeRequest(reason="CVE"), CTX)  # and the channel emptied
    await wstore.release.restore("cde-done", RestoreRequest(reason="fine"), CTX)
    await drain(Dispatcher(wstore, fast_settings), lambda: len(receiver.received) == 12)

    seen: list[tuple[str, str, str, dict[str, Any]]] = []
    for headers, body, _ in receiver.received:
        assert headers["Content-Type"] == "application/cloudevents+json"
        envelope = ReferenceVerifier(SECRET).verify(body, headers)  # signed like every delivery
        event = envelope["data"]
        kind = event["context"]["type"]
        schema_file = "".join(kind.split(".")[2:4])  # dev.cdevents.build.queued.0.3.0 -> buildqueued
        errors = [e.message for e in cdevents_validator(schema_file).iter_errors(event)]
        assert errors == [], (kind, errors)
        assert envelope["specversion"] == "1.0"
        # The CloudEvents binding of CDEvents: the envelope repeats the CDEvent's context and subject.
        custom = event["customData"]
        context_id = uuid.uuid5(CONTEXT_IDS, f"{custom['build']['id']}/{custom['seq']}")
        assert envelope["id"] == event["context"]["id"] == str(context_id)
        assert envelope["type"] == kind
        assert envelope["source"] == event["context"]["source"] == "urn:buildstate"
        assert envelope["subject"] == event["subject"]["id"]
        assert (
            envelope["dataschema"]
            == f"https://cdevents.dev/0.5.1/schema/{'-'.join(kind.split('.')[2:4])}-event"
        )
        seen.append((custom["build"]["build_id"], custom["type"], kind, event["subject"]))

    assert {s[2] for s in seen} == {t.name for t in cdevents.TYPES}
    kinds = {(build, etype, kind.split(".")[3]) for build, etype, kind, _ in seen}
    assert kinds == {
        ("cde-done", "created", "queued"), ("cde-done", "state", "started"),
        ("cde-done", "state", "finished"), ("cde-failed", "created", "queued"),
        ("cde-failed", "failure", "finished"), ("cde-failed", "reset", "queued"),
        ("cde-done", "artifact", "published"),
        ("cde-done", "channel", "modified"), ("cde-done", "revoked", "deleted"),
        ("cde-done", "restored", "published"),
    }  # fmt: skip
    subjects = {(build, subject["id"]) for build, _, _, subject in seen}
    assert ("cde-done", f"builds/{done['id']}/attempts/1") in subjects
    # An artifact is named by its purl; what was recorded rides in customData, like every event's fields.
    assert ("cde-done", "pkg:generic/aws/rhel-8.8/base@cde-done") in subjects
    published = [body for _, body, _ in receiver.received if b'"type":"artifact"' in body.replace(b" ", b"")]
    assert (
        json.loads(published[0])["data"]["customData"]["detail"]["artifacts"][0]["external_id"] == "ami-0abc"
    )
    assert len({sid for build, sid in subjects if build == "cde-failed"}) == 2  # a reset: a new run
    purl = "pkg:generic/aws/rhel-8.8/base@cde-done"
    contents = [(etype, subject["content"]) for _, etype, _, subject in seen if subject["content"]]
    assert sorted(contents, key=repr) == sorted([
        ("state", {"artifactId": purl}),
        ("artifact", {"user": "tester"}),
        ("channel", {"name": "production"}),
        ("revoked", {"user": "tester"}),
        ("channel", {"name": "production"}),
        ("restored", {"user": "tester"}),
    ], key=repr)  # fmt: skip
    assert ("cde-done", "channels/production/aws/rhel-8.8/base") in subjects
    assert ("cde-done", purl) in subjects  # a revocation's subject is the image


async def test_artifact_events_reach_both_kinds_once_per_recording_with_what_it_added(
    wstore: Store, fast_settings: Settings, receiver: Receiver
) -> None:
    """Artifacts recorded in two calls and a replay: a cdevents and a json subscription (artifact events
    only) each get one delivery per call that added some, carrying exactly what it added; the replay
    queues nothing, and a subscription filtered by states never hears of artifacts."""
    cde = await subscribe(wstore, fast_settings, receiver.url + "/cde", kind=WebhookKind.CDEVENTS)
    await subscribe(wstore, fast_settings, receiver.url + "/json", event_types=["artifact"])
    await subscribe(wstore, fast_settings, receiver.url + "/states", states=["100"])
    done = await create(wstore, "img-7")
    await wstore.record_state("img-7", StateChange(state_code=100), CTX)
    first = ArtifactsRecord.model_validate({"artifacts": [
        {"region": "eu-west-1", "kind": "ami", "external_id": "ami-0aaa", "labels": {"arch": "x86_64"}},
        {"region": "us-east-1", "kind": "ami", "external_id": "ami-0bbb"},
    ]})  # fmt: skip
    later = ArtifactsRecord.model_validate({"artifacts": [
        {"region": "us-east-1", "kind": "ami", "external_id": "ami-0bbb"},  # known: only the new one counts
        {"platform": "gcp", "kind": "gcp-image", "external_id": "rhel-8-8-base-7"},
    ]})  # fmt: skip
    await wstore.artifacts.record("img-7", first, CTX)
    await wstore.artifacts.record("img-7", later, CTX)
    replay = json.loads((await wstore.artifacts.record("img-7", first, CTX)).body)
    assert replay["replayed"] is True
    # cdevents: created, state 100, two artifact events; json: the two artifact events; states: state 100.
    await drain(Dispatcher(wstore, fast_settings), lambda: len(receiver.received) == 7)
    await asyncio.sleep(0.05)  # nothing more comes: the replay queued no delivery
    assert len(receiver.received) == 7
    by_path: dict[str, list[dict[str, Any]]] = {}
    for headers, body, path in receiver.received:
        by_path.setdefault(path, []).append(ReferenceVerifier(SECRET).verify(body, headers))

    def recorded(artifacts: list[dict[str, Any]]) -> list[tuple[str, str, str, str, dict[str, str]]]:
        return [(a["platform"], a["region"], a["kind"], a["external_id"], a["labels"]) for a in artifacts]

    added = [
        [
            ("aws", "eu-west-1", "ami", "ami-0aaa", {"arch": "x86_64"}),
            ("aws", "us-east-1", "ami", "ami-0bbb", {}),
        ],
        [("gcp", "", "gcp-image", "rhel-8-8-base-7", {})],
    ]
    as_json = sorted(by_path["/hooks/json"], key=lambda m: m["data"]["seq"])
    assert [m["type"] for m in as_json] == ["buildstate.artifact"] * 2
    assert [recorded(m["data"]["detail"]["artifacts"]) for m in as_json] == added
    assert {m["data"]["state_code"] for m in as_json} == {100}  # the build's state, copied

    finished, *published = sorted(
        (m for m in by_path["/hooks/cde"] if m["type"] != cdevents.BUILD_QUEUED.name),
        key=lambda m: m["data"]["customData"]["seq"],
    )
    purl = finished["data"]["subject"]["content"]["artifactId"]
    assert purl == "pkg:generic/aws/rhel-8.8/base@img-7"
    for envelope, artifacts in zip(published, added, strict=True):
        event = envelope["data"]
        assert [e.message for e in cdevents_validator("artifactpublished").iter_errors(event)] == []
        assert envelope["type"] == event["context"]["type"] == "dev.cdevents.artifact.published.0.3.0"
        assert envelope["subject"] == event["subject"]["id"] == purl  # joined to build.finished on its id
        assert event["subject"]["content"] == {"user": "tester"}
        assert recorded(event["customData"]["detail"]["artifacts"]) == artifacts
        assert event["customData"]["build"]["id"] == done["id"]
    assert len({m["id"] for m in published}) == 2  # each its own context id

    deliveries = await WebhookStore(wstore).deliveries(cde.public.id, status=None, before=None, limit=10)
    assert [d.status for d in deliveries.deliveries] == ["delivered"] * 4
    assert [m["data"]["type"] for m in by_path["/hooks/states"]] == ["state"]


def test_the_cdevents_mapping_covers_every_event_type_with_a_published_schema() -> None:
    assert set(cdevents.MAPPING) == set(EventType)
    for kind in cdevents.TYPES:
        validator = cdevents_validator(f"{kind.subject}{kind.predicate}")
        assert validator.schema["$id"] == kind.schema_id
        assert validator.schema["properties"]["context"]["properties"]["type"]["enum"] == [kind.name]


async def test_concourse_check_webhook_carries_the_token_only_on_the_wire(
    wstore: Store, fast_settings: Settings, receiver: Receiver
) -> None:
    target = receiver.url.replace("/hooks", "/api/v1/teams/main/pipelines/p/resources/r/check/webhook")
    url, token = payloads.split_concourse_url(target + "?webhook_token=s3cr3t-token-value", None)
    hook = await subscribe(wstore, fast_settings, url, kind=WebhookKind.CONCOURSE, secret=token)
    assert "s3cr3t" not in hook.public.model_dump_json()
    await create(wstore, "trigger")
    await drain(Dispatcher(wstore, fast_settings), lambda: len(receiver.received) == 1)
    _, body, path = receiver.received[0]
    assert path.endswith("/check/webhook?webhook_token=s3cr3t-token-value")
    assert body == b""
    with pytest.raises(Unprocessable):
        payloads.split_concourse_url(receiver.url, "t")


def test_targets_are_validated() -> None:
    TargetPolicy().check_url("https://hooks.example.com/x")
    TargetPolicy(names=("*.example.com",)).check_url("https://a.example.com/x")
    for bad in ("ftp://example.com/x", "file:///etc/passwd", "https://user:pw@example.com/", "http:///x"):
        with pytest.raises(Unprocessable):
            TargetPolicy().check_url(bad)
    with pytest.raises(Unprocessable):
        TargetPolicy(names=("*.example.com", "ci.example.com")).check_url("https://evil.test/x")


async def test_redirects_are_not_followed(wstore: Store, fast_settings: Settings, receiver: Receiver) -> None:
    hook = await subscribe(wstore, fast_settings, receiver.url)
    receiver.answers = [(307, {"Location": "http://127.0.0.1:1/elsewhere"})]
    await create(wstore, "moved")
    await drain(Dispatcher(wstore, fast_settings), lambda: len(receiver.received) == 1)
    page = await WebhookStore(wstore).deliveries(hook.public.id, status=None, before=None, limit=10)
    assert page.deliveries[0].last_error == "redirect not followed"
    assert page.deliveries[0].status == "pending"


async def test_unreachable_receiver_is_a_retry_not_a_crash(wstore: Store, fast_settings: Settings) -> None:
    hook = await subscribe(wstore, fast_settings, "http://127.0.0.1:9/nothing-listens-here")
    await create(wstore, "nowhere")
    dispatcher = Dispatcher(wstore, fast_settings)
    async with dispatcher.session() as session:
        assert await dispatcher.run_once(session) == 1
    page = await WebhookStore(wstore).deliveries(hook.public.id, status=None, before=None, limit=10)
    assert page.deliveries[0].status == "pending"
    assert page.deliveries[0].last_error
