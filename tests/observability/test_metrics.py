"""/metrics in one process: bounded labels, build events counted once, feed lag, auth failures, the pool."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families

from buildstate.observability.metrics import LATENCY_BUCKETS, BoundedLabel, Metrics
from buildstate.web.typedefs import METRICS, SETTINGS

Client = TestClient[Any, Any]
BUILD = {"platform": "aws", "os_version": "rhel-8.8", "image_type": "base", "build_id": "m-1"}


async def scrape(client: Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for s in family.samples:
            samples[s.name, frozenset(s.labels.items())] = s.value
    return samples


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


async def test_requests_are_counted_by_route_template_never_by_raw_path(client: Client) -> None:
    for n in range(3):
        assert (await client.post("/builds", json={**BUILD, "build_id": f"m-{n}"})).status == 201
        assert (await client.get(f"/builds/m-{n}")).status == 200
    assert (await client.get("/builds/nope")).status == 404
    assert (await client.get("/no/such/route/123")).status == 404

    samples = await scrape(client)
    requests = "buildstate_http_requests_total"
    assert value(samples, requests, method="GET", route="/builds/{ref}", status="200") == 3
    assert value(samples, requests, method="GET", route="/builds/{ref}", status="404") == 1
    assert value(samples, requests, method="POST", route="/builds", status="201") == 3
    assert value(samples, requests, route="unmatched", status="404") == 1
    assert not any("m-1" in dict(labels).get("route", "") for _, labels in samples)
    histogram = "buildstate_http_request_duration_seconds_count"
    assert value(samples, histogram, method="GET", route="/builds/{ref}") == 4


async def test_each_recorded_event_counts_once_and_replays_do_not(client: Client) -> None:
    await client.post("/builds", json=BUILD)
    await client.post("/builds", json=BUILD)  # the same build again: 200, no new event
    for code in (10, 25, 25):  # 25 twice: the second is a replay
        assert (await client.post("/builds/m-1/state", json={"state_code": code})).status == 200
    keyed = {"Idempotency-Key": "k-50"}
    for _ in range(2):
        assert (await client.post("/builds/m-1/state", json={"state_code": 50}, headers=keyed)).status == 200
    failure = {"error_message": "packer exited 1", "component": "packer"}
    for _ in range(2):
        assert (await client.post("/builds/m-1/failure", json=failure)).status == 200
    assert (await client.post("/builds/m-1/reset", json={"reason": "retry"})).status == 200

    samples = await scrape(client)
    transitions = "buildstate_build_transitions_total"
    assert value(samples, transitions, platform="aws", type="created", state="0") == 1
    assert value(samples, transitions, platform="aws", type="state", state="10") == 1
    assert value(samples, transitions, platform="aws", type="state", state="25") == 1
    assert value(samples, transitions, platform="aws", type="state", state="50") == 1
    assert value(samples, transitions, platform="aws", type="failure", state="50") == 1
    assert value(samples, transitions, platform="aws", type="reset", state="0") == 1
    assert value(samples, transitions) == 6
    assert value(samples, "buildstate_build_failures_total", platform="aws", component="packer") == 1


async def test_feed_lag_is_observed_for_readers_following_the_feed(client: Client) -> None:
    await client.post("/builds", json=BUILD)
    await client.post("/builds/m-1/state", json={"state_code": 10})
    assert (await client.get("/events")).status == 200  # a first read from the start: not lag
    assert (await client.get("/events", params={"after": "1"})).status == 200
    assert (await client.get("/events", params={"after": "999"})).status == 200  # nothing new: no sample

    samples = await scrape(client)
    assert value(samples, "buildstate_event_feed_lag_seconds_count") == 1
    assert 0 <= value(samples, "buildstate_event_feed_lag_seconds_sum") < 60


async def test_auth_failures_are_counted_by_bounded_reason(client: Client) -> None:
    for reason in ("invalid-key", "invalid-key", "expired-token", "Bad Reason With Spaces"):
        client.app[METRICS].record_auth_failure(reason)
    samples = await scrape(client)
    assert value(samples, "buildstate_auth_failures_total", reason="invalid-key") == 2
    assert value(samples, "buildstate_auth_failures_total", reason="expired-token") == 1
    assert value(samples, "buildstate_auth_failures_total", reason="other") == 1


async def test_pool_usage_is_reported_for_postgresql_only(client: Client) -> None:
    samples = await scrape(client)
    pool = "buildstate_db_pool_connections"
    assert client.app is not None
    if client.app[SETTINGS].effective_database_url.startswith("sqlite"):
        assert value(samples, pool) == 0
    else:
        assert value(samples, pool, state="max") == 4
        assert value(samples, pool, state="in_use") + value(samples, pool, state="idle") >= 1


def test_client_supplied_label_values_are_capped_and_slug_shaped() -> None:
    label = BoundedLabel(limit=3)
    assert [label(v) for v in ("AWS", "gcp", "azure", "vsphere", "aws", None, "a b")] == [
        "aws", "gcp", "azure", "other", "aws", "none", "other",
    ]  # fmt: skip


def answered(metrics: Metrics, method: str, route: str, status: int, seconds: float) -> None:
    metrics.request_started()
    metrics.request_finished(method, route, status, seconds)


def test_two_apps_in_one_process_keep_separate_registries() -> None:
    first, second = Metrics(), Metrics()
    answered(first, "GET", "/health", 200, 0.001)
    first.flush()
    assert b'route="/health"' in first.exposition()
    assert b'route="/health"' not in second.exposition()
    assert b'method="OTHER"' not in first.exposition()


@pytest.mark.parametrize("method", ["BREW", "PROPFIND"])
def test_unknown_methods_share_one_label(method: str) -> None:
    metrics = Metrics()
    answered(metrics, method, "unmatched", 405, 0.001)
    metrics.flush()
    assert b'method="OTHER"' in metrics.exposition()


def test_requests_flushed_in_a_batch_read_as_if_observed_one_by_one() -> None:
    """The batch (count, sum, one bucket per duration) gives the counter and histogram that one
    ``inc``/``observe`` per request would have given, bucket bounds included."""
    durations = [0.0001, 0.005, 0.0050001, 0.01, 0.3, 2.5, 31.0, 0.02, 0.02]
    metrics, reference = Metrics(), CollectorRegistry()
    expected = Histogram("ref_seconds", "", buckets=LATENCY_BUCKETS, registry=reference)
    for seconds in durations:
        answered(metrics, "GET", "/builds", 200, seconds)
        expected.observe(seconds)
    assert (
        metrics.registry.get_sample_value(
            "buildstate_http_requests_total", {"method": "GET", "route": "/builds", "status": "200"}
        )
        is None
    )
    metrics.flush()
    labels = {"method": "GET", "route": "/builds"}
    get = metrics.registry.get_sample_value
    assert get("buildstate_http_requests_total", {**labels, "status": "200"}) == len(durations)
    assert get("buildstate_http_request_duration_seconds_sum", labels) == pytest.approx(sum(durations))
    for bound in [*LATENCY_BUCKETS, float("inf")]:
        le = "+Inf" if bound == float("inf") else repr(bound)
        assert get("buildstate_http_request_duration_seconds_bucket", {**labels, "le": le}) == (
            reference.get_sample_value("ref_seconds_bucket", {"le": le})
        ), le
    metrics.flush()  # nothing new: nothing added twice
    assert get("buildstate_http_requests_total", {**labels, "status": "200"}) == len(durations)


def test_requests_in_progress_is_the_live_count() -> None:
    metrics = Metrics()
    metrics.request_started()
    metrics.request_started()
    assert metrics.registry.get_sample_value("buildstate_http_requests_in_progress") == 2
    metrics.request_finished("GET", "/health", 200, 0.001)
    metrics.request_finished("GET", "/health", 200, 0.001)
    assert metrics.registry.get_sample_value("buildstate_http_requests_in_progress") == 0


async def test_refused_requests_reach_the_auth_failure_counter(anon_client: Client) -> None:
    assert (await anon_client.get("/builds")).status == 401
    assert (await anon_client.get("/builds", headers={"X-API-Key": "bs_00000000_nope"})).status == 401
    samples = await scrape(anon_client)  # /metrics is public, and each app has its own registry
    refused = sum(v for (name, _), v in samples.items() if name == "buildstate_auth_failures_total")
    assert refused == 2


async def test_platform_and_component_labels_come_only_from_the_configured_lists(
    make_client: Any, settings: Any, make_key: Any
) -> None:
    """Not first come, first served per process: 100 made-up platforms cannot add a series, nor push a
    listed platform into ``other`` (issue 13)."""
    listed = settings.model_copy(
        update={"metrics_platforms": ["aws", "gcp"], "metrics_components": ["packer"]}
    )
    client = await make_client(listed, headers={"X-API-Key": await make_key("admin")})
    for n in range(100):
        body = {**BUILD, "platform": f"junk-{n}", "build_id": f"junk-{n}"}
        assert (await client.post("/builds", json=body)).status == 201
        failure = {"error_message": "x", "component": f"made-up-{n}"}
        assert (await client.post(f"/builds/junk-{n}/failure", json=failure)).status == 200
    for platform in ("aws", "gcp"):
        real = {**BUILD, "platform": platform, "build_id": f"real-{platform}"}
        assert (await client.post("/builds", json=real)).status == 201
    samples = await scrape(client)
    platforms = {dict(labels).get("platform") for _, labels in samples} - {None}
    components = {dict(labels).get("component") for _, labels in samples} - {None}
    assert platforms == {"aws", "gcp", "other"}
    assert components == {"other"}
    transitions = "buildstate_build_transitions_total"
    assert value(samples, transitions, platform="other", type="created") == 100
    assert value(samples, transitions, platform="aws", type="created") == 1


async def test_metrics_are_public_by_choice_and_carry_no_path_name_or_secret(
    make_client: Any, client: Client, admin_key: str
) -> None:
    """/metrics answers without a credential (Prometheus scrapes each instance directly, and nginx does
    not serve it: docs/security.md); so it holds counts only, by route template and listed names."""
    secret_build = "customer-acme-secret-project-1"
    assert (
        await client.post("/builds", json={**BUILD, "platform": "acme-private", "build_id": secret_build})
    ).status == 201
    await client.get(f"/builds/{secret_build}?token={admin_key}")
    anonymous = await make_client()
    response = await anonymous.get("/metrics")
    assert response.status == 200
    text = await response.text()
    for leak in (secret_build, "acme-private", admin_key, admin_key[:11], "token="):
        assert leak not in text
