"""Artifacts through the resource, run as the ATC runs it: ``out`` with ``artifacts`` / ``artifacts_file``
(a Packer manifest or our list), ``in`` writing ``artifacts.json`` and ``artifact_id``.

What goes over the wire (order, bodies, keys) is asserted on the scripted server; what the service makes of
it, on the real one (``conftest.service_url``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import resource_harness as harness
from resource_fake_server import FakeServer, Recorded, Reply

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures/packer"
BUILD_UUID = "6f1c0000-0000-4000-8000-000000000001"
AMI = {"region": "eu-west-1", "kind": "ami", "external_id": "ami-0123abcd", "labels": {"stage": "built"}}


def _event(seq: int, kind: str = "state", state_code: int = 25, attempt: int = 1) -> dict[str, Any]:
    return {
        "seq": seq,
        "type": kind,
        "recorded_at": f"2026-12-01T10:00:{seq:02d}.000000Z",
        "attempt": attempt,
        "state_code": state_code,
        "from_state_code": None,
        "status": "running",
        "message": None,
        "failure": None,
        "reason": None,
        "actor": "ci",
        "provenance": None,
        "duration_ms": None,
        "build": {
            "id": BUILD_UUID,
            "build_id": "rhel-8.8-base-1",
            "platform": "aws",
            "os_version": "rhel-8.8",
            "image_type": "base",
            "labels": {},
            "created_at": "2026-12-01T09:00:00.000000Z",
        },
    }


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
