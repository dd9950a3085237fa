"""Artifacts on both stores: recording with one event, replays, refusals, the feed, verify, two processes
recording the same artifact at once, and the deployers' lookup."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
from multiprocessing.synchronize import Barrier
from typing import Any

import pytest
from tests.store.raw import fetch, run_sql
from tests.store.test_feed import feed
from tests.store.test_rules import CTX, body, create, state

from buildstate.config import Settings
from buildstate.errors import Conflict, NotFound, Unprocessable
from buildstate.models import (
    MAX_ARTIFACTS_PER_BUILD,
    ArtifactsRecord,
    FailureReport,
    Provenance,
    ResetRequest,
    StateChange,
)
from buildstate.store import Store, create_store, plan, sql
from buildstate.store.access import AuditFilter
from buildstate.store.artifacts import ArtifactLookup, latest_statement
from buildstate.store.executor import Json, Statement, one
from buildstate.store.postgres import PostgresStore
from buildstate.store.postgres_executor import _arguments
from buildstate.store.types import EventFilter, Idempotency, WriteContext
from buildstate.store.verify import verify

EU = {"region": "eu-west-1", "kind": "ami", "external_id": "ami-0eu"}
US = {"region": "us-east-1", "kind": "ami", "external_id": "ami-0us"}


def record_of(*artifacts: dict[str, Any], provenance: Provenance | None = None) -> ArtifactsRecord:
    return ArtifactsRecord.model_validate({"artifacts": list(artifacts), "provenance": provenance})


async def record(store: Store, ref: str, *artifacts: dict[str, Any], ctx: WriteContext = CTX) -> Any:
    return await store.artifacts.record(ref, record_of(*artifacts), ctx)


async def no_drift(store: Store) -> None:
    report = await verify(store)
    assert report.ok, report.as_dict()


async def test_recording_appends_one_event_with_the_artifacts_and_leaves_the_build_as_it_is(
    store: Store,
) -> None:
    build = await create(store, "rec-1", labels={"arch": "x86_64"})
    moved = await state(store, "rec-1", 50)
    result = await store.artifacts.record(
        "rec-1", record_of(EU, {**US, "labels": {"arch": "arm64"}}, provenance=Provenance(job="packer")), CTX
    )
    answer = body(result)
    assert (result.status_code, result.appended, answer["replayed"]) == (200, True, False)
    event = answer["event"]
    assert (event["type"], event["state_code"], event["status"], event["attempt"]) == (
        "artifact",
        50,
        "running",
        1,
    )
    assert event["provenance"] == {"job": "packer"}
    assert event["detail"] == {
        "artifacts": [
            {"platform": "aws", "labels": {}, **EU},
            {"platform": "aws", "labels": {"arch": "arm64"}, **US},
        ]
    }
    assert [(a["external_id"], a["event_seq"], a["attempt"]) for a in answer["artifacts"]] == [
        ("ami-0eu", event["seq"], 1),
        ("ami-0us", event["seq"], 1),
    ]
    # The build row is not moved: its state, its updated_at and its last event are those of its states.
    after = (await store.get_build("rec-1")).model_dump(mode="json")
    assert {k: after[k] for k in moved if k in after} == {k: moved[k] for k in after if k in moved}
    assert after["last_event_seq"] == moved["event"]["seq"] < event["seq"]
    history = await store.history(build["id"])
    assert [e.type for e in history.events] == ["created", "state", "artifact"]
    assert history.events[-1].detail == event["detail"]
    assert [a.external_id for a in history.artifacts] == ["ami-0eu", "ami-0us"]
    detail = await store.build_detail("rec-1")
    assert [a.region for a in detail.artifacts] == ["eu-west-1", "us-east-1"]
    listed = await store.artifacts.of_build(build["id"])
    assert listed.build_id == "rec-1" and len(listed.artifacts) == 2
    audit = await store.access.list_audit(AuditFilter(action="build.artifacts", limit=10))
    assert [(a.outcome, a.target) for a in audit] == [("allowed", "rec-1")]
    await no_drift(store)


async def test_recording_known_artifacts_again_is_a_replay_and_only_new_ones_make_an_event(
    store: Store,
) -> None:
    await create(store, "rep-1")
    first = body(await record(store, "rep-1", EU))
    again = await record(store, "rep-1", EU)
    assert (again.appended, body(again)["replayed"]) == (False, True)
    assert body(again)["event"]["seq"] == first["event"]["seq"]  # the event that recorded it
    assert body(again)["artifacts"] == first["artifacts"]
    both = body(await record(store, "rep-1", US, EU))
    assert both["replayed"] is False
    assert [a["external_id"] for a in both["event"]["detail"]["artifacts"]] == ["ami-0us"]  # only the new one
    assert [a["external_id"] for a in both["artifacts"]] == [
        "ami-0us",
        "ami-0eu",
    ]  # as the request named them
    assert both["artifacts"][1]["event_seq"] == first["event"]["seq"]
    # The same artifact twice in one request is one artifact.
    twice = await record(store, "rep-1", EU, EU, US)
    assert twice.replayed and len(body(twice)["artifacts"]) == 2
    events = await feed(store, EventFilter(types=("artifact",)))
    assert len(events) == 2
    audit = await store.access.list_audit(AuditFilter(action="build.artifacts", limit=10))
    assert sorted(a.outcome for a in audit) == ["allowed", "allowed", "replayed", "replayed"]
    await no_drift(store)


async def test_an_artifact_names_its_platform_or_takes_the_builds(store: Store) -> None:
    await create(store, "multi-1")
    answer = body(await record(store, "multi-1", EU, {**EU, "platform": "azure"}, {**EU, "platform": "aws"}))
    assert [a["platform"] for a in answer["artifacts"]] == ["aws", "azure"]  # aws named twice is one


async def test_other_labels_for_a_known_artifact_are_refused_and_nothing_is_recorded(store: Store) -> None:
    await create(store, "lab-1")
    await record(store, "lab-1", {**EU, "labels": {"arch": "x86_64"}})
    with pytest.raises(Conflict) as refused:
        await record(store, "lab-1", US, {**EU, "labels": {"arch": "arm64"}})
    assert refused.value.type_slug == "artifact-exists"
    with pytest.raises(Unprocessable) as repeated:
        await record(store, "lab-1", US, {**US, "labels": {"x": "1"}})
    assert "artifacts[1] repeats artifacts[0]" in repeated.value.detail
    assert [a.external_id for a in (await store.artifacts.of_build("lab-1")).artifacts] == ["ami-0eu"]
    audit = await store.access.list_audit(AuditFilter(action="build.artifacts", limit=10))
    assert sorted(a.outcome for a in audit) == ["allowed", "refused", "refused"]
    await no_drift(store)


async def test_a_failed_build_keeps_its_artifacts_replays_them_and_takes_no_new_ones(store: Store) -> None:
    await create(store, "fail-1")
    await record(store, "fail-1", EU)
    await store.record_failure("fail-1", FailureReport(error_message="ansible"), CTX)
    assert (await record(store, "fail-1", EU)).replayed  # a retry of what was accepted
    with pytest.raises(Conflict) as refused:
        await record(store, "fail-1", US)
    assert refused.value.type_slug == "build-failed"
    assert [a.external_id for a in (await store.artifacts.of_build("fail-1")).artifacts] == ["ami-0eu"]
    # After a reset, the next attempt records its own, and the earlier attempt's stay.
    await store.reset_build("fail-1", ResetRequest(reason="retry"), CTX)
    answer = body(await record(store, "fail-1", US))
    assert [(a["external_id"], a["attempt"]) for a in answer["artifacts"]] == [("ami-0us", 2)]
    assert [a.attempt for a in (await store.artifacts.of_build("fail-1")).artifacts] == [1, 2]
    await no_drift(store)


async def test_a_succeeded_build_takes_artifacts(store: Store) -> None:
    await create(store, "ok-1")
    await state(store, "ok-1", 100)
    answer = body(await record(store, "ok-1", EU))
    assert (answer["event"]["state_code"], answer["event"]["status"]) == (100, "succeeded")
    assert answer["status"] == "succeeded"
    await no_drift(store)


async def test_the_summary_counts_the_artifacts_of_each_cells_newest_build_per_region(store: Store) -> None:
    await create(store, "cell-old", platform="aws")
    await record(store, "cell-old", EU, {**US, "external_id": "ami-old"}, {**US, "region": "ap-south-1"})
    await create(store, "cell-new", platform="aws")  # the newest build of the cell: only its artifacts count
    await record(store, "cell-new", EU, {**EU, "kind": "snapshot", "external_id": "snap-1"})
    await record(store, "cell-new", {"kind": "file", "external_id": "disk.qcow2"})
    await create(store, "bare", platform="gcp")
    cells = {c.build.build_id: c.artifacts_by_region for c in (await store.summary(window_hours=24)).matrix}
    assert cells == {"cell-new": {"eu-west-1": 2, "": 1}, "bare": {}}


async def test_unknown_builds_and_too_many_artifacts_are_refused(store: Store) -> None:
    with pytest.raises(NotFound):
        await record(store, "nobody", EU)
    with pytest.raises(NotFound):
        await store.artifacts.of_build("nobody")
    await create(store, "full-1")
    for first in range(0, MAX_ARTIFACTS_PER_BUILD, 200):
        await record(store, "full-1", *({**EU, "external_id": f"ami-{n}"} for n in range(first, first + 200)))
    with pytest.raises(Conflict) as refused:
        await record(store, "full-1", US)
    assert refused.value.type_slug == "too-many-artifacts"
    assert (await record(store, "full-1", {**EU, "external_id": "ami-7"})).replayed  # known ones still replay


async def test_an_idempotency_key_replays_the_first_answer(store: Store) -> None:
    await create(store, "idem-1")
    idem = Idempotency.for_request("tester", "k1", "POST", "/builds/idem-1/artifacts", b"one")
    ctx = WriteContext(actor="tester", idem=idem)
    first = await record(store, "idem-1", EU, ctx=ctx)
    await record(store, "idem-1", US)  # the build moves on
    second = await record(store, "idem-1", EU, ctx=ctx)
    assert second.key_replayed and not second.appended
    assert second.body == first.body  # the first answer, as it was (with its artifacts)
    other = Idempotency.for_request("tester", "k1", "POST", "/builds/idem-1/artifacts", b"two")
    with pytest.raises(Unprocessable):
        await record(store, "idem-1", US, ctx=WriteContext(actor="tester", idem=other))
    assert len(await feed(store, EventFilter(types=("artifact",)))) == 2


async def test_artifact_events_are_in_the_feed_by_type_but_never_by_state(store: Store) -> None:
    await create(store, "feed-1")
    await state(store, "feed-1", 100)
    await record(store, "feed-1", EU)
    types = [e.type for e in await feed(store, EventFilter(build_id="feed-1"))]
    assert types == ["created", "state", "artifact"]
    assert [e.type for e in await feed(store, EventFilter(states=(100,)))] == ["state"]
    assert [e.type for e in await feed(store, EventFilter(states=("succeeded",)))] == ["state"]
    assert [e.type for e in await feed(store, EventFilter(types=("artifact",)))] == ["artifact"]
    [event] = await feed(store, EventFilter(types=("artifact",)))
    assert (await store.get_event(event.seq)).detail == event.detail


async def test_verify_finds_artifacts_without_their_event_and_events_without_their_artifacts(
    store: Store,
) -> None:
    await create(store, "drift-1")
    seq = body(await record(store, "drift-1", EU, US))["event"]["seq"]
    await run_sql(store, "DELETE FROM artifacts WHERE external_id = {}", "ami-0us")
    report = await verify(store)
    assert [f.subject for f in report.drift if f.check == "artifacts"] == [f"event {seq}"]
    await run_sql(store, "UPDATE artifacts SET event_seq = 1 WHERE external_id = {}", "ami-0eu")
    checks = {f.check for f in (await verify(store)).drift}
    assert checks == {"artifacts"}
    assert report.checked["artifacts"] == 1


# ---------------------------------------------------------------- two processes at once


def _record_in_process(url: str, barrier: Barrier, rounds: int, results: Any) -> None:
    """In its own process: meet the other at the barrier, then record artifact ``n``, each round."""

    async def main() -> None:
        store = create_store(Settings(database_url=url))
        await store.open()
        try:
            for n in range(rounds):
                barrier.wait(timeout=60)
                done = await store.artifacts.record(
                    "race-1", record_of({**EU, "external_id": f"ami-{n}"}), WriteContext(actor="racer")
                )
                results.put((n, done.appended, json.loads(done.body)["event"]["seq"]))
        finally:
            await store.close()

    asyncio.run(main())


async def test_two_processes_recording_the_same_artifact_make_one_row_and_one_event(
    store: Store, settings: Settings
) -> None:
    await create(store, "race-1")
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    rounds = 15
    url = settings.effective_database_url
    racers = [
        context.Process(target=_record_in_process, args=(url, barrier, rounds, results)) for _ in range(2)
    ]
    for racer in racers:
        racer.start()
    try:
        answers = [await asyncio.to_thread(results.get, timeout=120) for _ in range(2 * rounds)]
    finally:
        for racer in racers:
            racer.join(timeout=60)
            if racer.is_alive():  # pragma: no cover - only when the test already failed
                racer.kill()
    assert all(racer.exitcode == 0 for racer in racers)
    for n in range(rounds):
        mine = [(appended, seq) for m, appended, seq in answers if m == n]
        assert sorted(appended for appended, _ in mine) == [False, True], (n, mine)
        assert mine[0][1] == mine[1][1]  # both answer with the one event
    rows = await fetch(store, "SELECT external_id, COUNT(*) AS n FROM artifacts GROUP BY external_id")
    assert sorted(row["n"] for row in rows[0]) == [1] * rounds
    assert len(await feed(store, EventFilter(types=("artifact",)))) == rounds
    await no_drift(store)


# ---------------------------------------------------------------- PostgreSQL: the feed lock


async def test_an_artifact_event_waits_for_an_earlier_append_to_commit(pg_url: str) -> None:
    """An artifact event takes the feed lock like every append: while another writer's transaction holds
    it, the artifact event draws no seq, so a reader never sees it before the earlier one."""
    pg_store = PostgresStore(pg_url)
    await pg_store.open()
    try:
        await create(pg_store, "slow")
        await create(pg_store, "fast")
        cursor = (await feed(pg_store))[-1].seq
        conn = await pg_store.pool.acquire()
        transaction = conn.transaction()
        await transaction.start()
        try:
            row = await pg_store._lock_build(conn, "slow")
            build = sql.decode_build(sql.PostgresDialect(), row)
            draft = plan.state(build, plan.prepare(StateChange(state_code=10)))
            assert draft is not None
            await pg_store._append_event(
                conn, row, build, draft, "slow", old_status="running", previous_at=None
            )
            quick = asyncio.create_task(record(pg_store, "fast", EU))
            await asyncio.sleep(0.5)
            assert not quick.done(), "the artifact event must wait for the earlier append's commit"
            assert await feed(pg_store, after=cursor) == []  # nothing half-visible
        finally:
            await transaction.commit()
            await pg_store.pool.release(conn)
        await asyncio.wait_for(quick, 10)
        events = await feed(pg_store, after=cursor)
        assert [(e.build.build_id, e.type) for e in events] == [("slow", "state"), ("fast", "artifact")]
    finally:
        await pg_store.close()


# ---------------------------------------------------------------- the lookup


async def succeeded(store: Store, build_id: str, *artifacts: dict[str, Any], **fields: Any) -> None:
    await create(store, build_id, **fields)
    if artifacts:
        await record(store, build_id, *artifacts)
    await state(store, build_id, 100)


def lookup(**filters: Any) -> ArtifactLookup:
    labels = tuple(filters.pop("labels", {}).items())
    return ArtifactLookup("aws", "rhel-8.8", "base", labels=labels, **filters)


async def test_the_lookup_finds_the_newest_succeeded_builds_matching_artifact(store: Store) -> None:
    await succeeded(store, "old", {**EU, "external_id": "ami-old-eu"}, {**US, "external_id": "ami-old-us"})
    await succeeded(store, "new", {**EU, "external_id": "ami-new-eu"})
    await create(store, "running")  # newer, but not succeeded
    await record(store, "running", {**EU, "external_id": "ami-running"})
    await create(store, "failed")
    await record(store, "failed", {**EU, "external_id": "ami-failed"})
    await store.record_failure("failed", FailureReport(error_message="x"), CTX)
    await succeeded(store, "other-os", {**EU, "external_id": "ami-other"}, os_version="rhel-9")
    await succeeded(store, "newest-no-artifacts")

    found = await store.artifacts.latest(lookup(region="eu-west-1"))
    assert (found.external_id, found.build.build_id, found.build.status) == ("ami-new-eu", "new", "succeeded")
    assert (await store.artifacts.latest(lookup(region="us-east-1"))).external_id == "ami-old-us"
    assert (await store.artifacts.latest(lookup(kind="ami"))).build.build_id == "new"
    assert (await store.artifacts.latest(lookup())).external_id == "ami-new-eu"
    # A build that succeeds later is newer, whenever it was created.
    await store.reset_build("old", ResetRequest(reason="rebuild"), CTX)
    await state(store, "old", 100)
    assert (await store.artifacts.latest(lookup(region="eu-west-1"))).external_id == "ami-old-eu"


async def test_the_lookup_filters_by_labels_of_the_artifact_or_else_of_its_build(store: Store) -> None:
    await succeeded(store, "x86", {**EU, "external_id": "ami-x86"}, labels={"arch": "x86_64", "cis": "2"})
    await succeeded(store, "arm", {**EU, "external_id": "ami-arm", "labels": {"arch": "arm64"}},
                    labels={"arch": "x86_64"})  # fmt: skip
    assert (await store.artifacts.latest(lookup(labels={"arch": "arm64"}))).external_id == "ami-arm"
    # The artifact's own label wins over its build's: "arm" is not an x86_64 artifact.
    assert (await store.artifacts.latest(lookup(labels={"arch": "x86_64"}))).external_id == "ami-x86"
    assert (
        await store.artifacts.latest(lookup(labels={"cis": "2", "arch": "x86_64"}))
    ).build.build_id == "x86"
    with pytest.raises(NotFound) as missing:
        await store.artifacts.latest(lookup(labels={"arch": "arm64", "cis": "2"}))
    assert missing.value.extra["filters"] == {"labels": {"arch": "arm64", "cis": "2"}}
    # Label names that mean something to a JSON path are only names.
    await succeeded(store, "dotted", {**EU, "external_id": "ami-dot", "labels": {"a.b": "1", "c/d": "2"}})
    assert (await store.artifacts.latest(lookup(labels={"a.b": "1", "c/d": "2"}))).external_id == "ami-dot"
    with pytest.raises(NotFound):
        await store.artifacts.latest(lookup(labels={"a": "1"}))


async def test_the_lookup_finds_a_match_older_than_the_newest_64_succeeded_builds(store: Store) -> None:
    """PostgreSQL's query looks at the newest 64 succeeded builds first, then at all of them."""
    await succeeded(store, "far-back", {**US, "external_id": "ami-far-back"})
    for n in range(65):  # newer succeeded builds, none with a us-east-1 AMI
        await succeeded(store, f"eu-only-{n}", {**EU, "external_id": f"ami-eu-{n}"})
    assert (await store.artifacts.latest(lookup(region="us-east-1"))).build.build_id == "far-back"
    assert (await store.artifacts.latest(lookup(region="eu-west-1"))).external_id == "ami-eu-64"
    with pytest.raises(NotFound):
        await store.artifacts.latest(lookup(region="ap-south-1"))


async def test_region_less_artifacts_are_found_with_an_empty_region(store: Store) -> None:
    template = {"kind": "vsphere-template", "external_id": "/DC1/vm/Templates/rhel 8.8 base"}
    await succeeded(store, "vs-1", template, {**EU, "external_id": "ami-vs"}, platform="aws")
    assert (await store.artifacts.latest(lookup(region=""))).external_id == template["external_id"]
    assert (await store.artifacts.latest(lookup(kind="vsphere-template"))).region == ""


async def test_a_lookup_that_finds_nothing_says_what_was_not_found(store: Store) -> None:
    with pytest.raises(NotFound) as nothing:
        await store.artifacts.latest(lookup(region="eu-west-1"))
    assert nothing.value.detail == "no build of aws / rhel-8.8 / base has succeeded"
    assert nothing.value.type_slug == "artifact-not-found"
    await succeeded(store, "bare")
    with pytest.raises(NotFound) as bare:
        await store.artifacts.latest(lookup())
    assert bare.value.detail == "no succeeded build of aws / rhel-8.8 / base has recorded an artifact"
    await succeeded(store, "some", EU)
    with pytest.raises(NotFound) as other:
        await store.artifacts.latest(lookup(region="ap-south-1", kind="ami", labels={"arch": "arm64"}))
    assert other.value.detail == (
        "no succeeded build of aws / rhel-8.8 / base has an artifact with region 'ap-south-1', kind 'ami', "
        "label arch='arm64'"
    )
    assert other.value.extra == {
        "platform": "aws",
        "os_version": "rhel-8.8",
        "image_type": "base",
        "filters": {"region": "ap-south-1", "kind": "ami", "labels": {"arch": "arm64"}},
    }


async def test_the_lookup_walks_the_partial_index_of_succeeded_builds(store: Store) -> None:
    """What keeps the lookup a few index reads at any size: the builds are read along
    builds_latest_succeeded (its `status = 'succeeded'` written out, so the partial index applies) and
    each is probed through the artifacts' unique index. PostgreSQL is told to avoid sequential scans,
    as a small test table would otherwise be scanned; what is checked is that the index can be used."""
    await succeeded(store, "plan-1", EU)
    statement = latest_statement(
        store.executor.dialect,
        {"platform": "aws", "os_version": "rhel-8.8", "image_type": "base", "region": "eu-west-1",
         "kind": "ami", "labels": Json({})},
    )  # fmt: skip
    if isinstance(store, PostgresStore):
        query, args = _arguments(statement)
        async with store.pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL enable_seqscan = off")
            plan_text = "\n".join(row[0] for row in await conn.fetch("EXPLAIN " + query, *args))
    else:
        rows = await store.executor.read(
            one(Statement("EXPLAIN QUERY PLAN " + statement.sql, statement.params))
        )
        plan_text = "\n".join(row["detail"] for row in rows)
    assert "builds_latest_succeeded" in plan_text, plan_text
    assert "artifacts_build_platform_region_kind_external_id_key" in plan_text or (
        "sqlite_autoindex_artifacts_1" in plan_text
    ), plan_text
