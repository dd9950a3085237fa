"""wrk as the load generator: C, so it leaves the cores to the server; Lua scripts for keys and bodies.

Every run is bounded in time (``-d``) and by a socket timeout; traffic goes only to 127.0.0.1. The scripts'
``done`` hook prints one ``BENCHJSON`` line with the totals and the latency percentiles. A paced run
(``rate``) is open loop (``lua/paced.lua``): one connection per wrk thread, each on a fixed schedule, each
latency counted from the request's scheduled send time, so a slow answer's wait for the requests queued
behind it is counted (no coordinated omission, as wrk2 would; Debian has no wrk2).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

LUA = Path(__file__).resolve().parent / "lua"


def ensure_wrk() -> str:
    """wrk from Debian, installed with apt-get when missing and allowed (root), as scripts/test does."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise RuntimeError("wrk is not installed: apt-get install -y wrk (as root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(
        ["apt-get", "install", "-y", "-qq", "wrk"], env=env, capture_output=True, check=False
    ).returncode:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], env=env, capture_output=True, check=True)
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("apt-get install wrk did not provide wrk")
    return found


@dataclass(frozen=True)
class Load:
    """The numbers of one wrk run."""

    requests: int
    seconds: float
    errors: int
    error_detail: dict[str, int]
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    connections: int
    offered_rate: float | None
    open_loop: bool = False
    pacer_late_p99_ms: float | None = None  # paced: how late wrk's timers sent the requests they held back

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "rps": round(self.rps, 1),
            "requests": self.requests,
            "seconds": round(self.seconds, 2),
            "errors": self.errors,
            "error_detail": self.error_detail,
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
            "connections": self.connections,
            "offered_rate": self.offered_rate,
            "open_loop": self.open_loop,
            "pacer_late_p99_ms": self.pacer_late_p99_ms,
        }


def run(
    base_url: str,
    script: str,
    *,
    seconds: float,
    connections: int,
    threads: int = 1,
    env: dict[str, str] | None = None,
    rate: float | None = None,
    workdir: Path,
    path: str = "/",
) -> Load:
    """Run ``lua/<script>.lua`` against ``base_url`` for ``seconds``; the totals and percentiles."""
    host = urlsplit(base_url).hostname
    if host not in {"127.0.0.1", "localhost", "::1"}:
        raise ValueError(f"the bench only sends traffic to loopback, not {base_url}")
    binary = ensure_wrk()
    workdir.mkdir(parents=True, exist_ok=True)
    combined = workdir / f"{script}.lua"
    parts = ("common.lua", f"{script}.lua", "paced.lua")
    combined.write_text("\n".join((LUA / part).read_text() for part in parts))
    # Paced: one connection per thread, so each thread's request/response/delay are one connection's.
    threads = connections if rate else max(1, min(threads, connections))
    run_env = {
        **os.environ,
        **(env or {}),
        "BENCH_THREADS": str(threads),
        "BENCH_CONNECTIONS": str(connections),
        "BENCH_RATE": str(rate or 0),
    }
    command = [
        binary,
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "-s",
        str(combined),
        base_url.rstrip("/") + path,
    ]
    done = subprocess.run(
        command, check=False, env=run_env, capture_output=True, text=True, timeout=seconds + 60
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCHJSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    data = json.loads(line.removeprefix("BENCHJSON "))
    errors = data["errors"]
    lat = data["latency_us"]
    return Load(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        errors=sum(errors.values()),
        error_detail={k: v for k, v in errors.items() if v},
        p50_ms=lat["p50"] / 1000,
        p90_ms=lat["p90"] / 1000,
        p95_ms=lat["p95"] / 1000,
        p99_ms=lat["p99"] / 1000,
        max_ms=lat["max"] / 1000,
        connections=connections,
        offered_rate=rate,
        open_loop=bool(data.get("open_loop")),
        pacer_late_p99_ms=data["pacer_late_us"]["p99"] / 1000 if data.get("open_loop") else None,
    )
