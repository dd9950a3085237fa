"""Ancestry, channels and revocations on both stores (``store/release.py``): every rule, on its own."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from tests.store.test_rules import CTX, create, new_build, state

from buildstate.errors import Conflict, NotFound, Unprocessable
from buildstate.models import (
    ArtifactsRecord,
    ChannelAssign,
    ChannelRequirements,
    ParentLink,
    ResetRequest,
    RestoreRequest,
    RevokeRequest,
)
from buildstate.store import Store
from buildstate.store.access import AuditFilter
from buildstate.store.artifacts import ArtifactLookup
from buildstate.store.release import Released
from buildstate.store.types import EventFilter, Idempotency, WriteContext
from buildstate.store.verify import verify


def js(result: Released) -> dict[str, Any]:
    answer: dict[str, Any] = json.loads(result.body)
    return answer


async def succeeded(store: Store, build_id: str, **fields: Any) -> str:
    build = await create(store, build_id, **fields)
    await state(store, build["id"], 100)
    return str(build["id"])


def assign_request(build: str, reason: str = "promote", **fields: Any) -> ChannelAssign:
    values = {"platform": "aws", "os_version": "rhel-8.8", "image_type": "base", "build": build}
    values.update(fields)
    return ChannelAssign(reason=reason, **values)


BUCKET = {"platform": "aws", "os_version": "rhel-8.8", "image_type": "base"}


async def head_of(store: Store, name: str) -> str | None:
    detail = await store.release.channel(name, BUCKET, 100)
    return None if detail.channel.head is None else detail.channel.head.build_id


async def events_of(store: Store, kind: str) -> list[Any]:
    page = await store.list_events(
        EventFilter(types=(kind,)), after=0, before=None, limit=1000, newest_first=False
    )
    return page.events


async def no_drift(store: Store) -> None:
    report = await verify(store)
    assert report.ok, report.as_dict()


# ---------------------------------------------------------------- ancestry


async def test_parents_link_transitively_and_refuse_self_cycles_and_too_many(store: Store) -> None:
    base = await succeeded(store, "base-1")
    hardened = (await create(store, "hardened-1"))["id"]
    app = (await create(store, "app-1"))["id"]
    linked = js(await store.release.add_parents(hardened, [base], CTX))
    assert linked["edges"] == [
        {**linked["edges"][0], "child": hardened, "parent": base, "channel": None, "source": "api"}
    ]
    await store.release.add_parents(app, [ParentLink(build="hardened-1")], CTX)
    again = await store.release.add_parents(app, ["hardened-1"], CTX)
    assert again.replayed  # the edge exists: nothing new

    tree = await store.release.ancestry("hardened-1")
    relations = {(n.build.build_id, n.relation, n.depth) for n in tree.nodes}
    assert relations == {("hardened-1", "self", 0), ("base-1", "ancestor", 1), ("app-1", "descendant", 1)}
    top = await store.release.ancestry("base-1")
    assert {(n.build.build_id, n.depth) for n in top.nodes if n.relation == "descendant"} == {
        ("hardened-1", 1),
        ("app-1", 2),
    }
    assert len(top.edges) == 2

    with pytest.raises(Conflict, match="itself as a parent"):
        await store.release.add_parents(app, [app], CTX)
    with pytest.raises(Conflict, match="ancestry has no cycles"):
        await store.release.add_parents(base, ["app-1"], CTX)
    with pytest.raises(Unprocessable, match="no build 'missing'"):
        await store.release.add_parents(app, ["missing"], CTX)
    many = [(await create(store, f"many-{n}"))["id"] for n in range(17)]
    with pytest.raises(Unprocessable, match="more than 16 parents"):
        await store.release.add_parents(app, many[:16], CTX)  # app has one parent already
    assert len((await store.release.ancestry(app)).edges) == 2  # the refused request added nothing
    refused = await store.access.list_audit(AuditFilter(action="build.parents", outcome="refused"))
    assert len(refused) == 4
    await no_drift(store)


async def test_a_child_is_out_of_date_once_its_parent_leaves_the_channel_it_was_taken_from(
    store: Store,
) -> None:
    base1 = await succeeded(store, "base-1")
    base2 = await succeeded(store, "base-2")
    await store.release.assign("production", assign_request(base1), CTX)
    child = (await create(store, "app-1", image_type="app"))["id"]
    await store.release.add_parents(child, [ParentLink(build=base1, channel="production")], CTX)
    tree = await store.release.ancestry(child)
    assert [e.out_of_date for e in tree.edges] == [False]
    await store.release.assign("production", assign_request(base2), CTX)
    tree = await store.release.ancestry(child)
    assert [e.out_of_date for e in tree.edges] == [True]
    assert [n.out_of_date for n in tree.nodes if n.relation == "self"] == [True]


# ---------------------------------------------------------------- channels


async def test_assignment_is_gated_recorded_in_order_and_replays(store: Store) -> None:
    first = await succeeded(store, "base-1")
    second = await succeeded(store, "base-2")
    running = (await create(store, "base-3"))["id"]
    other = await succeeded(store, "azure-1", platform="azure")

    with pytest.raises(Conflict, match="only a succeeded build"):
        await store.release.assign("staging", assign_request(running), CTX)
    with pytest.raises(Conflict, match=r"not aws/rhel-8\.8/base"):
        await store.release.assign("staging", assign_request(other), CTX)
    with pytest.raises(Unprocessable, match="no build 'nope'"):
        await store.release.assign("staging", assign_request("nope"), CTX)

    one = js(await store.release.assign("staging", assign_request(first, "tested"), CTX))
    assert one["channel"]["head"]["id"] == first and one["move"]["from_build"] is None
    replay = await store.release.assign("staging", assign_request(first, "again"), CTX)
    assert replay.replayed and js(replay)["move"] is None
    two = js(await store.release.assign("staging", assign_request("base-2", "newer"), CTX))
    assert (two["move"]["from_build"]["id"], two["move"]["to_build"]["id"]) == (first, second)

    detail = await store.release.channel("staging", BUCKET, 100)
    assert [
        (m.from_build and m.from_build.build_id, m.to_build and m.to_build.build_id) for m in detail.history
    ] == [
        ("base-1", "base-2"),
        (None, "base-1"),
    ]
    assert detail.channel.moves == 2
    events = await events_of(store, "channel")
    assert [(e.build.build_id, e.detail["from_build_id"], e.detail["to_build_id"]) for e in events] == [
        ("base-1", None, "base-1"),
        ("base-2", "base-1", "base-2"),
    ]
    assert [e.seq for e in events] == sorted(m.event_seq for m in detail.history)  # type: ignore[type-var]
    assert events[0].status == "succeeded" and events[0].state_code == 100  # the build's state, copied
    assert (await store.get_build(first)).last_event_seq < events[0].seq  # the build row is untouched
    listed = await store.release.list_channels(None, {}, 100)
    assert [(c.name, c.head and c.head.build_id) for c in listed.channels] == [("staging", "base-2")]
    with pytest.raises(NotFound, match="no channel 'prod'"):
        await store.release.channel("prod", BUCKET, 10)
    audit = await store.access.list_audit(AuditFilter(action="channel.assign"))
    assert sorted(a.outcome for a in audit) == [
        "allowed",
        "allowed",
        "refused",
        "refused",
        "refused",
        "replayed",
    ]
    await no_drift(store)


async def test_a_channel_can_require_labels(store: Store) -> None:
    untested = await succeeded(store, "base-1")
    tested = await succeeded(store, "base-2", labels={"tested": "true"})
    requires = ChannelRequirements(labels={"tested": "true"})
    with pytest.raises(Conflict, match=r"lacks the label.s. tested=true"):
        await store.release.assign("production", assign_request(untested, requires=requires), CTX)
    await store.release.assign("production", assign_request(tested, requires=requires), CTX)
    with pytest.raises(Conflict, match="requirements"):  # kept for later assignments
        await store.release.assign("production", assign_request(untested), CTX)
    assert (await store.release.channel("production", BUCKET, 10)).channel.requires == {
        "labels": {"tested": "true"}
    }


async def test_an_idempotency_key_replays_the_first_answer(store: Store) -> None:
    build = await succeeded(store, "base-1")
    request = assign_request(build)
    idem = Idempotency.for_request(
        "tester", "k1", "PUT", "/channels/staging", request.model_dump_json().encode()
    )
    ctx = WriteContext(actor="tester", idem=idem)
    first = await store.release.assign("staging", request, ctx)
    second = await store.release.assign("staging", request, ctx)
    assert not first.replayed and second.replayed and first.body == second.body
    other = WriteContext(actor="tester", idem=Idempotency("tester", "k1", "different"))
    with pytest.raises(Unprocessable, match="different request"):
        await store.release.assign("staging", request, other)


# ---------------------------------------------------------------- revocation


async def test_revocation_empties_channels_is_inherited_by_three_generations_and_restore_undoes_exactly_it(
    store: Store,
) -> None:
    base = await succeeded(store, "base-1")
    other_base = await succeeded(store, "base-2")
    hardened = await succeeded(store, "hardened-1", image_type="hardened")
    app = await succeeded(store, "app-1", image_type="app")
    await store.release.add_parents(hardened, [base], CTX)
    await store.release.add_parents(app, [hardened, other_base], CTX)
    await store.release.assign("production", assign_request(base), CTX)
    await store.release.assign("production", assign_request(app, image_type="app"), CTX)

    # base-2 is revoked on its own first: app-1 inherits it, and must keep it after base-1's restore.
    await store.release.revoke(other_base, RevokeRequest(reason="CVE-2"), CTX)
    revoked = js(await store.release.revoke(base, RevokeRequest(reason="CVE-1"), CTX))
    assert revoked["state"] == "revoked"
    assert {b["build_id"] for b in revoked["inherited"]} == {"hardened-1", "app-1"}
    assert await head_of(store, "production") is None  # no fall back: the channel is empty
    app_bucket = {**BUCKET, "image_type": "app"}
    assert (
        await store.release.channel("production", app_bucket, 10)
    ).channel.head is None  # emptied by CVE-2

    tree = await store.release.ancestry(base)
    by_name = {n.build.build_id: n for n in tree.nodes}
    assert by_name["base-1"].revocation is not None and not by_name["base-1"].revocation.inherited
    hardened_revocation = by_name["hardened-1"].revocation
    assert hardened_revocation is not None and hardened_revocation.inherited
    assert hardened_revocation.revoked_by.build_id == "base-1" and hardened_revocation.reason == "CVE-1"

    with pytest.raises(Conflict, match="is revoked"):
        await store.release.assign("production", assign_request(base), CTX)
    with pytest.raises(Conflict, match="inherited from 'base-1'"):
        await store.release.assign("production", assign_request(hardened, image_type="hardened"), CTX)
    with pytest.raises(Conflict, match="restore that build instead"):
        await store.release.restore(hardened, RestoreRequest(reason="no"), CTX)
    with pytest.raises(Conflict, match="already revoked"):
        await store.release.revoke(base, RevokeRequest(reason="another reason"), CTX)
    assert (await store.release.revoke(base, RevokeRequest(reason="CVE-1"), CTX)).replayed

    revoked_events = await events_of(store, "revoked")
    assert [
        (e.build.build_id, e.detail["revoked_by_build_id"], e.detail["inherited"]) for e in revoked_events
    ] == [
        ("base-2", "base-2", False),
        ("app-1", "base-2", True),
        ("base-1", "base-1", False),
        ("hardened-1", "base-1", True),
        ("app-1", "base-1", True),
    ]

    restored = js(await store.release.restore(base, RestoreRequest(reason="false alarm"), CTX))
    assert {b["build_id"] for b in restored["inherited"]} == {"hardened-1", "app-1"}
    assert (await store.release.restore(base, RestoreRequest(reason="false alarm"), CTX)).replayed
    live = {n.build.build_id: n.revocation for n in (await store.release.ancestry(base)).nodes}
    assert live["base-1"] is None and live["hardened-1"] is None
    app_revocation = live["app-1"]
    assert app_revocation is not None and app_revocation.revoked_by.build_id == "base-2"  # still CVE-2
    restored_events = await events_of(store, "restored")
    assert {(e.build.build_id, e.detail["still_revoked"]) for e in restored_events} == {
        ("base-1", False),
        ("hardened-1", False),
        ("app-1", True),
    }
    assert await head_of(store, "production") is None  # a restore does not reassign
    await store.release.assign("production", assign_request(base, "fixed"), CTX)
    assert await head_of(store, "production") == "base-1"
    for action in ("build.revoke", "build.restore"):
        assert await store.access.list_audit(AuditFilter(action=action, outcome="allowed"))
    await no_drift(store)


async def test_a_new_child_of_a_revoked_build_inherits_its_revocations(store: Store) -> None:
    base = await succeeded(store, "base-1")
    hardened = await succeeded(store, "hardened-1", image_type="hardened")
    await store.release.add_parents(hardened, [base], CTX)
    await store.release.revoke(base, RevokeRequest(reason="bad"), CTX)
    created = await store.create_build(new_build("app-1", image_type="app"), CTX)
    await store.release.add_parents(str(created.build.id), [hardened], CTX)
    live = await store.release.live_revocation(created.build.id)
    assert live is not None and live.revoked_by.build_id == "base-1"
    await store.release.restore(base, RestoreRequest(reason="ok"), CTX)
    assert await store.release.live_revocation(created.build.id) is None


async def test_a_scheduled_revocation_waits_for_its_time_and_a_restore_cancels_it(store: Store) -> None:
    base = await succeeded(store, "base-1")
    soon = datetime.now(UTC) + timedelta(hours=1)
    scheduled = js(await store.release.revoke(base, RevokeRequest(reason="EOL", at=soon), CTX))
    assert scheduled["state"] == "scheduled" and scheduled["revocation"]["fired_at"] is None
    await store.release.assign("production", assign_request(base), CTX)  # usable until then
    assert await store.release.fire_due(CTX) == 0
    assert await events_of(store, "revoked") == []
    await store.release.restore(base, RestoreRequest(reason="extended"), CTX)
    past = datetime.now(UTC) - timedelta(seconds=1)
    now = js(await store.release.revoke(base, RevokeRequest(reason="EOL", at=past), CTX))
    assert now["state"] == "revoked"  # a time not in the future is now
    assert await head_of(store, "production") is None


def amis(*items: tuple[str, dict[str, str]]) -> ArtifactsRecord:
    return ArtifactsRecord.model_validate(
        {
            "artifacts": [
                {"region": "eu-west-1", "kind": "ami", "external_id": i, "labels": labels}
                for i, labels in items
            ]
        }
    )


async def test_an_artifact_naming_its_source_image_links_the_build_that_made_it(store: Store) -> None:
    base = await succeeded(store, "base-1")
    await store.artifacts.record(base, amis(("ami-base", {})), CTX)
    await store.release.revoke(base, RevokeRequest(reason="bad base"), CTX)
    child = (await create(store, "hardened-1", image_type="hardened"))["id"]
    # Its own id as a source, and an id nobody recorded, are left out; the artifacts are recorded anyway.
    sources = amis(
        ("ami-child", {"source_image_id": "ami-base"}), ("ami-2", {"source_image_id": "ami-child"})
    )
    await store.artifacts.record(child, sources, CTX)
    await store.artifacts.record(child, amis(("ami-3", {"source_image_id": "ami-unknown"})), CTX)
    tree = await store.release.ancestry(child)
    assert [(e.parent, e.source) for e in tree.edges] == [(UUID(base), "artifact")]
    live = await store.release.live_revocation(UUID(child))
    assert live is not None and live.revoked_by.build_id == "base-1"  # built on a revoked image
    # A parent that would close a cycle is left out too.
    await store.artifacts.record(base, amis(("ami-base-2", {"source_image_id": "ami-child"})), CTX)
    assert [
        n.build.build_id for n in (await store.release.ancestry(base)).nodes if n.relation == "ancestor"
    ] == []
    assert len((await store.artifacts.of_build(child)).artifacts) == 3
    await no_drift(store)


async def test_a_source_image_id_links_the_build_that_first_recorded_it_not_a_later_copy(
    store: Store,
) -> None:
    # Another platform's key records an artifact with the same external id after the real base did: the
    # child built from the base must not become its child (a revocation of the copy would reach it).
    base = await succeeded(store, "src-base")
    await store.artifacts.record(base, amis(("ami-shared", {})), CTX)
    copy = await succeeded(store, "src-copy", platform="evil")
    await store.artifacts.record(copy, amis(("ami-shared", {})), CTX)
    child = (await create(store, "src-child", image_type="hardened"))["id"]
    await store.artifacts.record(child, amis(("ami-child-1", {"source_image_id": "ami-shared"})), CTX)
    tree = await store.release.ancestry(child)
    assert [e.parent for e in tree.edges] == [UUID(base)]
    await store.release.revoke(copy, RevokeRequest(reason="planted"), CTX)
    assert await store.release.live_revocation(UUID(child)) is None
    await no_drift(store)


async def test_latest_on_a_channel_never_answers_a_head_reset_since_its_assignment(store: Store) -> None:
    # A channel holds a succeeded build only: a reset (a new attempt, running again) must not leave it the
    # head that GET /artifacts/latest?channel= deploys.
    head = await succeeded(store, "reset-head")
    await store.artifacts.record(head, amis(("ami-reset", {})), CTX)
    await store.release.assign("production", assign_request(head), CTX)
    lookup = ArtifactLookup(**BUCKET, channel="production")
    assert (await store.artifacts.latest(lookup)).external_id == "ami-reset"
    await store.reset_build(head, ResetRequest(reason="rebuild"), CTX)
    with pytest.raises(NotFound) as refused:
        await store.artifacts.latest(lookup)
    assert refused.value.type_slug == "channel-head-not-succeeded"
    assert "'reset-head', is running" in refused.value.detail
    await no_drift(store)


async def test_the_summary_shows_each_cells_revocation_own_before_inherited(store: Store) -> None:
    base = await succeeded(store, "sum-base")
    app = await succeeded(store, "sum-app", image_type="app")
    await succeeded(store, "sum-other", image_type="other")
    await store.release.add_parents(app, [base], CTX)
    await store.release.revoke(base, RevokeRequest(reason="CVE-9"), CTX)

    async def cells() -> dict[str, Any]:
        summary = await store.summary(window_hours=24)
        return {
            c.build.build_id: c.revocation
            and (c.revocation.reason, c.revocation.inherited, c.revocation.revoked_by.build_id)
            for c in summary.matrix
        }

    assert await cells() == {
        "sum-base": ("CVE-9", False, "sum-base"),
        "sum-app": ("CVE-9", True, "sum-base"),
        "sum-other": None,
    }
    await store.release.revoke(app, RevokeRequest(reason="own"), CTX)
    assert (await cells())["sum-app"] == ("own", False, "sum-app")
    await store.release.restore(base, RestoreRequest(reason="fine"), CTX)
    assert (await cells())["sum-app"] == ("own", False, "sum-app")
    await store.release.restore(app, RestoreRequest(reason="fine"), CTX)
    assert await cells() == {"sum-base": None, "sum-app": None, "sum-other": None}
    # A scheduled revocation shows once it takes effect, not before.
    await store.release.revoke(
        base, RevokeRequest(reason="later", at=datetime.now(UTC) + timedelta(hours=1)), CTX
    )
    assert (await cells())["sum-base"] is None


async def family(store: Store, root: str, children: int, prefix: str) -> list[str]:
    made = [await succeeded(store, f"{prefix}-{n}", image_type="app") for n in range(children)]
    for child in made:
        await store.release.add_parents(child, [root], CTX)
    return made


async def test_a_revocation_too_wide_is_refused_now_and_when_scheduled(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("buildstate.store.release.MAX_REACH", 2)
    root = await succeeded(store, "wide-root")
    await family(store, root, 3, "wide-child")
    for at in (None, datetime.now(UTC) + timedelta(days=1)):
        with pytest.raises(Unprocessable) as refused:
            await store.release.revoke(root, RevokeRequest(reason="too many", at=at), CTX)
        assert refused.value.type_slug == "revocation-too-wide"
    assert await store.release.fire_due(CTX) == 0
    assert await events_of(store, "revoked") == []
    await no_drift(store)


async def test_a_scheduled_revocation_whose_family_grew_still_fires_and_blocks_no_other(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Scheduled while it fit; children were added before it came due. It was decided already: firing it
    # must not fail (every pass of every worker, for ever, with the other due revocations of its batch).
    monkeypatch.setattr("buildstate.store.release.MAX_REACH", 2)
    root = await succeeded(store, "grown-root")
    other = await succeeded(store, "grown-other")
    at = datetime.now(UTC) + timedelta(seconds=0.5)
    for build in (root, other):
        await store.release.revoke(build, RevokeRequest(reason="end of life", at=at), CTX)
    children = await family(store, root, 3, "grown-child")
    while datetime.now(UTC) <= at:
        await asyncio.sleep(0.1)
    assert await store.release.fire_due(CTX) == 2
    for build in (root, other, *children):
        assert await store.release.live_revocation(UUID(build)) is not None
    revoked = await events_of(store, "revoked")
    assert len(revoked) == 5
    await no_drift(store)


async def test_an_artifact_recorded_on_a_head_after_its_assignment_is_not_what_the_channel_answers(
    store: Store,
) -> None:
    # What a channel deploys is what was assigned: an artifact recorded on the head later (a write key,
    # no release scope) must not change GET /artifacts/latest?channel= without a move.
    head = await succeeded(store, "late-head")
    await store.artifacts.record(head, amis(("ami-assigned", {})), CTX)
    await store.release.assign("production", assign_request(head), CTX)
    await store.artifacts.record(head, amis(("ami-later", {})), CTX)
    lookup = ArtifactLookup(**BUCKET, channel="production", region="eu-west-1", kind="ami")
    assert (await store.artifacts.latest(lookup)).external_id == "ami-assigned"


async def test_revoking_now_a_build_scheduled_for_later_revokes_it_now(store: Store) -> None:
    # The same reason without `at` is not a replay of tomorrow's revocation: it is asked for now.
    build = await succeeded(store, "urgent-1")
    await store.release.assign("production", assign_request(build), CTX)
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    scheduled = js(await store.release.revoke(build, RevokeRequest(reason="CVE-7", at=tomorrow), CTX))
    assert scheduled["state"] == "scheduled"
    now = await store.release.revoke(build, RevokeRequest(reason="CVE-7"), CTX)
    assert not now.replayed and js(now)["state"] == "revoked"
    assert js(now)["revocation"]["id"] == scheduled["revocation"]["id"]  # the same one, brought forward
    assert await store.release.live_revocation(UUID(build)) is not None
    assert await head_of(store, "production") is None
    assert (await store.release.revoke(build, RevokeRequest(reason="CVE-7"), CTX)).replayed
    assert [e.build.build_id for e in await events_of(store, "revoked")] == ["urgent-1"]
    assert await store.release.fire_due(CTX) == 0
    await no_drift(store)
