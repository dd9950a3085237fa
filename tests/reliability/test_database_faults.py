"""The database fails under a steady write load: clear 503s while it does, recovery without a restart, and
nothing acknowledged lost.

- PostgreSQL stopped and started again (``pg_ctlcluster``) while the service runs.
- SQLite with several workers and many concurrent writers: the lock is waited for, never reported.
- SQLite on a full file system (a small tmpfs): 503, an intact database, and writes again once space returns.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.reliability.conftest import Starter
from tests.support import (
    WriteLoad,
    assert_every_ack_is_stored,
    assert_no_drift,
    call,
    children,
    wait_for,
)

pytestmark = pytest.mark.slow

DB_TIMEOUT_SECONDS = 2.0
OUTAGE_SECONDS = 3.0


# ---------------------------------------------------------------- PostgreSQL goes away


def _pg_cluster() -> tuple[str, str] | None:
    """The machine's PostgreSQL cluster (version, name), if this process may restart it."""
    if shutil.which("pg_ctlcluster") is None or os.geteuid() != 0 or not Path("/etc/postgresql").is_dir():
        return None
    versions = sorted(p.name for p in Path("/etc/postgresql").iterdir() if (p / "main").is_dir())
    return (versions[0], "main") if versions else None


def _pg_ctl(action: str, cluster: tuple[str, str]) -> subprocess.CompletedProcess[str]:
    fast = ["-m", "fast"] if action == "stop" else []  # stop at once, rolling back open transactions
    command = ["pg_ctlcluster", "--skip-systemctl-redirect", *cluster, action, *fast]
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)


def _pg_ready() -> bool:
    done = subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"], check=False, timeout=10)
    return done.returncode == 0


@contextlib.contextmanager
def postgres_down(cluster: tuple[str, str]) -> Iterator[None]:
    """PostgreSQL stopped for the block, and started again whatever happens: other test runs on this
    machine may share the server (and ``scripts/test`` starts it when it finds it down)."""
    stopped = _pg_ctl("stop", cluster)
    assert stopped.returncode == 0, stopped.stderr
    try:
        yield
    finally:
        started = _pg_ctl("start", cluster)
        if started.returncode != 0 and not _pg_ready():  # "already running" is fine
            raise AssertionError(f"PostgreSQL did not start again: {started.stderr}")
        wait_for(_pg_ready, 60, "PostgreSQL to accept connections again")


def test_postgres_outage_fails_fast_with_503_and_recovers_without_a_restart(start_service: Starter) -> None:
    cluster = _pg_cluster()
    if cluster is None:
        pytest.skip("needs root and pg_ctlcluster to stop and start the local PostgreSQL")
    if not (os.environ.get("CI") or os.environ.get("BUILDSTATE_TEST_RESTART_PG")):
        # The server is the machine's: stopping it fails whatever else is using it at that moment
        # (another developer's test run). CI runs alone, so it always runs there; locally, opt in.
        pytest.skip("stops the shared PostgreSQL server: runs under CI, or with BUILDSTATE_TEST_RESTART_PG=1")
    running = start_service("postgresql", workers=2, BUILDSTATE_DB_TIMEOUT_SECONDS=str(DB_TIMEOUT_SECONDS))
    workers = children(running.master)

    with WriteLoad(running.url, running.headers, clients=4) as load:
        wait_for(lambda: len(load.acks) >= 40, 30, "writes before the outage")
        with postgres_down(cluster):
            down_at = time.monotonic()
            time.sleep(OUTAGE_SECONDS)
            ready = call(f"{running.url}/ready")
            stopped_for = time.monotonic() - down_at
        back_at = time.monotonic()  # PostgreSQL accepts connections again
        acked = len(load.acks)
        wait_for(lambda: len(load.acks) >= acked + 60, 60, "writes after PostgreSQL returned")

    during = [f for f in load.failures if down_at <= f.started and f.ended <= back_at]
    slowest = max((f.ended - f.started for f in load.failures), default=0.0)
    resumed = min(ack.at for ack in load.acks if ack.at >= back_at) - back_at
    print(
        f"postgresql stopped {stopped_for:.1f}s, back after {back_at - down_at:.1f}s: "
        f"{len(load.acks)} acknowledged, {len(load.failures)} failed ({len(during)} while down, slowest "
        f"{slowest:.2f}s), statuses {sorted({f.what for f in load.failures})}; the first write was "
        f"acknowledged {resumed:.2f}s after PostgreSQL accepted connections again"
    )
    assert ready.status == 503 and ready.body["status"] == "unavailable"
    assert during, "no request saw the outage"
    for failure in load.failures:
        # Every failed write was a clear, fast 503: no 500, no dropped connection, no hang.
        assert (failure.what, failure.content_type) == ("503", "application/problem+json"), failure
        assert failure.ended - failure.started <= DB_TIMEOUT_SECONDS + 1.5, failure
    # The same processes serve again: the pool reconnected by itself.
    assert children(running.master) == workers
    assert call(f"{running.url}/ready").status == 200
    assert_every_ack_is_stored(load, running.url, running.headers)


# ---------------------------------------------------------------- SQLite under several writers


def test_sqlite_with_several_workers_and_writers_never_reports_a_lock(start_service: Starter) -> None:
    running = start_service("sqlite", workers=4)
    started = time.monotonic()
    with WriteLoad(running.url, running.headers, clients=8) as load:
        wait_for(lambda: len(load.acks) >= 600, 90, "600 acknowledged writes")
    seconds = time.monotonic() - started
    print(
        f"sqlite, 4 workers, 8 writers: {len(load.acks)} writes in {seconds:.1f}s, failures {load.failures}"
    )
    # Writers queue for SQLite's one write lock (BEGIN IMMEDIATE, busy timeout); under this load none waits
    # long enough for the 503 the store would answer, and no client ever sees "database is locked".
    assert load.failures == []
    assert "locked" not in running.service.log.read_text()
    assert_every_ack_is_stored(load, running.url, running.headers)


# ---------------------------------------------------------------- SQLite on a full disk


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def _fill(directory: Path) -> Path:
    """Write a file until the file system is full."""
    filler = directory / "filler"
    chunk = b"\0" * (64 * 1024)
    with filler.open("wb") as handle:
        try:
            while True:
                handle.write(chunk)
                handle.flush()
        except OSError:
            pass
    return filler


def test_sqlite_on_a_full_disk_answers_503_stays_intact_and_recovers(
    start_service: Starter, tmp_path: Path
) -> None:
    with small_tmpfs(tmp_path / "small", "16m") as disk:
        database = disk / "buildstate.db"
        running = start_service("sqlite", database_url=f"sqlite:///{database}", verify_at_end=False)
        with WriteLoad(running.url, running.headers, clients=2) as load:
            wait_for(lambda: len(load.acks) >= 30, 30, "writes before the disk fills")
            filler = _fill(disk)
            full_at = time.monotonic()
            wait_for(lambda: len(load.failures) >= 20, 30, "writes refused on the full disk")
            reads = call(f"{running.url}/builds?limit=5", headers=running.headers)
            filler.unlink()
            freed_at = time.monotonic()
            acked = len(load.acks)
            wait_for(lambda: len(load.acks) >= acked + 30, 30, "writes after space returned")

        refused = [f for f in load.failures if full_at <= f.started <= freed_at]
        print(
            f"sqlite on a full 16 MiB tmpfs: {len(load.acks)} acknowledged, {len(load.failures)} refused "
            f"({len(refused)} while full), statuses {sorted({f.what for f in load.failures})}"
        )
        for failure in load.failures:
            assert (failure.what, failure.content_type) == ("503", "application/problem+json"), failure
        assert reads.status == 200  # reading needs no space
        with contextlib.closing(sqlite3.connect(database)) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert_every_ack_is_stored(load, running.url, running.headers)
        running.service.stop()
        assert_no_drift(running.env)  # while the tmpfs still holds the database
