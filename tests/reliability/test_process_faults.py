"""Processes killed with SIGKILL under a steady write load: nothing acknowledged is lost.

The load (``tests.support.WriteLoad``) logs every write the service acknowledged, with the event ``seq``
it answered; afterwards each of them must be in the feed, exactly as acknowledged. Requests are never
retried and each uses its own connection, so the only requests a crash can break are the ones in flight
on the killed process: at most one per client.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.reliability.conftest import Starter
from tests.support import (
    ROOT,
    WriteLoad,
    assert_every_ack_is_stored,
    assert_no_drift,
    call,
    children,
    wait_for,
)

sys.path.insert(0, str(ROOT / "scripts"))  # --import-mode=importlib: the cluster tool by path
import localcluster

pytestmark = pytest.mark.slow

ACKS_BEFORE_FAULT = 60
ACKS_AFTER_RECOVERY = 60


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_a_worker_killed_under_load_loses_no_acknowledged_write_and_is_replaced(
    store: str, start_service: Starter
) -> None:
    running = start_service(store, workers=2)
    wait_for(lambda: len(children(running.master)) == 2, 30, "two workers")
    victim = children(running.master)[0]

    with WriteLoad(running.url, running.headers, clients=4) as load:
        wait_for(lambda: len(load.acks) >= ACKS_BEFORE_FAULT, 30, "writes before the fault")
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        wait_for(
            lambda: victim not in children(running.master) and len(children(running.master)) == 2,
            30,
            "the master to replace the killed worker",
        )
        replaced_at = time.monotonic()
        replacement = next(pid for pid in children(running.master) if pid != victim)
        acked = len(load.acks)
        wait_for(lambda: len(load.acks) >= acked + ACKS_AFTER_RECOVERY, 30, "writes after the fault")

    print(
        f"{store}: worker {victim} killed; replaced in {replaced_at - killed_at:.2f}s; "
        f"{len(load.acks)} acknowledged, {len(load.failures)} failed: {[f.what for f in load.failures]}"
    )
    # Only requests in flight on the killed worker failed: connections it held, never an HTTP error.
    assert len(load.failures) <= load.clients, load.failures
    for failure in load.failures:
        assert not failure.what.isdigit(), f"an HTTP error answered a write: {failure}"
        assert failure.started <= killed_at + 0.25 and failure.ended >= killed_at - 0.25, failure
    assert_every_ack_is_stored(load, running.url, running.headers)
    # The replacement worker serves requests (gunicorn boots it, the log shows its pid answering).
    answered_by = {
        entry.get("pid")
        for line in running.service.log.read_text().splitlines()
        if line.startswith("{") and (entry := json.loads(line)).get("route")
    }
    assert {victim, replacement} <= answered_by


@pytest.fixture
def cluster(tmp_path: Path, pg_template: str) -> Iterator[localcluster.Cluster]:
    """``scripts/cluster up``: three instances of two workers behind nginx, on a PostgreSQL database."""
    del pg_template  # only asked for so that an unreachable server skips (or fails, in CI) the test
    started = localcluster.up(tmp_path / "cluster")
    try:
        yield started
    finally:
        localcluster.down(started)


def test_an_instance_killed_under_load_behind_nginx_loses_no_acknowledged_write(
    cluster: localcluster.Cluster,
) -> None:
    headers = {"X-API-Key": cluster.create_key("read", "write", "admin")}
    victim = cluster.instances[0]
    assert victim.pid is not None
    with WriteLoad(cluster.url, headers, clients=4) as load:
        wait_for(lambda: len(load.acks) >= ACKS_BEFORE_FAULT, 30, "writes before the fault")
        killed_at = time.monotonic()
        cluster.stop_instance(0, signal.SIGKILL)  # the master and both workers at once, as an OOM kill
        acked = len(load.acks)
        wait_for(lambda: len(load.acks) >= acked + ACKS_AFTER_RECOVERY, 30, "writes after the fault")
        recovered_at = time.monotonic()
        cluster.start_instance(0)
        cluster.wait_ready(0)
        acked = len(load.acks)
        wait_for(lambda: len(load.acks) >= acked + ACKS_AFTER_RECOVERY, 30, "writes after the restart")

    print(
        f"cluster: instance 0 (master {victim.pid}) killed; {len(load.acks)} acknowledged, "
        f"{len(load.failures)} failed: {[f.what for f in load.failures]}; "
        f"{load.acked_between(killed_at, recovered_at)} acknowledged while it was down"
    )
    # nginx answers 502 for a write that was in flight on the dead instance (it never re-sends a POST
    # that may have arrived) and moves every other request to the live instances.
    assert len(load.failures) <= load.clients, load.failures
    for failure in load.failures:
        assert failure.what == "502", failure
        assert failure.started <= killed_at + 0.25, failure
    stored = assert_every_ack_is_stored(load, cluster.url, headers)
    assert len(stored) >= 3 * ACKS_AFTER_RECOVERY
    assert call(f"{cluster.url}/ready").status == 200
    assert_no_drift(cluster.env())
