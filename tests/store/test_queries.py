"""Build listing and the dashboard summary, on both stores."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from tests.store.test_rules import CTX, create, state

from buildstate.errors import BadRequest
from buildstate.models import FailureReport
from buildstate.store import Store
from buildstate.store.types import BuildCursor, BuildFilter


async def test_list_builds_filters_and_pages_with_a_cursor(store: Store) -> None:
    for i in range(7):
        await create(store, f"aws-{i}", platform="aws")
    await create(store, "gcp-0", platform="gcp")
    await state(store, "aws-3", 60)
    await store.record_failure("aws-5", FailureReport(error_message="x"), CTX)

    page = await store.list_builds(BuildFilter(), 50, None)
    assert page.builds[0].build_id == "aws-5"  # most recently updated first
    assert page.builds[1].build_id == "aws-3"
    assert page.next_cursor is None

    seen, cursor = [], None
    for _ in range(10):
        page = await store.list_builds(BuildFilter(platform="aws"), 3, cursor)
        seen.extend(b.build_id for b in page.builds)
        if page.next_cursor is None:
            break
        cursor = BuildCursor.decode(page.next_cursor)
    assert sorted(seen) == [f"aws-{i}" for i in range(7)]
    assert len(seen) == 7

    async def ids(**where: object) -> list[str]:
        return [b.build_id for b in (await store.list_builds(BuildFilter(**where), 50, None)).builds]  # type: ignore[arg-type]

    assert await ids(status="failed") == ["aws-5"]
    assert await ids(min_state=50) == ["aws-3"]
    assert await ids(max_state=0, platform="gcp") == ["gcp-0"]
    assert await ids(updated_since=datetime.now(UTC) + timedelta(minutes=1)) == []
    assert len(await ids(updated_since=datetime.now(UTC) - timedelta(minutes=1))) == 8
    assert await ids(platform="vsphere") == []


def test_a_cursor_not_issued_by_the_service_is_a_bad_request() -> None:
    with pytest.raises(BadRequest):
        BuildCursor.decode("not-a-cursor")


async def test_summary_counts_matrix_failures_and_step_medians(store: Store) -> None:
    await create(store, "old", platform="aws")
    await state(store, "old", 100)
    await create(store, "new", platform="aws")  # same combination: the newest build wins the cell
    await state(store, "new", 25)
    await create(store, "az", platform="azure")
    await store.record_failure(
        "az", FailureReport(error_message="timeout", error_code="E_TIMEOUT", component="packer"), CTX
    )
    await create(store, "az2", platform="azure", image_type="cis")
    await store.record_failure(
        "az2", FailureReport(error_message="again", error_code="E_TIMEOUT", component="packer"), CTX
    )

    summary = await store.summary(window_hours=24)
    assert summary.counts == {"running": 1, "failed": 2, "succeeded": 1}
    assert summary.total == 4
    cells = {(c.platform, c.os_version, c.image_type): c.build.build_id for c in summary.matrix}
    assert cells == {
        ("aws", "rhel-8.8", "base"): "new",
        ("azure", "rhel-8.8", "base"): "az",
        ("azure", "rhel-8.8", "cis"): "az2",
    }
    assert [(g.component, g.error_code, g.count) for g in summary.failures] == [("packer", "E_TIMEOUT", 2)]
    steps = {s.state_code: s for s in summary.step_durations}
    assert steps[0].samples == 2  # old: 0 -> 100, new: 0 -> 25
    assert steps[0].median_ms >= 0


async def test_summary_gives_step_medians_per_state_and_per_pair_of_states(store: Store) -> None:
    """A step 10 -> 25 compares with other 10 -> 25 steps, not with every move out of 10."""
    await create(store, "quick")
    await state(store, "quick", 10)
    await state(store, "quick", 25)
    await create(store, "slow")
    await state(store, "slow", 10)
    await asyncio.sleep(0.3)
    await state(store, "slow", 50)
    took = {
        (e.build.build_id, e.from_state_code, e.state_code): e.duration_ms
        for ref in ("quick", "slow")
        for e in (await store.history(ref)).events
        if e.type == "state"
    }
    summary = await store.summary(window_hours=24)
    pairs = {
        (t.from_state_code, t.state_code): (t.median_ms, t.samples) for t in summary.transition_durations
    }
    assert pairs[(10, 25)] == (took[("quick", 10, 25)], 1)
    assert pairs[(10, 50)] == (took[("slow", 10, 50)], 1)
    assert took[("slow", 10, 50)] >= 300
    out_of_ten = {s.state_code: s for s in summary.step_durations}[10]
    assert out_of_ten.samples == 2
    assert out_of_ten.median_ms == (took[("quick", 10, 25)] + took[("slow", 10, 50)]) / 2
