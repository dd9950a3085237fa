"""CPU time per request of one gunicorn worker, service against reference: what the pipeline costs.

    python -m bench.pipeline_cpu --requests 20000 --rounds 3 [--path /bench/ping]

Starts ``bench.serve service`` and ``bench.serve reference`` with one worker each on one fresh PostgreSQL
database (one key, ``read`` and ``write``), drives each with keep-alive requests from this process (8
connections, a bounded count), and reads the worker's own CPU time (utime + stime from ``/proc``) before
and after: CPU microseconds per request, which on a machine shared with other loads says far more than
requests per second. The ratio reference/service is what the throughput ratio would be if both were CPU
bound on the same cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import tempfile
import time
from pathlib import Path

from bench import db as databases
from bench import servers

TICKS = os.sysconf("SC_CLK_TCK")


def _worker(master: int) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True, check=False)
        pids = [int(p) for p in found.stdout.split()]
        if pids:
            nested = subprocess.run(
                ["pgrep", "-P", str(pids[0])], capture_output=True, text=True, check=False
            )
            inner = [int(p) for p in nested.stdout.split()]
            return inner[0] if inner else pids[0]
        time.sleep(0.2)
    raise RuntimeError("no worker")


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def _connection(port: int, request: bytes, count: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(count):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head.decode(errors="replace"))
            await reader.readexactly(length)
    finally:
        writer.close()


async def _drive(port: int, request: bytes, total: int, connections: int = 8) -> None:
    await asyncio.wait_for(
        asyncio.gather(*(_connection(port, request, total // connections) for _ in range(connections))), 300
    )


def measure(port: int, worker: int, request: bytes, total: int) -> float:
    asyncio.run(_drive(port, request, 2000))  # warm-up: caches, key, pools
    before = _cpu(worker)
    asyncio.run(_drive(port, request, total))
    sent = (total // 8) * 8  # what _drive's 8 connections send
    return (_cpu(worker) - before) / sent * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline_cpu")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--path", default="/bench/ping")
    parser.add_argument("--only", choices=("service", "reference"))
    parser.add_argument(
        "--before",
        type=Path,
        help="another checkout with the same schema (the database is this checkout's): its service "
        "measured in the same rounds",
    )
    parser.add_argument("--profile", type=Path, help="py-spy collapsed stacks of the service worker here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pipeline-cpu-"))
    db = databases.create("postgresql", work)
    try:
        key = servers.create_key(db, work)
        request = (
            f"GET {args.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {key}\r\nUser-Agent: bench\r\n\r\n"
        ).encode()
        made = {
            "service": servers.service_with_ping(db, work, work / "service.log", workers=1),
            "reference": servers.reference(db, work / "reference.log", workers=1),
        }
        if args.before is not None:
            made["before"] = servers.service_with_ping(
                db, work, work / "before.log", workers=1, root=args.before
            )
        chosen = [args.only] if args.only else list(made)
        results: dict[str, list[float]] = {name: [] for name in chosen}
        for name in chosen:
            made[name].start()
        try:
            workers = {name: _worker(made[name].process.pid) for name in chosen}  # type: ignore[union-attr]
            if args.profile is not None:
                spy = subprocess.Popen(
                    [
                        str(Path(os.sys.executable).parent / "py-spy"),
                        "record",
                        "-r",
                        "250",
                        "-f",
                        "raw",
                        "-o",
                        str(args.profile),
                        "-p",
                        str(workers[chosen[0]]),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                time.sleep(1)
                measure(made[chosen[0]].port, workers[chosen[0]], request, args.requests)
                spy.send_signal(2)
                spy.wait(30)
                return
            for _ in range(args.rounds):
                for name in chosen:
                    results[name].append(measure(made[name].port, workers[name], request, args.requests))
        finally:
            for name in chosen:
                made[name].stop()
        for name, values in results.items():
            print(
                f"{name:10s} CPU us/request: " + " ".join(f"{v:6.1f}" for v in values),
                f"min {min(values):.1f}",
            )
        if "service" in results and "reference" in results:
            print(f"ratio reference/service (min): {min(results['reference']) / min(results['service']):.3f}")
        if "before" in results and "reference" in results:
            print(f"ratio reference/before (min): {min(results['reference']) / min(results['before']):.3f}")
    finally:
        databases.drop(db)


if __name__ == "__main__":
    main()
