"""``buildstate verify``: a clean store is clean, and each kind of drift in a maintained table is found.

Drift is made with raw SQL (the service never writes it), one kind per test case, on both stores; the
command's exit status and ``--json`` answer are checked through the real CLI.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from tests.store.raw import run_sql, uuid_value
from tests.store.test_rules import CTX, create, state
from tests.support import CLI, clean_env

from buildstate.config import Settings
from buildstate.models import ArtifactsRecord, FailureReport, ResetRequest
from buildstate.store import Store
from buildstate.store.verify import verify


async def a_busy_store(store: Store) -> dict[str, Any]:
    """Builds in every status, with failures and resets: everything verify checks has rows."""
    done = await create(store, "done-1")
    for code in (25, 50, 100):
        await state(store, done["id"], code)
    broken = await create(store, "broken-1", platform="azure")
    await state(store, broken["id"], 10)
    await store.record_failure(broken["id"], FailureReport(error_message="packer", details={"a": [1]}), CTX)
    await store.reset_build(broken["id"], ResetRequest(reason="retry"), CTX)
    await state(store, broken["id"], 5)
    failed = await create(store, "failed-1", image_type="cis")
    await store.record_failure(failed["id"], FailureReport(error_message="ansible", component="x"), CTX)
    amis = [{"region": r, "kind": "ami", "external_id": f"ami-busy-{r}"} for r in ("eu-west-1", "us-east-1")]
    await store.artifacts.record("done-1", ArtifactsRecord.model_validate({"artifacts": amis}), CTX)
    return {"done": done, "broken": broken, "failed": failed}


def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = clean_env(settings.data_dir, settings.effective_database_url)
    return subprocess.run(
        [CLI, "verify", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


async def test_a_store_written_only_by_the_service_has_no_drift(store: Store, settings: Settings) -> None:
    await a_busy_store(store)
    report = await verify(store)
    assert report.ok, report.as_dict()
    assert report.checked["builds"] == 3
    assert report.checked["events"] == 12
    assert report.checked["artifacts"] == 2
    done = run_cli(settings, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["ok"] is True
    human = run_cli(settings)
    assert human.returncode == 0
    assert human.stdout.splitlines()[-1] == "ok: no drift"


DRIFT = {
    "status_counts": ("UPDATE status_counts SET n = n + 1 WHERE status = 'running'",),
    "combos": ("DELETE FROM combos WHERE platform_id = (SELECT id FROM platforms WHERE name = 'azure')",),
    "failures": ("DELETE FROM failures WHERE error_message = 'ansible'",),
    "builds": ("UPDATE builds SET state_code = 95 WHERE build_id = 'done-1'",),
    "artifacts": ("DELETE FROM artifacts WHERE external_id = 'ami-busy-us-east-1'",),
    "history": (
        # What a create by a UUID-shaped build_id did to its victim before issue 13: a second created
        # event that sent a succeeded build back to 0 (and the counts out of step).
        "INSERT INTO events (seq, build_uuid, type, attempt, state_code, status, actor, platform_id, "
        "os_version_id, image_type_id, recorded_at) SELECT 1000, b.id, 'created', 1, 0, 'running', 'x', "
        "b.platform_id, b.os_version_id, b.image_type_id, b.updated_at FROM builds b "
        "WHERE b.build_id = 'done-1'",
        "UPDATE builds SET state_code = 0, status = 'running', last_event_seq = 1000 "
        "WHERE build_id = 'done-1'",
    ),
}


@pytest.mark.parametrize("check", list(DRIFT))
async def test_each_kind_of_drift_is_reported(store: Store, settings: Settings, check: str) -> None:
    await a_busy_store(store)
    for statement in DRIFT[check]:
        await run_sql(store, statement)
    report = await verify(store)
    assert not report.ok
    assert check in {finding.check for finding in report.drift}, report.as_dict()
    done = run_cli(settings, "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    assert check in {finding["check"] for finding in json.loads(done.stdout)["drift"]}


async def test_a_recorded_reference_conflict_is_reported(store: Store, settings: Settings) -> None:
    builds = await a_busy_store(store)
    await run_sql(
        store,
        "INSERT INTO build_ref_conflicts (build_uuid, build_id, spells_uuid, found_at) "
        "SELECT id, build_id, id, created_at FROM builds WHERE id = {}",
        uuid_value(store, builds["failed"]["id"]),
    )
    report = await verify(store)
    assert report.drift_count == 0
    assert [finding.subject for finding in report.conflicts] == [f"build {builds['failed']['id']}"]
    human = run_cli(settings)
    assert human.returncode == 1
    assert "reference conflict" in human.stdout


def test_verify_refuses_a_database_it_cannot_check(tmp_path: Any) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'missing.db'}", data_dir=tmp_path)
    done = run_cli(settings)
    assert done.returncode == 2
    assert done.stderr.startswith("buildstate:"), done.stderr
    assert "Traceback" not in done.stderr
