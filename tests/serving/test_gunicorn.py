"""gunicorn as configured in gunicorn_conf: metrics summed over workers, SIGTERM drains, SIGHUP reloads."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from serving_harness import Response, Served, request, serve, service_env, wait_until

from buildstate.observability.metrics import FLUSH_SECONDS

pytestmark = pytest.mark.slow
BUILD = {"platform": "aws", "os_version": "rhel-8.8", "image_type": "base"}


def metric(served: Served, name: str, **labels: str) -> float:
    text = request(f"{served.url}/metrics").body
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


@contextmanager
def sqlite_write_lock(database_url: str) -> Iterator[None]:
    """Hold SQLite's write lock, as a long transaction would: writes wait (reads go on, WAL)."""
    conn = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def refuses(url: str) -> bool:
    try:
        request(url, timeout=2)
    except OSError:
        return True
    return False


def in_background(call: Callable[[], Response]) -> Future[Response]:
    pool = ThreadPoolExecutor(1)
    future = pool.submit(call)
    pool.shutdown(wait=False)
    return future


def test_metrics_scraped_from_any_worker_are_totals_over_all_workers(sqlite_url: str, tmp_path: Path) -> None:
    env = service_env(sqlite_url, tmp_path)
    with serve(env, tmp_path / "serve.log", workers=3) as served:
        # An idle worker wins every accept, so traffic stays on one worker; stopping the worker that took
        # each round makes the next round land on another, and leaves the stopped worker's counts behind
        # in its files, which must still be in the totals.
        for round_ in range(3):
            for n in range(20):
                rid = f"spread-{round_}-{n}"
                assert request(f"{served.url}/", headers={"X-Request-ID": rid}).status == 200
            busiest = Counter(
                e["pid"] for e in served.log() if str(e.get("request_id", "")).startswith(f"spread-{round_}-")
            ).most_common(1)[0][0]
            booted = len(served.worker_pids())
            os.kill(busiest, signal.SIGTERM)
            wait_until(lambda b=booted: len(served.worker_pids()) > b, 20, "a replacement worker")
        for n in range(6):
            build = {**BUILD, "build_id": f"sum-{n}"}
            assert request(f"{served.url}/builds", "POST", build, served.headers).status == 201

        handled_by = Counter(
            e["pid"] for e in served.log() if str(e.get("request_id", "")).startswith("spread-")
        )
        assert sum(handled_by.values()) == 60
        assert len(handled_by) >= 3, handled_by
        # A worker adds its request counts to the shared files every FLUSH_SECONDS (and when it stops):
        # a scrape may see another live worker's last second a moment late, never too many.
        deadline = time.monotonic() + FLUSH_SECONDS + 5
        while (seen := metric(served, "buildstate_http_requests_total", route="/", status="200")) < 60:
            assert time.monotonic() < deadline, f"{seen} of 60 requests counted"
            time.sleep(0.2)
        for _ in range(3):  # each scrape is answered by one worker, yet reports every worker's requests
            assert metric(served, "buildstate_http_requests_total", route="/", status="200") == 60
            assert metric(served, "buildstate_build_transitions_total", type="created") == 6
            assert (
                metric(served, "buildstate_http_requests_in_progress") == 1
            )  # the scrape; dead ones drop out
        print(f"requests per worker: {dict(handled_by)}")


def test_sigterm_stops_accepting_and_lets_in_flight_requests_finish(sqlite_url: str, tmp_path: Path) -> None:
    env = service_env(sqlite_url, tmp_path, BUILDSTATE_DB_TIMEOUT_SECONDS="20")
    with serve(env, tmp_path / "serve.log", workers=2) as served:
        build = {**BUILD, "build_id": "drained"}
        with sqlite_write_lock(sqlite_url):
            pending = in_background(
                lambda: request(f"{served.url}/builds", "POST", build, served.headers, 30)
            )
            time.sleep(0.5)  # the write waits for the lock inside a worker
            served.signal(signal.SIGTERM)
            wait_until(lambda: "Handling signal: term" in served.log_path.read_text(), 10, "SIGTERM handling")
            # Each worker notices within a second, stops accepting, and goes on with what it holds.
            wait_until(lambda: refuses(f"{served.url}/health"), 5, "the listeners to close")
            assert not pending.done()
        answer = pending.result(20)
        assert answer.status == 201, answer.body
        assert answer.body["build_id"] == "drained"
        assert served.process.wait(20) == 0
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as conn:
        assert conn.execute("SELECT count(*) FROM builds WHERE build_id = 'drained'").fetchone() == (1,)


def test_sighup_replaces_workers_without_refusing_or_dropping_a_request(
    sqlite_url: str, tmp_path: Path
) -> None:
    env = service_env(sqlite_url, tmp_path, BUILDSTATE_DB_TIMEOUT_SECONDS="20")
    with serve(env, tmp_path / "serve.log", workers=2) as served:
        old_workers = served.worker_pids()
        assert (
            request(f"{served.url}/builds", "POST", {**BUILD, "build_id": "hup"}, served.headers).status
            == 201
        )
        outcomes: list[int | str] = []
        stop = threading.Event()

        def traffic() -> None:
            deadline = time.monotonic() + 30
            while not stop.is_set() and time.monotonic() < deadline and len(outcomes) < 3000:
                try:
                    outcomes.append(request(f"{served.url}/builds/hup", headers=served.headers).status)
                except OSError as error:
                    outcomes.append(repr(error))

        threads = [threading.Thread(target=traffic) for _ in range(3)]
        for thread in threads:
            thread.start()
        with sqlite_write_lock(sqlite_url):
            state = {"state_code": 10}
            pending = in_background(
                lambda: request(f"{served.url}/builds/hup/state", "POST", state, served.headers, 30)
            )
            time.sleep(0.5)  # the write waits for the lock inside an old worker
            served.signal(signal.SIGHUP)
            wait_until(lambda: len(served.worker_pids()) >= 2 * len(old_workers), 20, "the new workers")
            time.sleep(0.5)
            assert not pending.done()
        answer = pending.result(20)
        wait_until(
            lambda: all(f"Worker exiting (pid: {pid})" in served.log_path.read_text() for pid in old_workers),
            20,
            "the old workers to exit",
        )
        time.sleep(0.5)  # traffic on the new workers alone
        stop.set()
        for thread in threads:
            thread.join(10)

        assert (answer.status, answer.body["state_code"]) == (200, 10)
        assert len(outcomes) > 50
        assert set(outcomes) == {200}, Counter(outcomes)
        new_workers = set(served.worker_pids()) - set(old_workers)
        assert len(new_workers) == 2
        assert served.process.poll() is None
        print(f"{len(outcomes)} requests across the reload, all 200; workers {old_workers} -> {new_workers}")


def test_a_stop_and_a_reload_log_no_error(sqlite_url: str, tmp_path: Path) -> None:
    """No 'Error while closing socket [Errno 9] Bad file descriptor' (uvloop closing gunicorn's wrappers),
    nor any other error or warning, from the start through a reload to the stop."""
    log_path = tmp_path / "serve.log"
    with serve(service_env(sqlite_url, tmp_path / "data"), log_path) as served:
        served.signal(signal.SIGHUP)
        wait_until(lambda: len(served.worker_pids()) >= 4, 30, "the reloaded workers")
        assert request(f"{served.url}/health").status == 200
    entries = served.log()
    assert "Shutting down: Master" in [e["message"] for e in entries]
    noisy = [e["message"] for e in entries if e["level"] not in {"info", "debug"} or "Errno" in e["message"]]
    assert noisy == [], noisy
