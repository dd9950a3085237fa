"""A private PostgreSQL server for one bench run, so that nobody restarting the machine's server mid-run
(fault-injection tests do) turns a measurement into a list of 503s.

Same binaries and the same defaults as the machine's cluster (fsync on, synchronous_commit on, 128 MB shared
buffers), on its own port and a data directory under /tmp, started with ``pg_ctl`` as the ``postgres`` user
and stopped (``-m fast``) when the run ends. ``BUILDSTATE_BENCH_PG`` set: use that server instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench.servers import free_port


def _binaries() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _as_postgres(argv: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


@contextlib.contextmanager
def private_server() -> Iterator[str | None]:
    """The admin URL of a fresh server, or None when none can be started here (then the default is used)."""
    binaries = _binaries()
    if os.environ.get("BUILDSTATE_BENCH_PG") or binaries is None or shutil.which("runuser") is None:
        yield None
        return
    root = Path(tempfile.mkdtemp(prefix="buildstate-bench-pg-"))
    data, sockets = root / "data", root / "run"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
    port = free_port()
    log = root / "server.log"
    try:
        subprocess.run(
            _as_postgres(
                [
                    str(binaries / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-instructions",
                ]
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )
        subprocess.run(
            _as_postgres(
                [
                    str(binaries / "pg_ctl"),
                    "-D",
                    str(data),
                    "-l",
                    str(log),
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c max_connections=200",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError):
        shutil.rmtree(root, ignore_errors=True)
        yield None
        return
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_postgres([str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
            capture_output=True,
            timeout=120,
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)
