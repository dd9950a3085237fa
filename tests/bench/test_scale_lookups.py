"""The scale bench's lookups on a small dataset, on both stores (not timed: nothing is compared with a
target). Its dataset must be one the service could have written (``buildstate verify`` finds no drift,
artifacts and their events included), the artifact, channel and ancestry lookups it times must answer what
their callers ask for, and its report must carry the plans of the statements the store runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from bench.db import Database
from tests.conftest import make_settings

from bench import dataset, scale
from buildstate.store import Store, create_store
from buildstate.store.verify import verify

BUILDS = 1200  # ten builds per platform x OS version x image type; the family fits


@pytest.fixture
async def loaded(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[Database, Store]]:
    kind = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    db = Database(kind, database_url, database_url.rpartition("/")[2])
    # dataset.load runs its own event loop (asyncpg on PostgreSQL): off this test's loop.
    tally = await asyncio.to_thread(
        dataset.load, db, BUILDS, artifacts=scale.ARTIFACTS_PER_BUILD, release=True
    )
    assert (tally.builds, tally.artifacts) == (BUILDS, BUILDS * scale.ARTIFACTS_PER_BUILD)
    seqs = dict.fromkeys(dataset.channel_moves(BUILDS), 0)
    assert (tally.parents, tally.channel_moves) == (
        len(dataset.release_rows(dataset.NAMES, "hist", BUILDS, seqs, datetime.now(UTC)).parents),
        len(dataset.channel_moves(BUILDS)),
    )
    store = create_store(make_settings(database_url, tmp_path))
    await store.open()
    try:
        yield db, store
    finally:
        await store.close()


def _newest_succeeded(platform: str, os_version: str, image_type: str) -> int:
    return max(
        i
        for i in range(BUILDS)
        if dataset.NAMES.combo(i)[:3] == (platform, os_version, image_type)
        and dataset.pattern(i)[-1][2] == "succeeded"
    )


async def test_the_dataset_with_artifacts_is_one_the_store_could_have_written(
    loaded: tuple[Database, Store],
) -> None:
    _, store = loaded
    report = await verify(store)
    assert report.ok, report.as_dict()
    assert report.checked["artifacts"] == BUILDS * scale.ARTIFACTS_PER_BUILD
    moves = dataset.channel_moves(BUILDS)
    assert report.checked["events"] == len(moves) + sum(
        len(dataset.steps_of(i, fresh=False, artifacts=scale.ARTIFACTS_PER_BUILD)) for i in range(BUILDS)
    )


async def test_the_benched_lookup_answers_the_newest_succeeded_builds_ami_and_its_plan_is_reported(
    loaded: tuple[Database, Store],
) -> None:
    db, store = loaded
    wanted = scale.ARTIFACT
    i = _newest_succeeded(wanted.platform, wanted.os_version, wanted.image_type)
    build_id = f"hist-{wanted.platform}-{wanted.os_version}-{wanted.image_type}-{i:07d}"
    for lookup in (scale.ARTIFACT, scale.ARTIFACT_LABELS):
        found = await store.artifacts.latest(lookup)
        assert (found.build.build_id, found.region, found.kind) == (build_id, "eu-west-1", "ami")
        assert found.external_id == f"ami-{build_id}-1"
        assert found.labels == {"arch": "x86_64"}

    timings, plans = await scale._time_queries(db, BUILDS)
    for name in ("artifact", "artifact_labels"):
        assert timings[name]["samples"] > 0
        assert timings[name]["median_ms"] > 0
        # The plan of the store's own statement: it walks the succeeded builds' index, newest first.
        assert "builds_latest_succeeded" in plans[name], plans[name]


async def test_the_benched_channel_and_ancestry_answer_the_head_its_moves_and_three_generations(
    loaded: tuple[Database, Store],
) -> None:
    db, store = loaded
    channel = await store.release.channel(dataset.CHANNEL, scale.BUCKET, scale.CHANNEL_HISTORY)
    i = _newest_succeeded(**scale.BUCKET)
    moved = [
        m for m in dataset.channel_moves(BUILDS) if dataset.NAMES.combo(m)[:3] == tuple(scale.BUCKET.values())
    ]
    assert channel.channel.head is not None
    assert channel.channel.head.build_id == dataset.build_id_of(dataset.NAMES, "hist", moved[-1])
    assert moved[-1] in {i, i - dataset.COMBOS}  # a move every second succeeded build
    assert [m.to_build.build_id for m in channel.history if m.to_build] == [
        dataset.build_id_of(dataset.NAMES, "hist", m) for m in reversed(moved)
    ][: scale.CHANNEL_HISTORY]

    root = dataset.family_root(BUILDS)
    ancestry = await store.release.ancestry(dataset.build_id_of(dataset.NAMES, "hist", root))
    depths = sorted(n.depth for n in ancestry.nodes if n.relation == "descendant")
    assert depths == [1] * 100 + [2] * 100 + [3] * 100
    assert not [n for n in ancestry.nodes if n.relation == "ancestor"]
    assert len(ancestry.edges) == 300 and not ancestry.truncated

    timings, plans = await scale._time_queries(db, BUILDS)
    assert timings["channel"]["samples"] > 0 and timings["ancestry"]["samples"] > 0
    assert "channel_history_channel" in plans["channel"], plans["channel"]
    assert "build_parents_parent" in plans["ancestry"], plans["ancestry"]
