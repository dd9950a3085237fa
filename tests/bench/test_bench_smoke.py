"""The bench entry point end to end, briefly: every scenario it reports, with no errors, on SQLite.

Not a timed test: no number is compared with a target here (the machine is shared and noisy). It proves
that ``python -m bench`` starts what it needs, drives real traffic with a real key, and writes results that
hold a ratio for each scenario. The full run is ``python -m bench all`` (docs/performance.md). The
``reference`` scenario runs with ``--before`` naming this same checkout: the before/after machinery (a
second service on databases migrated and keyed by that checkout's CLI, measured in the same rounds)
without a second checkout to bootstrap.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from bench.__main__ import round_order

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    if shutil.which("wrk") is None and os.geteuid() != 0:
        pytest.skip("wrk is not installed and cannot be (apt-get install -y wrk)")
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run(
        [sys.executable, "-m", "bench", "framework", "reference", "state", "check", "summary", "resource",
         "scale", "--smoke", "--seconds", "1", "--store", "sqlite", "--before", str(ROOT), "--out", str(out)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=600,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads((out / "results.json").read_text())
    data["_markdown"] = (out / "results.md").read_text()
    return data


REFERENCE = ("auth-ping", "get-build", "post-state", "create")


def test_every_scenario_is_reported_with_its_ratio_to_a_ceiling(results: dict) -> None:
    scenarios = results["scenarios"]
    assert set(scenarios) == {
        "auth-ping/sqlite", "health/sqlite", "post-state/sqlite", "check-poll/sqlite", "summary/sqlite",
        "auth-ping-without-access-log/sqlite", "auth-ping-without-observe/sqlite",
        "auth-ping-auth-only/sqlite",
        *(f"{name}-vs-reference{side}/sqlite" for name in REFERENCE for side in ("", "-before")),
    }  # fmt: skip
    for name, entry in scenarios.items():
        assert entry["requests"] > 0, name
        assert entry["errors"] == 0, (name, entry["error_detail"])
        assert entry["ratio"] is not None and entry["ratio"] > 0, name
        assert entry["p50_ms"] <= entry["p99_ms"], name
    assert scenarios["post-state/sqlite"]["ceiling"] == "sqlite-transaction"
    assert {"framework", "sqlite-transaction"} <= set(results["ceilings"])


def test_the_reference_scenarios_have_before_after_and_the_p99_at_half_of_their_maximum(
    results: dict,
) -> None:
    scenarios = results["scenarios"]
    for name in REFERENCE:
        for side in ("", "-before"):
            entry = scenarios[f"{name}-vs-reference{side}/sqlite"]
            assert entry["ceiling"] == f"reference-{name}/sqlite"
            assert entry["p99_at_max_ms"] == entry["p99_ms"]
            half = entry["at_half"]
            assert half["requests"] > 0 and half["errors"] == 0, (name, side, half["error_detail"])
            assert half["offered_rate"] == pytest.approx(entry["rps"] / 2, rel=0.01)
            assert half["open_loop"] is True and entry["half_pacing"] == "open loop"
            assert entry["round_orders"] == [["reference", "before", "after"]]
        row = results["before_after"][f"{name}/sqlite"]
        assert row["after_over_before"] > 0 and row["reference_rps"] > 0
    assert results["settings"]["checkouts"]["before"]["root"] == str(ROOT)
    assert "## Before / after / reference" in results["_markdown"]
    assert "p99 < 50 ms at half of max, open loop (create, sqlite)" in results["_markdown"]


def test_scale_and_resource_numbers_are_there(results: dict) -> None:
    queries = results["scale"]["sqlite"]["10000"]["queries"]
    assert set(queries) == {
        "feed", "feed_page", "list", "summary", "artifact", "artifact_labels", "channel", "ancestry",
    }  # fmt: skip
    assert all(q["median_ms"] > 0 for q in queries.values())
    assert results["scale"]["sqlite"]["10000"]["events"] > 70_000
    assert results["scale"]["sqlite"]["10000"]["artifacts"] == 30_000
    assert "builds_latest_succeeded" in results["scale"]["sqlite"]["10000"]["plans"]["artifact"]
    resource = results["resource"]
    assert {"bare", "check", "in", "out"} <= set(resource)
    assert resource["check"]["median_ms"] > resource["bare"]["median_ms"]


def test_the_markdown_table_states_where_we_stand_on_each_target(results: dict) -> None:
    text = results["_markdown"]
    assert "## Targets" in text
    assert "middleware cost" in text and "POST state on sqlite" in text and "check within 150 ms" in text


def test_the_reference_rounds_alternate_their_order() -> None:
    """ABBA: an order effect within a round does not always land on the same side."""
    sides = ["reference", "before", "after"]
    assert [round_order(n, sides) for n in range(3)] == [sides, sides[::-1], sides]
