"""Artifacts through the resource, run as the ATC runs it: ``out`` with ``artifacts`` / ``artifacts_file``
(a Packer manifest or our list), ``in`` writing ``artifacts.json`` and ``artifact_id``.

What goes over the wire (order, bodies, keys) is asserted on the scripted server; what the service makes of
it, on the real one (``conftest.service_url``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import resource_harness as harness
import yaml
from resource_fake_server import FakeServer, Recorded, Reply, event

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures/packer"
BUILD_UUID = event(1)["build"]["id"]
AMI = {"region": "eu-west-1", "kind": "ami", "external_id": "ami-0123abcd", "labels": {"stage": "built"}}


def _event(seq: int, kind: str = "state", state_code: int = 25, attempt: int = 1) -> dict[str, Any]:
    recorded_at = f"2026-12-01T10:00:{seq:02d}.000000Z"
    return event(seq, state_code, type=kind, attempt=attempt, recorded_at=recorded_at)


def _recorded(seq: int, attempt: int = 1, **fields: Any) -> dict[str, Any]:
    """An artifact as the service lists it."""
    return {
        "platform": "aws",
        "region": "eu-west-1",
        "kind": "ami",
        "external_id": f"ami-{seq:08x}",
        "labels": {},
        "attempt": attempt,
        "recorded_at": f"2026-12-01T10:00:{seq:02d}.000000Z",
        "actor": "ci",
        **fields,
    }


def _service(artifacts: list[dict[str, Any]], *, seq: int = 11) -> Any:
    """Answers as the service would: the artifacts POST with its artifact event, a state POST with the
    state event, GET /events/{seq} and GET /builds/{id}/artifacts."""

    def answer(request: Recorded) -> Reply:
        if request.method == "POST" and request.path.endswith(("/artifacts", "/packer-manifest")):
            return Reply(
                200, {"event": _event(seq - 1, "artifact"), "artifacts": artifacts, "replayed": False}
            )
        if request.method == "POST":
            return Reply(200, {"event": _event(seq), "replayed": False})
        if request.path.startswith("/events/"):
            return Reply(200, _event(int(request.path.rpartition("/")[2])))
        return Reply(200, {"artifacts": artifacts})

    return answer


def test_out_records_the_artifacts_before_the_state_and_prints_the_states_version(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    fake_server.fallback = _service([_recorded(10)])
    params = {"build": "rhel-8.8-base-1", "state": 25, "artifacts": [AMI]}

    out = harness.put({"url": fake_server.url}, params, tmp_path).result()

    artifacts_post, state_post = fake_server.requests
    assert (artifacts_post.method, artifacts_post.path) == ("POST", "/builds/rhel-8.8-base-1/artifacts")
    assert (state_post.method, state_post.path) == ("POST", "/builds/rhel-8.8-base-1/state")
    assert artifacts_post.json()["artifacts"] == [AMI]
    assert artifacts_post.json()["provenance"]["build_name"] == "17"
    assert artifacts_post.headers["idempotency-key"] != state_post.headers["idempotency-key"]
    assert out["version"] == {"seq": "11", "build": "rhel-8.8-base-1", "state": "25"}
    metadata = [(pair["name"], pair["value"]) for pair in out["metadata"]]
    assert ("artifact", "eu-west-1 ami ami-0000000a") in metadata
    assert ("artifacts", "1") in metadata


def test_out_with_artifacts_alone_prints_the_artifact_events_version(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    fake_server.fallback = _service([_recorded(10)])

    out = harness.put({"url": fake_server.url}, {"build": "b-1", "artifacts": [AMI]}, tmp_path).result()

    assert [request.path for request in fake_server.requests] == ["/builds/b-1/artifacts"]
    assert out["version"]["seq"] == "10"


def test_a_rerun_sends_the_same_requests_with_the_same_keys(fake_server: FakeServer, tmp_path: Path) -> None:
    """attempts: or a lost worker re-runs out with the same build variables: each request is then the
    same, with the same idempotency key, and the service replays it."""
    fake_server.fallback = _service([_recorded(10)])
    params = {"build": "b-1", "state": 25, "artifacts": [AMI]}

    first = harness.put({"url": fake_server.url}, params, tmp_path).result()
    second = harness.put({"url": fake_server.url}, params, tmp_path).result()

    assert first == second
    once, again = fake_server.requests[:2], fake_server.requests[2:]
    assert [(r.path, r.body, r.headers["idempotency-key"]) for r in once] == [
        (r.path, r.body, r.headers["idempotency-key"]) for r in again
    ]


def test_a_packer_manifest_is_sent_as_packer_wrote_it(fake_server: FakeServer, tmp_path: Path) -> None:
    fake_server.fallback = _service([_recorded(10), _recorded(11, region="us-east-1")])
    (tmp_path / "packer-output").mkdir()
    shutil.copy(FIXTURES / "amazon-ebs.json", tmp_path / "packer-output" / "packer-manifest.json")
    params = {"build": "b-1", "state": 25, "artifacts_file": "packer-output/packer-manifest.json"}

    out = harness.put({"url": fake_server.url}, params, tmp_path).result()

    manifest_post = fake_server.requests[0]
    assert manifest_post.path == "/builds/b-1/packer-manifest"
    assert manifest_post.json() == json.loads((FIXTURES / "amazon-ebs.json").read_text())
    assert [pair["value"] for pair in out["metadata"] if pair["name"] == "artifacts"] == ["2"]


def test_our_list_in_a_file_goes_to_the_artifacts_route(fake_server: FakeServer, tmp_path: Path) -> None:
    fake_server.fallback = _service([_recorded(10)])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "artifacts.json").write_text(json.dumps({"artifacts": [AMI]}))

    harness.put({"url": fake_server.url}, {"build": "b-1", "artifacts_file": "out/artifacts.json"}, tmp_path)

    assert fake_server.requests[0].path == "/builds/b-1/artifacts"
    assert fake_server.requests[0].json()["artifacts"] == [AMI]


def test_in_writes_the_artifacts_of_the_events_attempt_as_of_the_event(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    earlier_attempt = _recorded(3, attempt=0)
    this_one = _recorded(10, labels={"source_image_id": "ami-0fff"})
    later = _recorded(40)
    fake_server.fallback = _service([earlier_attempt, this_one, later])

    fetched = harness.get({"url": fake_server.url}, {"seq": "25"}, tmp_path / "get").result()

    assert json.loads((tmp_path / "get" / "artifacts.json").read_text()) == [this_one]
    assert (tmp_path / "get" / "artifact_id").read_text() == "ami-0000000a"
    assert fake_server.requests[-1].path == f"/builds/{BUILD_UUID}/artifacts"
    assert ("artifacts", "1") in [(pair["name"], pair["value"]) for pair in fetched["metadata"]]


def test_in_writes_no_artifact_id_unless_there_is_exactly_one(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    for listed, name in (([], "none"), ([_recorded(5), _recorded(6, region="us-east-1")], "two")):
        fake_server.fallback = _service(listed)
        destination = tmp_path / name

        harness.get({"url": fake_server.url}, {"seq": "25"}, destination).result()

        assert json.loads((destination / "artifacts.json").read_text()) == listed
        assert not (destination / "artifact_id").exists()


def test_a_url_id_is_shown_without_its_credentials(fake_server: FakeServer, tmp_path: Path) -> None:
    signed = _recorded(
        5, kind="azure-vhd", external_id="https://acct.blob.core.windows.net/c/d.vhd?sig=s3cr3tsig"
    )
    fake_server.fallback = _service([signed])

    fetched = harness.get({"url": fake_server.url}, {"seq": "25"}, tmp_path / "get")

    shown = [pair["value"] for pair in fetched.result()["metadata"] if pair["name"] == "artifact"]
    assert shown == ["eu-west-1 azure-vhd https://acct.blob.core.windows.net/c/d.vhd"]
    assert "s3cr3tsig" not in fetched.stdout + fetched.stderr


# ---------------------------------------------------------------- against the real service


def _manifest(platform: str, *pairs: tuple[str, str]) -> dict[str, Any]:
    """A manifest as amazon-ebs and the manifest post-processor write it (tests/fixtures/packer), in this
    test's own regions so that no other test's AMIs answer its lookups."""
    run = "7d0c4a52-1b2f-4e4e-9a55-0c6f3f0d2a10"
    artifact_id = ",".join(f"{region}:{ami}" for region, ami in sorted(pairs))
    build = {
        "name": "amazon-ebs.rhel8",
        "builder_type": "amazon-ebs",
        "build_time": 1764590000,
        "files": None,
        "artifact_id": artifact_id,
        "packer_run_uuid": run,
        "custom_data": {"source_image_id": "ami-0fedcba9876543210", "test": platform},
    }
    return {"builds": [build], "last_run_uuid": run}


def _with_manifest(workdir: Path, manifest: dict[str, Any]) -> Path:
    sources = workdir / "put"
    (sources / "packer-output").mkdir(parents=True)
    (sources / "packer-output" / "packer-manifest.json").write_text(json.dumps(manifest, indent=2))
    return sources


def test_a_packer_manifest_put_then_get_writes_the_builds_amis(
    source: dict[str, Any], new_build: Any, api: Any, platform: str, tmp_path: Path
) -> None:
    build = new_build()
    regions = (f"{platform}-east", f"{platform}-west")
    sources = _with_manifest(
        tmp_path, _manifest(platform, (regions[0], "ami-0aaa1111"), (regions[1], "ami-0bbb2222"))
    )
    params = {"build": build["build_id"], "state": 25, "artifacts_file": "packer-output/packer-manifest.json"}

    out = harness.put(source, params, sources).result()
    fetched = harness.get(source, out["version"], tmp_path / "get").result()

    assert out["version"]["state"] == "25"
    assert fetched["version"] == out["version"]
    written = json.loads((tmp_path / "get" / "artifacts.json").read_text())
    assert [(a["platform"], a["region"], a["kind"], a["external_id"]) for a in written] == [
        ("aws", regions[0], "ami", "ami-0aaa1111"),
        ("aws", regions[1], "ami", "ami-0bbb2222"),
    ]
    assert written[0]["labels"]["source_image_id"] == "ami-0fedcba9876543210"
    assert not (tmp_path / "get" / "artifact_id").exists(), "two AMIs: no single id"
    history = api("GET", f"/builds/{build['build_id']}/history")
    assert [event["type"] for event in history["events"]] == ["created", "artifact", "state"]
    assert [pair["value"] for pair in out["metadata"] if pair["name"] == "artifacts"] == ["2"]


def test_a_rerun_of_the_put_records_nothing_twice(
    source: dict[str, Any], new_build: Any, api: Any, platform: str, tmp_path: Path
) -> None:
    build = new_build()
    sources = _with_manifest(tmp_path, _manifest(platform, (f"{platform}-east", "ami-0ccc3333")))
    params = {
        "build": build["build_id"],
        "state": 100,
        "artifacts_file": "packer-output/packer-manifest.json",
    }

    first_run = harness.put(source, params, sources)
    first = first_run.result()
    again_run = harness.put(source, params, sources)  # the same requests, keys and answers
    again = again_run.result()
    another_run = harness.put(source, params, sources, harness.build_env(BUILD_ID="9001"))
    from_another_build = another_run.result()  # new keys: the service finds them true already

    assert f"1 artifact of build {build['build_id']}" in first_run.stderr
    assert again_run.stderr.count("nothing recorded: this put ran before in this Concourse build") == 2
    assert "recorded event" not in again_run.stderr
    assert f"nothing recorded: build {build['build_id']} has the 1 artifact already" in another_run.stderr
    assert "is already at state 100" in another_run.stderr
    assert again == first
    assert from_another_build["version"] == first["version"]
    history = api("GET", f"/builds/{build['build_id']}/history")
    assert [event["type"] for event in history["events"]] == ["created", "artifact", "state"]
    assert len(history["artifacts"]) == 1


DEPLOY_TASKS = {
    step["task"]: step["config"]["run"]["args"][-1]
    for job in yaml.safe_load((Path(__file__).resolve().parents[2] / "pipelines/deploy.yml").read_text())[
        "jobs"
    ]
    for step in job["plan"]
    if isinstance(step, dict) and "task" in step
}


def _built(source: dict[str, Any], new_build: Any, workdir: Path, *pairs: tuple[str, str]) -> dict[str, Any]:
    """A build at 100 whose Packer manifest (``pairs``) a put recorded; the put's output."""
    build = new_build(os_version="rhel-8.8", image_type="base")
    sources = _with_manifest(workdir, _manifest(build["platform"], *pairs))
    params = {
        "build": build["build_id"],
        "state": 100,
        "artifacts_file": "packer-output/packer-manifest.json",
    }
    out: dict[str, Any] = harness.put(source, params, sources).result()
    return out


def _run_task(name: str, task_dir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """One of pipelines/deploy.yml's tasks, its script run as written in a task's working directory."""
    (task_dir / "ami").mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        ["sh", "-ec", DEPLOY_TASKS[name]],
        cwd=task_dir,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_deploy_pipeline_reads_the_ami_of_the_triggering_get(
    source: dict[str, Any], new_build: Any, platform: str, tmp_path: Path
) -> None:
    one = _built(source, new_build, tmp_path / "one", (f"{platform}-east", "ami-0ddd4444"))
    two = _built(
        source, new_build, tmp_path / "two", (f"{platform}-east", "ami-0e1"), (f"{platform}-west", "ami-0e2")
    )
    for out, task_dir in ((one, tmp_path / "task-one"), (two, tmp_path / "task-two")):
        harness.get(source, out["version"], task_dir / "image-builds").result()

    single = _run_task("read-ami", tmp_path / "task-one", {})
    several = _run_task("read-ami", tmp_path / "task-two", {})

    assert single.returncode == 0, single.stderr
    assert (tmp_path / "task-one" / "ami" / "id").read_text() == "ami-0ddd4444"
    assert several.returncode != 0, "two AMIs: the task must not deploy an arbitrary one"
    assert "made no single artifact; see image-builds/artifacts.json" in several.stderr


@pytest.mark.skipif(
    shutil.which("curl") is None, reason="deploy.yml's lookup task runs curl (not in the image)"
)
def test_the_deploy_pipeline_looks_the_ami_up_as_text(
    source: dict[str, Any], new_build: Any, api_key: str, platform: str, tmp_path: Path
) -> None:
    region = f"{platform}-east"
    _built(source, new_build, tmp_path / "put", (region, "ami-0ddd4444"))
    env = {
        "BUILDSTATE_URL": source["url"],
        "BUILDSTATE_API_KEY": api_key,
        "PLATFORM": platform,  # the build's platform (what keys are bound to), not the AMI's cloud
        "OS_VERSION": "rhel-8.8",
        "IMAGE_TYPE": "base",
    }

    found = _run_task("look-up-ami", tmp_path / "task", {**env, "AWS_REGION": region})
    missing = _run_task("look-up-ami", tmp_path / "task-missing", {**env, "AWS_REGION": f"{platform}-north"})

    assert found.returncode == 0, found.stderr
    assert (tmp_path / "task" / "ami" / "id").read_text().strip() == "ami-0ddd4444"
    assert "deploying ami-0ddd4444" in found.stdout
    assert missing.returncode != 0, "a 404 fails the task (curl -f)"
    assert api_key not in found.stdout + found.stderr + missing.stdout + missing.stderr


def test_a_get_writes_the_artifacts_of_its_events_attempt_as_of_that_event(
    source: dict[str, Any], new_build: Any, platform: str, tmp_path: Path
) -> None:
    """in is cached per version: an earlier event's get never shows what came later, and a finished
    attempt's get shows its own AMI, not one a failed attempt recorded."""
    build = new_build()
    ref = build["build_id"]
    region = f"{platform}-east"
    started = harness.put(source, {"build": ref, "state": 10}, tmp_path).result()
    first = harness.put(
        source, {"build": ref, "state": 25, "artifacts": [{**AMI, "region": region}]}, tmp_path
    )
    harness.put(source, {"build": ref, "failure": {"error_message": "ansible: exit 2"}}, tmp_path).result()
    harness.put(source, {"build": ref, "reset": {"reason": "flaky mirror"}}, tmp_path).result()
    second = {"region": region, "kind": "ami", "external_id": "ami-0beef"}
    finished = harness.put(source, {"build": ref, "state": 100, "artifacts": [second]}, tmp_path).result()

    def fetched(version: dict[str, str], name: str) -> tuple[list[dict[str, Any]], str | None]:
        harness.get(source, version, tmp_path / name).result()
        artifact_id = tmp_path / name / "artifact_id"
        listed = json.loads((tmp_path / name / "artifacts.json").read_text())
        return listed, artifact_id.read_text() if artifact_id.exists() else None

    assert fetched(started["version"], "at-10") == ([], None)
    at_25, at_25_id = fetched(first.result()["version"], "at-25")
    assert [a["external_id"] for a in at_25] == ["ami-0123abcd"]
    assert at_25_id == "ami-0123abcd"
    at_100, at_100_id = fetched(finished["version"], "at-100")
    assert [a["external_id"] for a in at_100] == ["ami-0beef"]
    assert at_100_id == "ami-0beef"
    assert at_100[0]["attempt"] == at_25[0]["attempt"] + 1
