"""The HTTP API as a pipeline and a dashboard see it, on both stores: shapes, rules, and problem+json."""

from __future__ import annotations

import io
import os
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from buildstate.web.middlewares.problems import _mint

Client = TestClient[Any, Any]
SEED_BUILD = {
    "platform": "aws",
    "os_version": "rhel-8.8",
    "image_type": "base",
    "build_id": "rhel-8.8-base-1",
}
PROBLEM = "application/problem+json"


async def post(client: Client, path: str, body: Any, **headers: str) -> tuple[int, Any, Any]:
    response = await client.post(path, json=body, headers=headers)
    return response.status, await response.json(content_type=None), response.headers


async def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status == status, await response.text()
    assert response.content_type == PROBLEM
    problem: dict[str, Any] = await response.json(content_type=None)
    assert problem["status"] == status
    assert {"type", "title", "detail"} <= problem.keys()
    return problem


async def test_seed_pipeline_flow(client: Client) -> None:
    status, build, _ = await post(client, "/builds", SEED_BUILD)
    assert status == 201
    uuid = build["id"]  # the seed's `jq -r .id`
    for code, message in [(10, "Starting Packer build"), (25, "Packer build completed"), (50, "Ansible"),
                          (75, "Ansible done"), (100, "Build completed successfully")]:  # fmt: skip
        status, body, _ = await post(
            client, f"/builds/{uuid}/state", {"state_code": code, "message": message}
        )
        assert status == 200
        assert (body["state_code"], body["event"]["message"]) == (code, message)
    response = await client.get(f"/builds/{uuid}/state")
    assert response.status == 200
    current = await response.json()
    assert (current["state_code"], current["status"]) == (100, "succeeded")

    status, body, _ = await post(client, "/builds/rhel-8.8-base-1/reset", {"reason": "rebuild with new AMI"})
    assert (status, body["attempt"], body["state_code"]) == (200, 2, 0)
    await post(client, f"/builds/{uuid}/state", {"state_code": 10})
    failure = {
        "error_message": "Pipeline failed",
        "error_code": "PIPELINE_FAILURE",
        "component": "concourse",
        "details": {"stage": "packer-build", "exit_code": 1},
    }
    status, body, _ = await post(client, f"/builds/{uuid}/failure", failure)
    assert (status, body["status"], body["state_code"]) == (200, "failed", 10)
    response = await client.post(f"/builds/{uuid}/state", json={"state_code": 25})
    problem = await assert_problem(response, 409)
    assert "reset" in problem["detail"]

    history = await (await client.get(f"/builds/{uuid}/history")).json()
    assert [e["type"] for e in history["events"]] == (
        ["created"] + ["state"] * 5 + ["reset", "state", "failure"]
    )
    build_page = await (await client.get("/builds?platform=aws&status=failed")).json()
    assert [b["build_id"] for b in build_page["builds"]] == ["rhel-8.8-base-1"]
    summary = await (await client.get("/dashboard/summary")).json()
    assert summary["counts"]["failed"] == 1
    assert summary["failures"][0]["error_code"] == "PIPELINE_FAILURE"


async def test_get_build_and_state_by_uuid_or_build_id(client: Client) -> None:
    _, build, _ = await post(client, "/builds", {**SEED_BUILD, "labels": {"region": "eu-west-1"}})
    for ref in (build["id"], build["build_id"]):
        got = await (await client.get(f"/builds/{ref}")).json()
        assert got["id"] == build["id"]
        assert got["labels"] == {"region": "eu-west-1"}
        state = await (await client.get(f"/builds/{ref}/state")).json()
        assert (state["state_code"], state["status"]) == (0, "running")


async def test_repeated_create_is_200_and_conflicting_create_is_409(client: Client) -> None:
    assert (await post(client, "/builds", SEED_BUILD))[0] == 201
    status, again, _ = await post(client, "/builds", SEED_BUILD)
    assert status == 200
    response = await client.post("/builds", json={**SEED_BUILD, "image_type": "cis"})
    problem = await assert_problem(response, 409)
    assert problem["id"] == again["id"]


async def test_a_change_that_is_already_true_is_marked_as_a_replay_in_the_header_and_the_body(
    client: Client,
) -> None:
    status, created, headers = await post(client, "/builds", SEED_BUILD)
    assert (status, created["replayed"], "Idempotent-Replayed" in headers) == (201, False, False)
    path = f"/builds/{created['id']}/state"
    _, first, headers = await post(client, path, {"state_code": 10, "message": "packer started"})
    assert (first["replayed"], "Idempotent-Replayed" in headers) == (False, False)

    status, again, headers = await post(client, path, {"state_code": 10, "message": "another message"})
    assert (status, again["replayed"], headers["Idempotent-Replayed"]) == (200, True, "true")
    assert again["message"] == again["event"]["message"] == "packer started"  # nothing was changed
    assert again["event"]["seq"] == first["event"]["seq"]

    failure = {"error_message": "boom", "error_code": "E1"}
    assert (await post(client, f"/builds/{created['id']}/failure", failure))[1]["replayed"] is False
    status, repeated, headers = await post(client, f"/builds/{created['id']}/failure", failure)
    assert (status, repeated["replayed"], headers["Idempotent-Replayed"]) == (200, True, "true")
    status, recreated, headers = await post(client, "/builds", SEED_BUILD)
    assert (status, recreated["replayed"], headers["Idempotent-Replayed"]) == (200, True, "true")
    history = await (await client.get(f"/builds/{created['id']}/history")).json()
    assert [e["type"] for e in history["events"]] == ["created", "state", "failure"]


async def test_idempotency_key_replays_over_http(client: Client) -> None:
    _, build, _ = await post(client, "/builds", SEED_BUILD)
    path = f"/builds/{build['id']}/state"
    first = await post(client, path, {"state_code": 10}, **{"Idempotency-Key": "abc"})
    second = await post(client, path, {"state_code": 10}, **{"Idempotency-Key": "abc"})
    assert first[1] == second[1]
    assert second[2]["Idempotent-Replayed"] == "true"
    response = await client.post(path, json={"state_code": 15}, headers={"Idempotency-Key": "abc"})
    await assert_problem(response, 422)
    response = await client.post(path, json={"state_code": 15}, headers={"Idempotency-Key": "x" * 300})
    await assert_problem(response, 400)


async def test_events_feed_over_http(client: Client) -> None:
    _, build, _ = await post(client, "/builds", SEED_BUILD)
    for code in (10, 20, 30):
        await post(client, f"/builds/{build['id']}/state", {"state_code": code})
    page = await (await client.get("/events?after=1&limit=2")).json()
    assert [e["state_code"] for e in page["events"]] == [10, 20]
    assert page["has_more"] is True
    page = await (await client.get(f"/events?after={page['next_after']}")).json()
    assert [e["state_code"] for e in page["events"]] == [30]
    assert page["has_more"] is False
    newest = await (await client.get("/events?order=desc&limit=1&states=30,failed")).json()
    assert [e["state_code"] for e in newest["events"]] == [30]
    event = await (await client.get(f"/events/{newest['events'][0]['seq']}")).json()
    assert event["build"]["build_id"] == "rhel-8.8-base-1"
    await assert_problem(await client.get("/events/999999"), 404)
    await assert_problem(await client.get("/events/abc"), 400)
    await assert_problem(await client.get("/events?states=7"), 422)
    await assert_problem(await client.get("/events?type=bogus"), 422)
    await assert_problem(await client.get("/events?after=-1"), 422)


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"state_code": 7}, 422, "state_code"),
        ({"state_code": 105}, 422, "state_code"),
        ({"state_code": -5}, 422, "state_code"),
        ({"state_code": "50"}, 422, "state_code"),
        ({"state_code": 50.0}, 422, "state_code"),
        ({"state_code": True}, 422, "state_code"),
        ({"state_code": 10**40}, 422, "state_code"),
        ({"state_code": 10, "extra": 1}, 422, "extra"),
        ({}, 422, "state_code"),
        ({"state_code": 10, "message": "x" * 5000}, 422, "message"),
    ],
)
async def test_bad_state_bodies_are_422_with_the_failing_field(
    client: Client, body: dict[str, Any], status: int, field: str
) -> None:
    _, build, _ = await post(client, "/builds", SEED_BUILD)
    problem = await assert_problem(await client.post(f"/builds/{build['id']}/state", json=body), status)
    assert [e["loc"] for e in problem["errors"]] == [field]


async def test_a_misnamed_failure_field_is_a_422_that_names_the_right_one(client: Client) -> None:
    _, build, _ = await post(client, "/builds", SEED_BUILD)
    response = await client.post(
        f"/builds/{build['id']}/failure", json={"message": "packer exited 1", "code": "PACKER_TIMEOUT"}
    )
    problem = await assert_problem(response, 422)
    hints = {e["loc"]: e.get("hint") for e in problem["errors"]}
    assert hints == {"message": "did you mean 'error_message'?", "code": "did you mean 'error_code'?",
                     "error_message": None}  # fmt: skip
    assert "'code' is not a field here: did you mean 'error_code'?" in problem["detail"]
    assert (await client.get(f"/builds/{build['id']}")).status == 200  # nothing recorded
    assert (await (await client.get(f"/builds/{build['id']}")).json())["status"] == "running"


async def test_bad_bodies_and_routes_are_problem_json_never_500(client: Client) -> None:
    _, build, _ = await post(client, "/builds", SEED_BUILD)
    path = f"/builds/{build['id']}/state"
    json_headers = {"Content-Type": "application/json"}
    await assert_problem(await client.post(path, data=b"{not json", headers=json_headers), 400)
    await assert_problem(await client.post(path, data=b'{"message": "\xff\xfe"}', headers=json_headers), 400)
    await assert_problem(await client.post(path, data=b"[1, 2]", headers=json_headers), 422)
    await assert_problem(await client.post(path, data=b'{"state_code": 1e999}', headers=json_headers), 422)
    nested = b'{"error_message": "x", "details": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5001
    response = await client.post(f"/builds/{build['id']}/failure", data=nested, headers=json_headers)
    assert response.status in {400, 422}
    assert response.content_type == PROBLEM
    await assert_problem(await client.post(path, data=b"state_code=10"), 415)
    await assert_problem(await client.post(path, data=b"{}", headers={"Content-Type": "text/plain"}), 415)
    big = b'{"state_code": 10, "message": "' + b"x" * (2 << 20) + b'"}'
    await assert_problem(await client.post(path, data=io.BytesIO(big), headers=json_headers), 413)
    await assert_problem(await client.get("/no/such/route"), 404)
    problem = await assert_problem(await client.delete("/builds"), 405)
    assert "GET" in problem["detail"]
    await assert_problem(await client.get("/builds/nope"), 404)
    await assert_problem(await client.get("/builds?limit=0"), 422)
    await assert_problem(await client.get("/builds?cursor=garbage"), 400)
    await assert_problem(await client.get("/builds?updated_since=yesterday"), 422)
    bad_slug = {**SEED_BUILD, "platform": "AWS; DROP TABLE builds"}
    await assert_problem(await client.post("/builds", json=bad_slug), 422)
    # Data accepted before the bad requests is intact.
    state = await (await client.get(path)).json()
    assert state["state_code"] == 0


async def test_hostile_text_is_kept_verbatim(client: Client) -> None:
    _, build, _ = await post(client, "/builds", SEED_BUILD)
    message = "'; DROP TABLE events; -- \u0007\u202e <script>alert(1)</script> \U0001f680 \\u0000"
    status, _, _ = await post(client, f"/builds/{build['id']}/state", {"state_code": 5, "message": message})
    assert status == 200
    history = await (await client.get(f"/builds/{build['id']}/history")).json()
    assert history["events"][-1]["message"] == message
    nul = await client.post(f"/builds/{build['id']}/state", json={"state_code": 10, "message": "a\u0000b"})
    problem = await assert_problem(nul, 422)
    assert "NUL" in problem["detail"]


async def test_request_id_is_honoured_when_sane_and_replaced_otherwise(client: Client) -> None:
    response = await client.get("/health", headers={"X-Request-ID": "pipeline-42"})
    assert response.headers["X-Request-ID"] == "pipeline-42"
    response = await client.get("/health", headers={"X-Request-ID": "bad id\twith spaces"})
    assert response.headers["X-Request-ID"] != "bad id\twith spaces"
    assert len(response.headers["X-Request-ID"]) == 32


def test_minted_request_ids_are_unique_and_a_forked_worker_draws_its_own_prefix() -> None:
    minted = [_mint() for _ in range(1000)]
    assert len(set(minted)) == 1000
    assert all(len(rid) == 32 and int(rid, 16) >= 0 for rid in minted)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # a gunicorn worker is forked from the master the same way
        os.write(write, _mint().encode())
        os._exit(0)
    os.waitpid(child, 0)
    theirs = os.read(read, 64).decode()
    os.close(read)
    os.close(write)
    assert theirs[:16] != _mint()[:16]


async def test_service_endpoints(client: Client) -> None:
    health = await client.get("/health")
    assert (health.status, (await health.json())["status"]) == (200, "ok")
    ready = await client.get("/ready")
    body = await ready.json()
    assert ready.status == 200
    assert body["schema_version"] == body["expected_schema_version"]
    root = await (await client.get("/")).json()
    assert root["name"] == "buildstate"
    assert root["links"]["openapi"] == "/openapi.json"


async def test_openapi_document_is_valid_3_1_and_covers_every_route(client: Client) -> None:
    from openapi_spec_validator import validate

    from buildstate.web.routing import ROUTES

    spec = await (await client.get("/openapi.json")).json()
    assert spec["openapi"] == "3.1.0"
    validate(spec)
    for r in ROUTES:
        assert r.method.lower() in spec["paths"][r.path], r.path
    state_op = spec["paths"]["/builds/{ref}/state"]["post"]
    assert state_op["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/StateChange")
    assert "application/problem+json" in state_op["responses"]["409"]["content"]
    schema = spec["components"]["schemas"]["StateChange"]
    assert schema["properties"]["state_code"]["multipleOf"] == 5
    assert schema["additionalProperties"] is False
