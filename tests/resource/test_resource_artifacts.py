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

    first = harness.put(source, params, sources).result()
    again = harness.put(source, params, sources).result()
    from_another_build = harness.put(source, params, sources, harness.build_env(BUILD_ID="9001")).result()

    assert again == first
    assert from_another_build["version"] == first["version"]
    history = api("GET", f"/builds/{build['build_id']}/history")
    assert [event["type"] for event in history["events"]] == ["created", "artifact", "state"]
    assert len(history["artifacts"]) == 1


def test_the_deploy_pipelines_scripts_read_the_ami_from_the_get_and_the_lookup(
    source: dict[str, Any], new_build: Any, api_key: str, platform: str, tmp_path: Path
) -> None:
    """pipelines/deploy.yml's two tasks that find the AMI, run as written (sh, curl) on what a put made."""
    pipeline = yaml.safe_load((Path(__file__).resolve().parents[2] / "pipelines/deploy.yml").read_text())
    tasks = {
        step["task"]: step
        for job in pipeline["jobs"]
        for step in job["plan"]
        if isinstance(step, dict) and "task" in step
    }
    build = new_build(os_version="rhel-8.8", image_type="base")
    region = f"{platform}-east"
    sources = _with_manifest(tmp_path, _manifest(platform, (region, "ami-0ddd4444")))
    params = {
        "build": build["build_id"],
        "state": 100,
        "artifacts_file": "packer-output/packer-manifest.json",
    }
    out = harness.put(source, params, sources).result()
    task_dir = tmp_path / "task"
    harness.get(source, out["version"], task_dir / "image-builds").result()
    (task_dir / "ami").mkdir()

    def run_task(name: str, env: dict[str, str]) -> str:
        script = tasks[name]["config"]["run"]["args"][-1]
        subprocess.run(["sh", "-ec", script], cwd=task_dir, env={"PATH": "/usr/bin:/bin", **env}, check=True)
        return (task_dir / "ami" / "id").read_text()

    assert run_task("read-ami", {}) == "ami-0ddd4444"
    (task_dir / "ami" / "id").unlink()
    looked_up = run_task(
        "look-up-ami",
        {
            "BUILDSTATE_URL": source["url"],
            "BUILDSTATE_API_KEY": api_key,
            "PLATFORM": platform,  # the build's: the lookup walks its succeeded builds
            "OS_VERSION": "rhel-8.8",
            "IMAGE_TYPE": "base",
            "AWS_REGION": region,
        },
    )
    assert looked_up.strip() == "ami-0ddd4444"
