"""The production topology on loopback (scripts/cluster): nginx -> 3 instances x 2 workers -> PostgreSQL.

Every request goes through nginx unless a test reads one instance on purpose (its /metrics, its /ready).
"""

from __future__ import annotations

import gzip
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import localcluster
import pytest
from prometheus_client.parser import text_string_to_metric_families
from serving_harness import Response, request

from buildstate.observability.metrics import FLUSH_SECONDS

pytestmark = pytest.mark.slow
Cluster = localcluster.Cluster
Headers = dict[str, str]


def call(cluster: Cluster, method: str, path: str, headers: Headers, body: Any = None) -> Response:
    return request(f"{cluster.url}{path}", method, body, headers)


def read_within_rate_limit(cluster: Cluster, path: str, headers: Headers) -> Response:
    """A GET that waits as a 429 tells it to (bounded: 20 tries), as a client reading hundreds of builds
    with one key does: the writers may have made more builds than one key's burst."""
    answer = call(cluster, "GET", path, headers)
    for _ in range(20):
        if answer.status != 429:
            break
        time.sleep(min(float(answer.headers.get("Retry-After", "1")), 2.0))
        answer = call(cluster, "GET", path, headers)
    return answer


def requests_counted(instance_url: str, method: str, route: str) -> float:
    text = request(f"{instance_url}/metrics").body
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "buildstate_http_requests_total"
        and (s.labels["method"], s.labels["route"]) == (method, route)
    )


def test_the_seed_pipeline_flow_works_through_nginx(cluster: Cluster, api_key: Headers) -> None:
    build = {"platform": "aws", "os_version": "rhel-8.8", "image_type": "base", "build_id": "seed-1"}
    created = call(cluster, "POST", "/builds", api_key, build)
    assert created.status == 201, created.body
    uuid = created.body["id"]
    for code in (10, 25, 50, 75, 100):
        answer = call(cluster, "POST", f"/builds/{uuid}/state", api_key, {"state_code": code})
        assert (answer.status, answer.body["state_code"]) == (200, code)
    assert call(cluster, "GET", f"/builds/{uuid}/state", api_key).body["status"] == "succeeded"

    other = call(cluster, "POST", "/builds", api_key, {**build, "build_id": "seed-2"}).body["id"]
    assert call(cluster, "POST", f"/builds/{other}/state", api_key, {"state_code": 10}).status == 200
    failure = {"error_message": "Pipeline failed", "error_code": "PIPELINE_FAILURE", "component": "concourse",
               "details": {"stage": "packer-build", "exit_code": 1}}  # fmt: skip
    failed = call(cluster, "POST", f"/builds/{other}/failure", api_key, failure)
    assert (failed.status, failed.body["status"]) == (200, "failed")
    refused = call(cluster, "POST", f"/builds/{other}/state", api_key, {"state_code": 25})
    assert refused.status == 409
    assert refused.headers["Content-Type"].startswith("application/problem+json")
    reset = call(cluster, "POST", f"/builds/{other}/reset", api_key, {"reason": "new base AMI"})
    assert (reset.status, reset.body["attempt"], reset.body["state_code"]) == (200, 2, 0)
    history = call(cluster, "GET", f"/builds/{other}/history", api_key).body
    assert [e["type"] for e in history["events"]] == ["created", "state", "failure", "reset"]


def test_nginx_applies_the_shipped_proxy_rules(cluster: Cluster, api_key: Headers) -> None:
    answer = call(cluster, "GET", "/builds?limit=1", {**api_key, "X-Request-ID": "concourse-run-7"})
    assert answer.headers["X-Request-ID"] == "concourse-run-7"  # once, not the app's plus nginx's
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert "default-src 'none'" in answer.headers["Content-Security-Policy"]
    assert answer.headers["Referrer-Policy"] == "no-referrer"
    assert "Server" not in answer.headers or answer.headers["Server"] == "nginx"  # no version
    logged = [Path(i.log).read_text() for i in cluster.instances]
    assert sum(text.count('"request_id": "concourse-run-7"') for text in logged) == 1

    made = call(cluster, "GET", "/health", {"X-Request-ID": "bad id; drop table"})
    assert len(made.headers["X-Request-ID"]) == 32  # nginx's own id replaced the unsafe one

    zipped = urllib.request.Request(f"{cluster.url}/openapi.json", headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(zipped, timeout=10) as response:
        assert response.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(response.read()).startswith(b"{")

    assert call(cluster, "GET", "/metrics", {}).status == 404  # not public through the proxy...
    assert request(f"{cluster.instances[0].url}/metrics").status == 200  # ...scraped per instance

    too_big = {"platform": "aws", "os_version": "x", "image_type": "y", "build_id": "big",
               "labels": {"blob": "x" * (1 << 20)}}  # fmt: skip
    assert call(cluster, "POST", "/builds", api_key, too_big).status == 413


def test_least_conn_spreads_requests_over_all_three_instances(cluster: Cluster, api_key: Headers) -> None:
    build = {"platform": "gcp", "os_version": "ubuntu-24.04", "image_type": "base", "build_id": "spread"}
    assert call(cluster, "POST", "/builds", api_key, build).status == 201
    before = [requests_counted(i.url, "GET", "/builds/{ref}") for i in cluster.instances]
    for _ in range(90):
        assert call(cluster, "GET", "/builds/spread", api_key).status == 200
    # Each worker adds its request counts to its instance's metrics every FLUSH_SECONDS.
    deadline = time.monotonic() + FLUSH_SECONDS + 5
    while True:
        after = [requests_counted(i.url, "GET", "/builds/{ref}") for i in cluster.instances]
        per_instance = [round(a - b) for a, b in zip(after, before, strict=True)]
        if sum(per_instance) >= 90 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    print(f"GET /builds/{{ref}} per instance: {per_instance}")
    assert sum(per_instance) == 90
    assert min(per_instance) >= 15, per_instance  # idle instances take turns


class Writer(threading.Thread):
    """A pipeline: registers builds and walks each through 10..100, retrying what did not get an answer
    with the same Idempotency-Key, as the Concourse resource does. It starts new builds until ``seconds``
    have passed (at most ``builds``) and always finishes the one it is on."""

    def __init__(self, cluster: Cluster, headers: Headers, name: str, builds: int, seconds: float) -> None:
        super().__init__(name=name)
        self.cluster, self.headers, self.builds = cluster, headers, builds
        self.deadline = time.monotonic() + seconds
        self.acknowledged: list[tuple[str, int, float]] = []
        self.retries: Counter[str] = Counter()
        self.failures: list[str] = []

    def send(self, path: str, body: dict[str, Any], key: str) -> Response | None:
        for _ in range(20):
            try:
                answer = request(
                    f"{self.cluster.url}{path}", "POST", body, {**self.headers, "Idempotency-Key": key}
                )
            except OSError as error:
                self.retries[type(error).__name__] += 1
            else:
                if answer.status < 500 and answer.status != 429:
                    return answer
                self.retries[str(answer.status)] += 1
                if answer.status == 429:  # rate limited: wait as told, like the resource does
                    time.sleep(min(float(answer.headers.get("Retry-After", "1")), 2.0))
            time.sleep(0.1)
        return None

    def run(self) -> None:
        for n in range(self.builds):
            if time.monotonic() > self.deadline:
                return
            build_id = f"{self.name}-{n}"
            body = {"platform": "azure", "os_version": "rhel-9", "image_type": "base", "build_id": build_id}
            steps = [("/builds", body, 0)] + [
                (f"/builds/{build_id}/state", {"state_code": code}, code) for code in (10, 25, 50, 75, 100)
            ]
            for path, payload, code in steps:
                answer = self.send(path, payload, f"{build_id}-{code}")
                if answer is None or answer.status not in (200, 201):
                    self.failures.append(f"{build_id} {code}: {answer and answer.status}")
                    return
                self.acknowledged.append((build_id, code, time.monotonic()))


def test_stopping_instances_mid_run_loses_no_acknowledged_write(cluster: Cluster) -> None:
    # Each pipeline has a key of its own, as in production (rate limits are per key).
    writers = [
        Writer(cluster, {"X-API-Key": cluster.create_key("read", "write", name=f"w{n}")}, f"w{n}", 200, 60)
        for n in range(4)
    ]
    for writer in writers:
        writer.start()
    time.sleep(1.0)
    cluster.stop_instance(0, signal.SIGTERM)  # a deploy: drains what it holds
    time.sleep(1.0)
    cluster.stop_instance(1, signal.SIGKILL)  # a crash: connections cut mid-request
    after_crash = time.monotonic()
    # Three more seconds from the crash, however long the drain above took (seconds on a loaded machine).
    for writer in writers:
        writer.deadline = after_crash + 3.0
    for writer in writers:
        writer.join(60)
    # The check reads every build: a key of its own, so the module's shared key's rate limit (spent by
    # the earlier tests) cannot turn a read into a 429.
    checker = {"X-API-Key": cluster.create_key("read", name="checker")}
    try:
        assert not any(writer.is_alive() for writer in writers)
        assert [f for writer in writers for f in writer.failures] == []
        acknowledged = [ack for writer in writers for ack in writer.acknowledged]
        assert len(acknowledged) % 6 == 0  # every build walked to 100
        later = sum(1 for *_, at in acknowledged if at > after_crash)
        assert later >= 4 * 6  # the surviving instance took over: every writer went on
        for build_id in {build for build, *_ in acknowledged}:
            answer = read_within_rate_limit(cluster, f"/builds/{build_id}/history", checker)
            assert answer.status == 200, (build_id, answer.status, answer.body)
            history = answer.body
            recorded = [e["state_code"] for e in history["events"]]
            assert recorded == [0, 10, 25, 50, 75, 100], (build_id, recorded)  # each once, none lost
            assert history["build"]["status"] == "succeeded"
        reads = [read_within_rate_limit(cluster, "/builds?limit=5", checker).status for _ in range(30)]
        assert set(reads) == {200}
        retries = sum((writer.retries for writer in writers), Counter())
        print(
            f"{len(acknowledged)} acknowledged writes ({len(acknowledged) // 6} builds), each recorded once; "
            f"{later} after the crash; client retries: {dict(retries)}"
        )
    finally:
        for index in (0, 1):
            cluster.start_instance(index)
        for index in (0, 1):
            cluster.wait_ready(index)


def _postgres_cluster() -> tuple[str, str]:
    if shutil.which("pg_ctlcluster") is None or shutil.which("pg_lsclusters") is None:
        pytest.skip("needs Debian's pg_ctlcluster to restart the local PostgreSQL")
    listed = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=True)
    for line in listed.stdout.splitlines():
        version, name, port, *_ = line.split()
        if port == "5432":
            return version, name
    pytest.skip("no PostgreSQL cluster on port 5432")


def test_postgres_restart_fails_ready_then_recovers_without_restarting_the_service(
    cluster: Cluster, api_key: Headers
) -> None:
    version, name = _postgres_cluster()
    boots_before = [Path(i.log).read_text().count("Booting worker") for i in cluster.instances]
    pids_before = [i.pid for i in cluster.instances]
    seen: list[int | None] = []
    done = threading.Event()

    def poll_ready() -> None:
        deadline = time.monotonic() + 90
        while not done.is_set() and time.monotonic() < deadline:
            seen.append(localcluster.http_status(f"{cluster.url}/ready", timeout=5))
            time.sleep(0.05)

    poller = threading.Thread(target=poll_ready)
    poller.start()
    try:
        time.sleep(0.3)
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, name, "restart"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        localcluster.wait_for(
            lambda: 200 in seen[seen.index(503) :] if 503 in seen else False, 60, "recovery"
        )
    finally:
        done.set()
        poller.join(10)
    statuses = Counter(seen)
    print(f"/ready through nginx around the restart: {dict(statuses)}")
    assert seen[0] == 200
    assert statuses[503] >= 1  # the outage was reported...
    assert seen[-1] == 200  # ...and cleared by itself
    for instance in cluster.instances:
        assert localcluster.http_status(f"{instance.url}/ready") == 200
    assert [i.pid for i in cluster.instances] == pids_before
    assert [Path(i.log).read_text().count("Booting worker") for i in cluster.instances] == boots_before
    build = {"platform": "aws", "os_version": "rhel-9", "image_type": "base", "build_id": "after-restart"}
    assert call(cluster, "POST", "/builds", api_key, build).status == 201
