"""Channels and revocations through the resource, against the real service, run as the ATC does.

A channel resource's versions are the channel's assignments, in order; ``out`` assigns with the Concourse
build's idempotency key, so a rerun of the same build replays instead of moving the channel back; a
``states: [revoked]`` resource triggers once per revoked build.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import resource_harness as harness
import yaml
from tests.support import cli_key

Build = Callable[..., dict[str, Any]]
BUCKET = {"os_version": "rhel-8.8", "image_type": "base"}  # and the test's own platform (conftest)


@pytest.fixture(scope="session")
def promoter_key(service_env: dict[str, str], service_url: str) -> str:
    """What a promotion pipeline's resource holds: read (check, get), write (state), release (channels)."""
    return cli_key(service_env, "resource-promoter", "read", "write", "release")


@pytest.fixture
def bucket(platform: str) -> dict[str, str]:
    return {"platform": platform, **BUCKET}


@pytest.fixture
def channel_source(service_url: str, promoter_key: str, bucket: dict[str, str]) -> Callable[[str], Any]:
    def make(name: str) -> dict[str, Any]:
        return {"url": service_url, "api_key": promoter_key, "channel": name, **bucket}

    return make


def succeeded(api: Any, new_build: Build) -> dict[str, Any]:
    build = new_build()
    api("POST", f"/builds/{build['build_id']}/state", {"state_code": 100})
    return build


Assign = Callable[[str, dict[str, Any]], dict[str, Any]]


@pytest.fixture
def assign(api: Any, release_api: Any, bucket: dict[str, str]) -> Assign:
    """Move a channel of the test's bucket directly through the API; returns the event of the move."""

    def move(name: str, build: dict[str, Any]) -> dict[str, Any]:
        body = {"build": build["build_id"], "reason": "test", **bucket}
        answer = release_api("PUT", f"/channels/{name}", body)
        event: dict[str, Any] = api("GET", f"/events/{answer['move']['event_seq']}")
        return event

    return move


def version_of(event: dict[str, Any]) -> dict[str, str]:
    return {"seq": str(event["seq"]), "build": event["build"]["build_id"], "state": "channel"}


def atc_every(source: dict[str, Any], history: list[dict[str, str]]) -> list[dict[str, str]]:
    """One periodic check as the ATC runs it: from the newest known version (none at first); the versions
    it has not seen are appended in the order returned (a version's identity is its JSON)."""
    given = history[-1] if history else harness.OMIT
    for version in harness.check(source, given).result():
        if version not in history:
            history.append(version)
    return history


def test_a_channel_resource_yields_each_assignment_once_in_order(
    channel_source: Callable[[str], dict[str, Any]], new_build: Build, api: Any, assign: Assign
) -> None:
    staging = channel_source("staging")
    assert harness.check(staging).result() == [], "no such channel yet"
    a, b, c = (succeeded(api, new_build) for _ in range(3))

    moves = [assign("staging", a)]
    seen = atc_every(staging, [])
    assert seen == [version_of(moves[0])], "the first check: the head's move only"
    production = assign("production", c)  # another channel of the bucket: no version
    moves.append(assign("staging", b))
    moves.append(assign("staging", c))  # two moves between two checks: both seen
    atc_every(staging, seen)
    moves.append(assign("staging", a))  # back to a: a move of its own
    atc_every(staging, seen)
    atc_every(staging, seen)  # nothing new: nothing added

    assert seen == [version_of(move) for move in moves]
    assert [v["build"] for v in seen] == [a["build_id"], b["build_id"], c["build_id"], a["build_id"]]
    from_first = harness.check(staging, seen[0])
    assert from_first.result() == seen, "version: every from the first: each move, oldest first"
    assert from_first.stdout == harness.check(staging, seen[0]).stdout, "deterministic"
    assert harness.check(staging).result() == [seen[-1]], "a fresh check: the current head's move"
    assert harness.check(channel_source("production")).result() == [version_of(production)]
    assert harness.check(staging, {"seq": "999999999"}).result() == [seen[-1]], "an unknown seq: the head"


def test_a_revocation_empties_the_channel_without_a_version_and_a_new_assignment_is_one(
    channel_source: Callable[[str], dict[str, Any]],
    new_build: Build,
    api: Any,
    release_api: Any,
    assign: Assign,
) -> None:
    staging = channel_source("staging")
    a, b = succeeded(api, new_build), succeeded(api, new_build)
    first = version_of(assign("staging", a))
    release_api("POST", f"/builds/{a['build_id']}/revoke", {"reason": "CVE-2026-0002"})

    assert harness.check(staging).result() == [], "no head: nothing to deploy"
    assert harness.check(staging, first).result() == [first], "the emptying move is no version"
    second = version_of(assign("staging", b))
    assert harness.check(staging, first).result() == [first, second]


def test_out_assigns_then_a_rerun_of_the_same_build_replays(
    channel_source: Callable[[str], dict[str, Any]],
    new_build: Build,
    api: Any,
    assign: Assign,
    *,
    bucket: dict[str, str],
    promoter_key: str,
    tmp_path: Path,
) -> None:
    production = channel_source("production")
    old, new = succeeded(api, new_build), succeeded(api, new_build)
    api("POST", f"/builds/{new['build_id']}/artifacts",
        {"artifacts": [{"region": "eu-west-1", "kind": "ami", "external_id": "ami-0new"}]})  # fmt: skip
    assign("production", old)
    promote = harness.build_env(BUILD_ID="7100", BUILD_NAME="3", BUILD_JOB_NAME="promote-to-production")
    params = {"build": new["build_id"], "assign_channel": {"reason": "approved by the release manager"}}

    run = harness.put(production, params, tmp_path / "put", promote)
    out = run.result()
    fetched = harness.get(production, out["version"], tmp_path / "get", env=promote).result()

    assert out["version"]["build"] == new["build_id"] and out["version"]["state"] == "channel"
    assert fetched["version"] == out["version"]
    assert promoter_key not in run.stderr and "points at build" in run.stderr
    metadata = {pair["name"]: pair["value"] for pair in out["metadata"]}
    assert metadata["channel"] == "production"
    assert (metadata["moved_from"], metadata["moved_to"]) == (old["build_id"], new["build_id"])
    assert metadata["reason"] == "approved by the release manager"
    get_dir = tmp_path / "get"
    assert (get_dir / "build_id").read_text() == new["build_id"]
    assert (get_dir / "state").read_text() == "100"
    assert (get_dir / "artifact_id").read_text() == "ami-0new"
    assert json.loads((get_dir / "event.json").read_text())["detail"]["channel"] == "production"

    # Someone moves production back; then the promotion build's put runs again (attempts:, a lost worker).
    back = {"build": old["build_id"], "assign_channel": {"reason": "rollback"}}
    rollback = harness.put(production, back, tmp_path / "put", harness.build_env(BUILD_ID="7101")).result()
    again = harness.put(production, params, tmp_path / "put", promote)

    assert json.dumps(again.result()["version"]) == json.dumps(out["version"]), "the same version, replayed"
    detail = api(
        "GET", f"/channels/production?platform={bucket['platform']}&os_version=rhel-8.8&image_type=base"
    )
    assert detail["channel"]["head"]["build_id"] == old["build_id"], "the rerun did not move it back"
    assert [move["to_build"]["build_id"] for move in detail["history"]] == [
        old["build_id"], new["build_id"], old["build_id"]
    ]  # fmt: skip
    versions = harness.check(production, out["version"]).result()
    assert [json.dumps(v) for v in versions] == [json.dumps(out["version"]), json.dumps(rollback["version"])]


def test_a_put_of_the_head_again_in_another_build_prints_the_heads_move(
    channel_source: Callable[[str], dict[str, Any]], new_build: Build, api: Any, tmp_path: Path
) -> None:
    staging = channel_source("staging")
    build = succeeded(api, new_build)
    params = {"build": build["build_id"], "assign_channel": {"reason": "tests passed"}}
    first = harness.put(staging, params, tmp_path, harness.build_env(BUILD_ID="7200")).result()

    again = harness.put(staging, params, tmp_path, harness.build_env(BUILD_ID="7201"))

    assert again.result()["version"] == first["version"]
    assert "nothing recorded: build" in again.stderr and "already heads channel staging" in again.stderr
    assert harness.check(staging, first["version"]).result() == [first["version"]]


def test_a_state_put_that_finishes_the_build_then_assigns_a_channel(
    source: dict[str, Any],
    channel_source: Callable[[str], dict[str, Any]],
    new_build: Build,
    api: Any,
    *,
    promoter_key: str,
    tmp_path: Path,
) -> None:
    """A general resource (no bucket in its source): the bucket comes from the build it just finished."""
    build = new_build()
    general = {"url": source["url"], "api_key": promoter_key}
    params = {"build": build["build_id"], "state": 100, "assign_channel": {"name": "staging", "reason": "ok"}}

    out = harness.put(general, params, tmp_path).result()

    assert out["version"]["state"] == "channel"
    assert harness.check(channel_source("staging")).result() == [out["version"]]
    history = api("GET", f"/builds/{build['build_id']}/history")["events"]
    assert [(event["type"], event["state_code"]) for event in history] == [
        ("created", 0), ("state", 100), ("channel", 100)
    ]  # fmt: skip


def test_in_of_a_channel_resource_refuses_an_event_that_is_no_assignment(
    channel_source: Callable[[str], dict[str, Any]], new_build: Build, tmp_path: Path
) -> None:
    build = new_build()
    created = {"seq": str(build["event"]["seq"]), "build": build["build_id"], "state": "0"}

    error = harness.get(channel_source("staging"), created, tmp_path).error()

    assert f"event seq {created['seq']} is not an assignment of channel 'staging'" in error


def test_a_revocations_resource_triggers_once_per_revoked_build_and_in_writes_it(
    source: dict[str, Any], new_build: Build, api: Any, release_api: Any, tmp_path: Path
) -> None:
    """``states: [revoked]``, a clean-up job's trigger: each revoked build once, the inherited ones too, and
    nothing for a restore."""
    revocations = {**source, "states": ["revoked"]}
    assert harness.check(revocations).result() == []
    earlier, bad = succeeded(api, new_build), succeeded(api, new_build)
    child = new_build()
    api("POST", f"/builds/{child['build_id']}/parents", {"parents": [bad["build_id"]]})
    release_api("POST", f"/builds/{earlier['build_id']}/revoke", {"reason": "end of life"})
    seen = atc_every(revocations, [])

    release_api("POST", f"/builds/{bad['build_id']}/revoke", {"reason": "CVE-2026-0003"})
    atc_every(revocations, seen)
    release_api("POST", f"/builds/{bad['build_id']}/restore", {"reason": "false alarm"})
    atc_every(revocations, seen)

    assert [(v["build"], v["state"]) for v in seen] == [
        (earlier["build_id"], "revoked"), (bad["build_id"], "revoked"), (child["build_id"], "revoked")
    ]  # fmt: skip
    fetched = harness.get(revocations, seen[-1], tmp_path / "get").result()
    metadata = {pair["name"]: pair["value"] for pair in fetched["metadata"]}
    assert (metadata["revoked_by"], metadata["inherited"]) == (bad["build_id"], "true")
    assert metadata["reason"] == "CVE-2026-0003"
    assert (tmp_path / "get" / "build_id").read_text() == child["build_id"]


PROMOTE = yaml.safe_load((Path(__file__).resolve().parents[2] / "pipelines/promote.yml").read_text())


def _promote_step(job_name: str, kind: str, name: str) -> dict[str, Any]:
    (job,) = [job for job in PROMOTE["jobs"] if job["name"] == job_name]
    (step,) = [step for step in job["plan"] if step.get(kind) == name]
    return dict(step)


def _run_task(job_name: str, task: str, job: Path) -> subprocess.CompletedProcess[str]:
    """A task of promote.yml, its script run as written in the job's build directory."""
    script = _promote_step(job_name, "task", task)["config"]["run"]["args"][-1]
    env = {"PATH": "/usr/bin:/bin", "AWS_REGION": "eu-west-1"}
    return subprocess.run(
        ["sh", "-ec", script], cwd=job, env=env, capture_output=True, text=True, check=False
    )


def _put_step(source: dict[str, Any], step: dict[str, Any], job: Path) -> dict[str, Any]:
    """A put step in a job's build directory (its inputs are the artifacts there), then its implicit get."""
    assert all((job / name).is_dir() for name in step["inputs"])
    out: dict[str, Any] = harness.put(source, step["params"], job).result()
    assert harness.get(source, out["version"], job / step["put"]).result()["version"] == out["version"]
    return out


def _promote_sources(url: str, keys: dict[str, str], bucket: dict[str, str]) -> dict[str, dict[str, Any]]:
    """promote.yml's buildstate resources on the test service: its ((vars)) are the service, the keys (by
    the credential's name) and the bucket."""
    return {
        resource["name"]: {
            **resource["source"], "url": url, "api_key": keys[resource["source"]["api_key"]], **bucket
        }
        for resource in PROMOTE["resources"]
        if resource["type"] == "buildstate"
    }  # fmt: skip


def test_promote_yml_as_written_moves_a_tested_build_to_staging_then_production(
    new_build: Build,
    api: Any,
    release_api: Any,
    *,
    service_env: dict[str, str],
    service_url: str,
    api_key: str,
    bucket: dict[str, str],
    tmp_path: Path,
) -> None:
    """Each job's steps as the ATC runs them, in order: the triggering get, the smoke test's script, the
    put to staging, the manual job's get and put to production; then a revocation reaches the clean-up job.
    The channels' key has the scopes the pipeline's comment asks for, read and release."""
    keys = {
        "((buildstate_api_key))": api_key,
        "((buildstate_release_key))": cli_key(service_env, "promote-images", "read", "release"),
    }
    sources = _promote_sources(service_url, keys, bucket)
    build = new_build()  # as build-image.yml makes it: the AMI recorded, then state 100
    api("POST", f"/builds/{build['build_id']}/artifacts",
        {"artifacts": [{"region": "eu-west-1", "kind": "ami", "external_id": "ami-0promote"}]})  # fmt: skip
    api("POST", f"/builds/{build['build_id']}/state", {"state_code": 100})

    # test-image: triggered by the build that reached 100.
    (finished,) = harness.check(sources["finished-builds"]).result()
    job = tmp_path / "test-image"
    harness.get(sources["finished-builds"], finished, job / "finished-builds").result()
    ran = _run_task("test-image", "smoke-test", job)
    assert ran.returncode == 0 and "testing ami-0promote in eu-west-1" in ran.stdout, ran.stderr
    to_staging = _promote_step("test-image", "put", "staging")
    staged = _put_step(sources["staging"], to_staging, job)

    # promote-to-production: by hand, the build staging points at.
    assert harness.check(sources["staging"]).result() == [staged["version"]]
    manual = tmp_path / "promote-to-production"
    harness.get(sources["staging"], staged["version"], manual / "staging").result()
    to_production = _promote_step("promote-to-production", "put", "production")
    promoted = _put_step(sources["production"], to_production, manual)

    assert promoted["version"]["build"] == staged["version"]["build"] == build["build_id"]
    assert harness.check(sources["production"]).result() == [promoted["version"]]

    # withdraw-revoked-image: the revocation empties both channels and is the clean-up job's version.
    release_api("POST", f"/builds/{build['build_id']}/revoke", {"reason": "CVE-2026-0004"})
    (revoked,) = harness.check(sources["revocations"]).result()
    harness.get(sources["revocations"], revoked, tmp_path / "withdraw" / "revocations").result()
    written = json.loads((tmp_path / "withdraw" / "revocations" / "artifacts.json").read_text())
    assert [(item["region"], item["external_id"]) for item in written] == [("eu-west-1", "ami-0promote")]
    assert harness.check(sources["production"]).result() == harness.check(sources["staging"]).result() == []


@pytest.mark.skipif(
    shutil.which("jq") is None, reason="promote.yml's roll-out task runs jq (not in the image)"
)
def test_promote_yml_rolls_out_the_ami_of_each_production_move(
    channel_source: Callable[[str], dict[str, Any]],
    new_build: Build,
    api: Any,
    assign: Assign,
    tmp_path: Path,
) -> None:
    production = channel_source("production")
    builds = []
    for ami in ("ami-0first", "ami-0second"):
        build = new_build()
        api("POST", f"/builds/{build['build_id']}/artifacts", {"artifacts": [
            {"region": "us-east-1", "kind": "ami", "external_id": f"{ami}-us"},
            {"region": "eu-west-1", "kind": "ami", "external_id": ami},
        ]})  # fmt: skip
        api("POST", f"/builds/{build['build_id']}/state", {"state_code": 100})
        builds.append(build)
    first = version_of(assign("production", builds[0]))
    assign("production", builds[1])
    assign("production", builds[0])  # a rollback is a move too

    rolled = []
    for number, version in enumerate(harness.check(production, first).result()):
        job = tmp_path / f"roll-out-{number}"
        harness.get(production, version, job / "production").result()
        ran = _run_task("roll-out-production", "roll-out", job)
        assert ran.returncode == 0, ran.stderr
        rolled.append(ran.stdout.split()[2])

    assert rolled == ["ami-0first", "ami-0second", "ami-0first"]
