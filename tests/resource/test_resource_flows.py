"""The resource against a real running buildstate service, run the way the ATC runs it.

Each test works on its own platform slug (see ``conftest.platform``) so the shared service's other
data never shows up in its checks.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import resource_harness as harness

Build = Callable[..., dict[str, Any]]


def version_of(event: dict[str, Any]) -> dict[str, str]:
    words = {"failure": "failed", "reset": "reset", "revoked": "revoked", "restored": "restored"}
    state = words.get(event["type"], str(event["state_code"]))
    return {"seq": str(event["seq"]), "build": event["build"]["build_id"], "state": state}


def advance(api: Any, build_id: str, *codes: int) -> list[dict[str, Any]]:
    """Record state codes directly through the API; returns the events, oldest first."""
    return [api("POST", f"/builds/{build_id}/state", {"state_code": code})["event"] for code in codes]


def test_first_check_returns_nothing_then_only_the_newest_event(
    source: dict[str, Any], new_build: Build, api: Any
) -> None:
    assert harness.check(source).result() == []

    first = new_build()
    second = new_build()
    newest = advance(api, second["build_id"], 10)[-1]
    advance(api, first["build_id"], 5)  # not the newest any more once the next one lands
    newest = advance(api, second["build_id"], 15)[-1]

    assert harness.check(source).result() == [version_of(newest)]


def test_incremental_check_returns_the_given_version_and_every_newer_one(
    source: dict[str, Any], new_build: Build, api: Any
) -> None:
    build = new_build()
    events = [build["event"], *advance(api, build["build_id"], 10, 25, 50, 75)]
    given = version_of(events[1])

    versions = harness.check(source, given).result()

    assert versions == [version_of(event) for event in events[1:]]
    assert json.dumps(versions[0]) == json.dumps(given), "the given version must come back unchanged"


def test_every_sees_all_versions_across_pages(source: dict[str, Any], new_build: Build, api: Any) -> None:
    """More events than one page of the feed (1000), so ``version: every`` needs all the paging."""
    builds = [new_build() for _ in range(2)]
    events = [build["event"] for build in builds]
    for _cycle in range(25):  # 0 -> 100 and a reset: 21 events per build and cycle
        for build in builds:
            events.extend(advance(api, build["build_id"], *range(5, 101, 5)))
            events.append(api("POST", f"/builds/{build['build_id']}/reset", {"reason": "again"})["event"])
    assert len(events) > 1000

    versions = harness.check(source, version_of(events[0])).result()

    assert versions == [version_of(event) for event in sorted(events, key=lambda event: event["seq"])]


def test_partial_unknown_and_malformed_versions_never_fail(
    source: dict[str, Any], new_build: Build, api: Any
) -> None:
    build = new_build()
    events = [build["event"], *advance(api, build["build_id"], 10, 20)]
    newest = [version_of(events[-1])]

    from_seq = harness.check(source, {"seq": str(events[1]["seq"])}).result()
    assert from_seq == [version_of(event) for event in events[1:]], "fly check-resource --from seq:N"
    assert harness.check(source, {"build": build["build_id"]}).result() == newest
    assert harness.check(source, {"seq": "not-a-number", "state": "50"}).result() == newest
    assert harness.check(source, {"seq": "999999999", "build": "gone"}).result() == newest


def test_check_is_deterministic(source: dict[str, Any], new_build: Build, api: Any) -> None:
    build = new_build()
    advance(api, build["build_id"], 10, 20)
    version = version_of(build["event"])

    first = harness.check(source, version)
    second = harness.check(source, version)

    assert first.stdout == second.stdout
    assert len(first.result()) == 3


def test_state_filters_emit_only_matching_events(source: dict[str, Any], new_build: Build, api: Any) -> None:
    done, broken = new_build(), new_build()
    reached_100 = advance(api, done["build_id"], 50, 100)[-1]
    advance(api, broken["build_id"], 25)
    failure = api("POST", f"/builds/{broken['build_id']}/failure", {"error_message": "packer: exit 1"})
    reset = api("POST", f"/builds/{broken['build_id']}/reset", {"reason": "retry"})
    first = version_of(done["event"])

    def check_with(**filters: Any) -> list[dict[str, str]]:
        versions: list[dict[str, str]] = harness.check({**source, **filters}, first).result()
        return versions

    assert check_with(states=[100]) == [version_of(reached_100)]
    assert check_with(states=["succeeded"]) == [version_of(reached_100)]
    assert check_with(states=["failed"]) == [version_of(failure["event"])]
    assert check_with(states=["reset"]) == [version_of(reset["event"])]
    assert check_with(event_types=["created"]) == [first, version_of(broken["event"])]
    assert check_with(states=[100], build_id=broken["build_id"]) == []
    assert harness.check({**source, "states": ["failed"]}).result() == [version_of(failure["event"])]


def test_a_revocations_resource_triggers_on_each_revoked_build(
    source: dict[str, Any], new_build: Build, api: Any, release_api: Any
) -> None:
    """``states: [revoked]`` (a clean-up job's trigger): one version per revoked build, the inherited ones
    too, and nothing for the restore."""
    base, child = new_build(), new_build()
    advance(api, base["build_id"], 100)
    api("POST", f"/builds/{child['build_id']}/parents", {"parents": [base["build_id"]]})
    start = version_of(base["event"])
    release_api("POST", f"/builds/{base['build_id']}/revoke", {"reason": "CVE-2026-0001"})
    release_api("POST", f"/builds/{base['build_id']}/restore", {"reason": "false alarm"})
    versions = harness.check({**source, "states": ["revoked"]}, start).result()
    assert [(v["build"], v["state"]) for v in versions] == [
        (base["build_id"], "revoked"),
        (child["build_id"], "revoked"),
    ]
    restored = harness.check({**source, "states": ["restored"]}, start).result()
    assert {v["build"] for v in restored} == {base["build_id"], child["build_id"]}


def _sources_with(workdir: Path, name: str, get_dir: Path) -> Path:
    """The put's sources dir holding an earlier get's output as the input ``name``."""
    sources = workdir / "put"
    shutil.rmtree(sources, ignore_errors=True)
    sources.mkdir(parents=True)
    shutil.copytree(get_dir, sources / name)
    return sources


def test_put_then_implicit_get_fetches_exactly_the_put_event(
    source: dict[str, Any], platform: str, tmp_path: Path, api_key: str
) -> None:
    build_id = f"{platform}-rhel-8.8-base-17"
    create = {
        "create": {
            "platform": platform,
            "os_version": "rhel-8.8",
            "image_type": "base",
            "build_id": build_id,
            "labels": {"region": "eu-west-1"},
        }
    }
    created, fetched, get_dir = harness.put_then_get(source, create, tmp_path / "create")

    assert created["version"] == {"seq": created["version"]["seq"], "build": build_id, "state": "0"}
    assert fetched["version"] == created["version"]
    assert (get_dir / "build_id").read_text() == build_id
    assert (get_dir / "state").read_text() == "0"
    assert (get_dir / "status").read_text() == "running"

    sources = _sources_with(tmp_path, "build-state", get_dir)
    params = {"build_file": "build-state/build_id", "state": 50, "message": "Starting Ansible"}
    out = harness.put(source, params, sources, harness.build_env(BUILD_NAME="18", BUILD_ID="4243"))
    stepped = out.result()
    assert api_key not in out.stderr
    fetched_run = harness.get(source, stepped["version"], tmp_path / "get50")
    fetched = fetched_run.result()
    get_dir = tmp_path / "get50"

    assert stepped["version"]["state"] == "50"
    assert fetched["version"] == stepped["version"]
    assert json.dumps(harness.check(source, created["version"]).result()[-1]) == json.dumps(
        stepped["version"]
    ), "out and check must print the same event byte for byte"
    build = json.loads((get_dir / "build.json").read_text())
    event = json.loads((get_dir / "event.json").read_text())
    assert build["id"] == (get_dir / "id").read_text()
    assert build["state_code"] == 50
    assert build["labels"] == {"region": "eu-west-1"}
    assert build["updated_at"] == event["recorded_at"]
    assert event["message"] == "Starting Ansible"
    assert event["provenance"]["build_name"] == "18"
    assert event["provenance"]["pipeline"] == "images"
    metadata = {pair["name"]: pair["value"] for pair in fetched["metadata"]}
    assert metadata["url"] == f"{source['url']}/builds/{build['id']}"
    assert metadata["message"] == "Starting Ansible"
    assert metadata["platform"] == platform
    assert api_key not in fetched_run.stderr


def test_get_returns_the_build_as_of_the_event_not_the_latest(
    source: dict[str, Any], new_build: Build, api: Any, tmp_path: Path
) -> None:
    build = new_build()
    older = advance(api, build["build_id"], 25)[-1]
    advance(api, build["build_id"], 90)

    harness.get(source, version_of(older), tmp_path / "get").result()

    assert (tmp_path / "get" / "state").read_text() == "25"
    assert json.loads((tmp_path / "get" / "build.json").read_text())["state_code"] == 25


def test_duplicate_put_in_the_same_build_records_once(
    source: dict[str, Any], new_build: Build, api: Any, tmp_path: Path
) -> None:
    build = new_build()
    params = {"build": build["build_id"], "state": 50, "message": "Packer done"}
    same_build = harness.build_env()

    first = harness.put(source, params, tmp_path, same_build).result()
    # Another Concourse build moves the image on; then the first build's put runs again
    # (attempts:, a worker lost mid-step). Without the idempotency key this would be a 409.
    later = {"build": build["build_id"], "state": 75}
    harness.put(source, later, tmp_path, harness.build_env(BUILD_ID="5000", BUILD_NAME="99")).result()
    again = harness.put(source, params, tmp_path, same_build)

    assert json.dumps(again.result()) == json.dumps(first)
    assert "nothing recorded: this put ran before in this Concourse build; event" in again.stderr
    history = api("GET", f"/builds/{build['build_id']}/history")
    assert [event["state_code"] for event in history["events"]] == [0, 50, 75]


def test_duplicate_create_in_the_same_build_records_once(
    source: dict[str, Any], platform: str, api: Any, tmp_path: Path
) -> None:
    create = {
        "create": {"platform": platform, "os_version": "rhel-9", "image_type": "cis", "build_id": platform}
    }

    first = harness.put(source, create, tmp_path).result()
    second = harness.put(source, create, tmp_path).result()

    assert second == first
    assert len(api("GET", f"/builds/{platform}/history")["events"]) == 1


def test_failure_put_in_an_on_failure_hook_then_reset(
    source: dict[str, Any], new_build: Build, api: Any, tmp_path: Path
) -> None:
    build = new_build()
    advance(api, build["build_id"], 10)
    sources = tmp_path / "put"
    (sources / "packer-output").mkdir(parents=True)
    log_tail = "\n".join(f"line {number}" for number in range(5000)) + "\nError: AMI timeout\n"
    (sources / "packer-output" / "packer.log").write_text(log_tail)
    (sources / "packer-output" / "details.json").write_text('{"stage": "packer-build", "exit_code": 1}')
    hook_env = harness.build_env(BUILD_STATUS="failed")
    params = {
        "build": build["build_id"],
        "failure": {
            "error_message_file": "packer-output/packer.log",
            "error_code": "PACKER_FAILED",
            "component": "packer",
            "details_file": "packer-output/details.json",
        },
    }

    failed = harness.put(source, params, sources, hook_env).result()
    harness.get(source, failed["version"], tmp_path / "get", env=hook_env).result()

    assert failed["version"]["state"] == "failed"
    event = json.loads((tmp_path / "get" / "event.json").read_text())
    assert event["failure"]["error_message"].endswith("Error: AMI timeout")
    assert len(event["failure"]["error_message"]) <= 4000, "a long log keeps its tail within the limit"
    assert event["failure"]["details"] == {"stage": "packer-build", "exit_code": 1}
    assert event["provenance"]["build_status"] == "failed"
    assert (tmp_path / "get" / "status").read_text() == "failed"
    assert (tmp_path / "get" / "state").read_text() == "10"
    metadata = {pair["name"]: pair["value"] for pair in failed["metadata"]}
    assert metadata["failure"].startswith("packer: PACKER_FAILED: ...")

    blocked = harness.put(source, {"build": build["build_id"], "state": 25}, sources)
    assert "409" in blocked.error()

    reset = harness.put(
        source, {"build": build["build_id"], "reset": {"reason": "AMI quota raised"}}, sources
    )
    assert reset.result()["version"]["state"] == "reset"
    restarted = harness.put(source, {"build": build["build_id"], "state": 5}, sources).result()
    assert restarted["version"]["state"] == "5"


def test_in_fails_clearly_when_the_event_does_not_exist(source: dict[str, Any], tmp_path: Path) -> None:
    run = harness.get(source, {"seq": "987654321", "build": "gone", "state": "50"}, tmp_path / "get")

    error = run.error()
    assert "event seq 987654321 no longer exists" in error
    assert "404" in error


def test_create_takes_the_build_id_from_a_file(source: dict[str, Any], platform: str, tmp_path: Path) -> None:
    sources = tmp_path / "put"
    (sources / "naming").mkdir(parents=True)
    (sources / "naming" / "build_id").write_text(f"{platform}-from-file\n")
    params = {
        "create": {
            "platform": platform,
            "os_version": "ubuntu-24.04",
            "image_type": "gpu",
            "build_id_file": "naming/build_id",
        }
    }

    out = harness.put(source, params, sources).result()

    assert out["version"]["build"] == f"{platform}-from-file"


@pytest.mark.parametrize("debug", [True, False])
def test_no_secret_on_stderr_even_in_debug(
    source: dict[str, Any], new_build: Build, api_key: str, tmp_path: Path, debug: bool
) -> None:
    build = new_build()
    runs = [
        harness.check({**source, "debug": debug}),
        harness.put({**source, "debug": debug}, {"build": build["build_id"], "state": 5}, tmp_path),
        harness.get({**source, "debug": debug}, version_of(build["event"]), tmp_path / "get"),
    ]

    for run in runs:
        run.result()
        assert api_key not in run.stderr
    assert ("debug: GET" in runs[0].stderr) is debug


def test_check_without_an_api_key_names_source_api_key(source: dict[str, Any]) -> None:
    anonymous = {key: value for key, value in source.items() if key != "api_key"}

    error = harness.check(anonymous).error()

    assert error.startswith(f"buildstate check: GET {source['url']}/events")
    assert "401" in error
    assert error.endswith(
        "source.api_key is not set: the service needs an API key for every step "
        "(scope read for check and get, write for put, release for assign_channel)"
    )


def test_a_put_of_the_current_state_says_nothing_was_recorded(
    source: dict[str, Any], new_build: Build, api: Any, tmp_path: Path
) -> None:
    """It said "recorded event N" and dropped the new message without a word."""
    build = new_build()
    first = harness.put(source, {"build": build["build_id"], "state": 20}, tmp_path)
    assert "recorded event" in first.stderr
    again = harness.put(source, {"build": build["build_id"], "state": 20, "message": "again"}, tmp_path,
                        harness.build_env(BUILD_ID="7001"))  # fmt: skip
    assert again.result()["version"] == first.result()["version"]
    assert "nothing recorded: build" in again.stderr and "is already at state 20" in again.stderr
    assert "recorded event" not in again.stderr
