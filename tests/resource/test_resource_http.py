"""What goes over the wire: retries, error details, headers, secrets and TLS (scripted server)."""

from __future__ import annotations

import ssl
import time
from pathlib import Path
from typing import Any

import pytest
import resource_harness as harness
import trustme
from resource_fake_server import FakeServer, Reply, event, problem


def feed(*events: dict[str, Any], has_more: bool = False) -> Reply:
    next_after = events[-1]["seq"] if events else 0
    return Reply(200, {"events": list(events), "next_after": next_after, "has_more": has_more})


def build_with_event(seq: int, state_code: int = 50) -> Reply:
    current = event(seq, state_code)
    build = {**current["build"], "state_code": state_code, "status": "running", "attempt": 1}
    return Reply(200, {**build, "event": current})


def test_check_retries_a_503_then_succeeds(fake_server: FakeServer) -> None:
    fake_server.queue(problem(503, "Service Unavailable", "store not ready"), feed(event(7)))

    run = harness.check({"url": fake_server.url}, env=harness.FAST_BACKOFF)

    assert run.result() == [{"seq": "7", "build": "rhel-8.8-base-1", "state": "50"}]
    assert len(fake_server.requests) == 2
    assert "503 Service Unavailable: store not ready; retrying" in run.stderr


@pytest.mark.parametrize("status", [502, 504])
def test_gateway_errors_are_retried(fake_server: FakeServer, status: int) -> None:
    fake_server.queue(Reply(status, b"<html>bad gateway</html>", content_type="text/html"))

    run = harness.check({"url": fake_server.url}, env=harness.FAST_BACKOFF)

    assert run.result() == []
    assert len(fake_server.requests) == 2


def test_429_waits_for_retry_after(fake_server: FakeServer) -> None:
    fake_server.queue(
        Reply(429, {"title": "Too Many Requests", "status": 429}, headers={"Retry-After": "1"}),
        feed(event(3)),
    )

    started = time.monotonic()
    run = harness.check({"url": fake_server.url}, env=harness.FAST_BACKOFF)
    elapsed = time.monotonic() - started

    assert run.result() == [{"seq": "3", "build": "rhel-8.8-base-1", "state": "50"}]
    assert elapsed >= 1.0, "Retry-After: 1 must be honoured even with the fast test backoff"
    assert "retrying in 1.0s" in run.stderr


def test_retry_after_beyond_the_budget_gives_up_at_once(fake_server: FakeServer) -> None:
    fake_server.queue(Reply(429, {"title": "Too Many Requests"}, headers={"Retry-After": "120"}))

    started = time.monotonic()
    run = harness.check({"url": fake_server.url, "retry_seconds": 5})

    assert "gave up after 1 attempt" in run.error()
    assert time.monotonic() - started < 5


def test_retries_stop_within_the_total_budget(fake_server: FakeServer) -> None:
    fake_server.fallback = lambda _request: problem(503, "Service Unavailable", "draining")

    started = time.monotonic()
    run = harness.check({"url": fake_server.url, "retry_seconds": 1})
    elapsed = time.monotonic() - started

    error = run.error()
    assert "503 Service Unavailable: draining" in error
    assert "source.retry_seconds is 1" in error
    assert len(fake_server.requests) >= 2
    assert elapsed < 3


def test_connection_refused_is_retried_then_reported(tmp_path: Path) -> None:
    with FakeServer() as closed:
        url = closed.url  # the port is free again once the server has stopped

    run = harness.check({"url": url, "retry_seconds": 0.5}, env=harness.FAST_BACKOFF)

    error = run.error()
    assert f"cannot reach {url}/events" in error
    assert "gave up after" in error
    assert "retrying" in run.stderr


def test_a_hung_service_times_out_and_is_retried(fake_server: FakeServer) -> None:
    fake_server.queue(Reply(200, {"events": []}, delay=3), feed(event(4)))

    started = time.monotonic()
    run = harness.check({"url": fake_server.url, "timeout": 0.5}, env=harness.FAST_BACKOFF)

    assert run.result() == [{"seq": "4", "build": "rhel-8.8-base-1", "state": "50"}]
    assert "timed out" in run.stderr
    assert time.monotonic() - started < 3


def test_redirects_are_not_followed(fake_server: FakeServer, tmp_path: Path, api_key: str) -> None:
    fake_server.queue(Reply(308, b"", headers={"Location": "https://elsewhere.invalid/builds/b/state"}))

    run = harness.put({"url": fake_server.url, "api_key": api_key}, {"build": "b", "state": 5}, tmp_path)

    error = run.error()
    assert "308" in error
    assert "redirected to https://elsewhere.invalid/builds/b/state" in error
    assert len(fake_server.requests) == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_other_client_errors_are_final_and_show_the_problem_detail(
    fake_server: FakeServer, tmp_path: Path, status: int
) -> None:
    fake_server.queue(problem(status, "Conflict", "build b-1 is failed; POST /builds/b-1/reset first"))

    run = harness.put({"url": fake_server.url}, {"build": "b-1", "state": 75}, tmp_path)

    error = run.error()
    assert f"{status} Conflict: build b-1 is failed; POST /builds/b-1/reset first" in error
    assert len(fake_server.requests) == 1


def test_validation_errors_list_the_failing_fields(fake_server: FakeServer, tmp_path: Path) -> None:
    body = {
        "title": "Unprocessable Content",
        "status": 422,
        "detail": "the request body is invalid",
        "errors": [{"loc": ["body", "platform"], "msg": "String should match pattern"}],
    }
    fake_server.queue(Reply(422, body, content_type="application/problem+json"))
    params = {"create": {"platform": "AWS!", "os_version": "r", "image_type": "b", "build_id": "x"}}

    error = harness.put({"url": fake_server.url}, params, tmp_path).error()

    assert "422 Unprocessable Content: the request body is invalid" in error
    assert "(body.platform: String should match pattern)" in error


def test_a_put_retried_after_503_sends_the_same_idempotency_key(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    fake_server.queue(problem(503, "Service Unavailable", "restarting"), build_with_event(12, 75))

    run = harness.put(
        {"url": fake_server.url}, {"build": "b-1", "state": 75}, tmp_path, env=harness.build_env()
    )

    assert run.result()["version"] == {"seq": "12", "build": "rhel-8.8-base-1", "state": "75"}
    first, second = fake_server.requests
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
    assert first.body == second.body


def _put_key(server: FakeServer, tmp_path: Path, params: dict[str, Any], **env: str | None) -> str:
    server.queue(build_with_event(12, 75))
    harness.put({"url": server.url}, params, tmp_path, env=harness.build_env(**env)).result()
    return server.requests[-1].headers["idempotency-key"]


def test_idempotency_key_follows_the_concourse_build_and_the_params(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    params = {"build": "b-1", "state": 75}
    first = _put_key(fake_server, tmp_path, params)

    assert _put_key(fake_server, tmp_path, params) == first, "a re-run must replay"
    assert _put_key(fake_server, tmp_path, params, BUILD_ID="4243", BUILD_NAME="18") != first
    assert _put_key(fake_server, tmp_path, params, BUILD_PIPELINE_INSTANCE_VARS='{"os":"9"}') != first
    assert _put_key(fake_server, tmp_path, {"build": "b-1", "state": 80}) != first
    assert _put_key(fake_server, tmp_path, {**params, "message": "done"}) != first


def test_put_sends_the_concourse_provenance(fake_server: FakeServer, tmp_path: Path) -> None:
    env = harness.build_env(
        BUILD_STATUS="failed",
        BUILD_PIPELINE_INSTANCE_VARS='{"os": "rhel-9"}',
        BUILD_CREATED_BY="alice",
    )
    fake_server.queue(build_with_event(12, 75))
    params = {"build": "b-1", "failure": {"error_message": "packer exited 1", "component": "packer"}}

    harness.put({"url": fake_server.url}, params, tmp_path, env=env).result()

    sent = fake_server.requests[0]
    assert sent.method == "POST"
    assert sent.path == "/builds/b-1/failure"
    assert sent.json()["provenance"] == {
        "team": "main",
        "pipeline": "images",
        "instance_vars": {"os": "rhel-9"},
        "job": "build-image",
        "build_name": "17",
        "build_id": "4242",
        "build_url": "https://ci.example.com/teams/main/pipelines/images/jobs/build-image/builds/17"
        "?vars.os=%22rhel-9%22",
        "build_status": "failed",
        "created_by": "alice",
    }


def test_one_off_builds_link_to_the_build_by_id(fake_server: FakeServer, tmp_path: Path) -> None:
    env = harness.build_env(BUILD_JOB_NAME=None, BUILD_PIPELINE_NAME=None, BUILD_NAME=None)
    fake_server.queue(build_with_event(12, 75))

    harness.put({"url": fake_server.url}, {"build": "b-1", "state": 75}, tmp_path, env=env).result()

    provenance = fake_server.requests[0].json()["provenance"]
    assert provenance["build_url"] == "https://ci.example.com/builds/4242"
    assert provenance["job"] is None


def test_build_url_from_concourse_wins(fake_server: FakeServer, tmp_path: Path) -> None:
    env = harness.build_env(BUILD_URL="https://ci.example.com/builds/4242")
    fake_server.queue(build_with_event(12, 75))

    harness.put({"url": fake_server.url}, {"build": "b-1", "state": 75}, tmp_path, env=env).result()

    assert fake_server.requests[0].json()["provenance"]["build_url"] == env["BUILD_URL"]


def test_build_refs_are_quoted_in_paths(fake_server: FakeServer, tmp_path: Path) -> None:
    fake_server.queue(build_with_event(12, 75))

    harness.put({"url": fake_server.url}, {"build": "rhel:8+x", "state": 75}, tmp_path).result()

    assert fake_server.requests[0].path in ("/builds/rhel%3A8%2Bx/state", "/builds/rhel:8+x/state")


def test_the_api_key_is_sent_as_a_header_and_never_logged(fake_server: FakeServer, api_key: str) -> None:
    leaked = problem(503, "Service Unavailable", f"echoing X-API-Key {api_key}")
    fake_server.queue(leaked, leaked, feed(event(5)))

    run = harness.check({"url": fake_server.url, "api_key": api_key, "debug": True}, env=harness.FAST_BACKOFF)

    assert run.result() == [{"seq": "5", "build": "rhel-8.8-base-1", "state": "50"}]
    assert all(request.headers["x-api-key"] == api_key for request in fake_server.requests)
    assert api_key not in run.stderr
    assert "debug: GET" in run.stderr
    assert "<redacted>" in run.stderr


def test_an_api_key_of_the_wrong_type_is_not_echoed(fake_server: FakeServer) -> None:
    run = harness.check({"url": fake_server.url, "api_key": 8675309})

    assert run.error() == "buildstate check: source.api_key must be a non-empty string (quote it in YAML)"
    assert "8675309" not in run.stderr


def test_no_api_key_header_without_a_key(fake_server: FakeServer) -> None:
    harness.check({"url": fake_server.url}).result()

    assert "x-api-key" not in fake_server.requests[0].headers


def test_the_api_key_is_not_logged_when_the_request_fails(
    fake_server: FakeServer, api_key: str, tmp_path: Path
) -> None:
    fake_server.queue(problem(401, "Unauthorized", f"unknown key {api_key}"))

    run = harness.put(
        {"url": fake_server.url, "api_key": api_key, "debug": True},
        {"build": "b", "state": 5},
        tmp_path,
    )

    assert "401 Unauthorized: unknown key <redacted>" in run.error()
    assert api_key not in run.stderr


def test_check_pages_through_every_newer_event_without_a_cap(fake_server: FakeServer) -> None:
    fake_server.queue(
        feed(*(event(seq) for seq in range(10, 20)), has_more=True),
        feed(*(event(seq) for seq in range(20, 30)), has_more=True),
        feed(event(30)),
    )

    versions = harness.check({"url": fake_server.url}, {"seq": "10", "build": "x", "state": "50"})

    assert [version["seq"] for version in versions.result()] == [str(seq) for seq in range(10, 31)]
    assert [request.query["after"] for request in fake_server.requests] == ["9", "19", "29"]
    assert all(request.query["limit"] == "1000" for request in fake_server.requests)


def test_check_sends_the_filters_to_the_service(fake_server: FakeServer) -> None:
    source = {
        "url": fake_server.url,
        "platform": "aws",
        "os_version": "rhel-8.8",
        "image_type": "base",
        "build_id": "b-1",
        "states": [100, "failed", "25"],
        "event_types": ["state", "failure"],
    }

    harness.check(source).result()

    assert fake_server.requests[0].query == {
        "platform": "aws",
        "os_version": "rhel-8.8",
        "image_type": "base",
        "build_id": "b-1",
        "states": "100,failed,25",
        "type": "state,failure",
        "order": "desc",
        "limit": "1",
    }


def test_in_reports_an_event_that_no_longer_exists(fake_server: FakeServer, tmp_path: Path) -> None:
    fake_server.queue(problem(404, "Not Found", "no event 99"))

    error = harness.get({"url": fake_server.url}, {"seq": "99"}, tmp_path / "get").error()

    assert "event seq 99 no longer exists" in error
    assert "no event 99" in error
    assert len(fake_server.requests) == 1


def test_in_refuses_an_event_of_another_build(fake_server: FakeServer, tmp_path: Path) -> None:
    fake_server.queue(Reply(200, event(99, build_id="other")))

    run = harness.get({"url": fake_server.url}, {"seq": "99", "build": "mine"}, tmp_path / "get")

    assert "now belongs to build 'other', not 'mine'" in run.error()


def test_a_body_that_is_not_an_event_is_a_clear_error(fake_server: FakeServer) -> None:
    fake_server.queue(Reply(200, {"events": [{"seq": 1}], "next_after": 1, "has_more": False}))

    assert "without a usable" in harness.check({"url": fake_server.url}).error()


@pytest.fixture(scope="module")
def private_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_server(private_ca: trustme.CA) -> Any:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    private_ca.issue_cert("127.0.0.1").configure_cert(context)
    with FakeServer(tls=context) as server:
        server.fallback = lambda _request: feed(event(8))
        yield server


def test_tls_with_a_private_ca_from_ca_certs(tls_server: FakeServer, private_ca: trustme.CA) -> None:
    pem = private_ca.cert_pem.bytes().decode()

    run = harness.check({"url": tls_server.url, "ca_certs": [pem]})

    assert tls_server.url.startswith("https://127.0.0.1:")
    assert run.result() == [{"seq": "8", "build": "rhel-8.8-base-1", "state": "50"}]


def test_tls_without_the_ca_fails_at_once_with_a_hint(tls_server: FakeServer) -> None:
    started = time.monotonic()
    run = harness.check({"url": tls_server.url, "retry_seconds": 30})

    error = run.error()
    assert "TLS verification failed" in error
    assert "source.ca_certs" in error
    assert time.monotonic() - started < 10, "a certificate error is not worth retrying"
