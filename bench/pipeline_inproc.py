"""Per-request CPU of the whole request path in one process, without sockets: aiohttp's own request handler
(the HTTP parser, the app and its middlewares, the response writer) fed request bytes by a transport that
discards what it is given. Process CPU time per request, minimum over batches (interference only adds),
so two versions of the pipeline compare even on a busy machine. Only ``/bench/ping``: a request counts as
answered when its body ``{"ok":true}`` has been written, which no other route answers.

    python -m bench.pipeline_inproc [--requests 500] [--batches 60]
        [--reference] [--profile out.prof]

Needs the shared PostgreSQL (``BUILDSTATE_BENCH_PG``): one throwaway database with one key. The access log
goes to a file, as under gunicorn (stderr is redirected to it).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import ctypes
import logging
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

from bench import db as databases
from bench import servers


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = 0
        self.waiter: asyncio.Future[None] | None = None
        self._closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name in {"peername", "sockname"}:
            return ("127.0.0.1", 40000)
        return default

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True

    def write(self, data: Any) -> None:
        self._wrote(data)

    def writelines(self, data: Any) -> None:
        for chunk in data:
            self._wrote(chunk)

    def _wrote(self, data: Any) -> None:
        self.written += 1
        if self.waiter is not None and not self.waiter.done() and bytes(data[-11:]) == b'{"ok":true}':
            self.waiter.set_result(None)

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return False


async def _run(args: argparse.Namespace, request: bytes) -> list[float]:
    from aiohttp import web  # noqa: PLC0415

    from bench.reference import reference_app  # noqa: PLC0415
    from bench.serve import service_app  # noqa: PLC0415

    app = await (reference_app() if args.reference else service_app())
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=75)
    await runner.setup()
    try:
        server = runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        protocol = server()
        transport = _Transport()
        protocol.connection_made(transport)

        async def one() -> None:
            transport.waiter = loop.create_future()
            protocol.data_received(request)
            await transport.waiter

        for _ in range(500):
            await one()
        times = []
        profiler = cProfile.Profile() if args.profile else None
        # Under ``valgrind --tool=callgrind --instr-atstart=no``: a library whose cg_start/cg_stop
        # switch callgrind's counting on and off (CALLGRIND_START/STOP_INSTRUMENTATION), so that only the
        # measured requests are counted: instructions per request, independent of the machine's load.
        around = (
            ctypes.CDLL(os.environ["BENCH_CALLGRIND_LIB"]) if os.environ.get("BENCH_CALLGRIND_LIB") else None
        )
        if around is not None:
            around.cg_start()
        for _ in range(args.batches):
            if profiler:
                profiler.enable()
            started = time.process_time()
            for _ in range(args.requests):
                await one()
            times.append((time.process_time() - started) / args.requests * 1e6)
            if profiler:
                profiler.disable()
        if around is not None:
            around.cg_stop()
        if profiler:
            profiler.dump_stats(args.profile)
        return times
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline_inproc")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--path", default="/bench/ping")
    parser.add_argument("--reference", action="store_true")
    parser.add_argument("--profile")
    parser.add_argument("--keep-log", action="store_true")
    args = parser.parse_args()
    if args.path != "/bench/ping":
        parser.error('only /bench/ping: an answer is recognised by its body, {"ok":true}')
    work = Path(tempfile.mkdtemp(prefix="pipeline-inproc-"))
    db = databases.create("postgresql", work)
    try:
        key = servers.create_key(db, work)
        env = servers.service_env(db, work, 1)
        for name, value in env.items():
            if name.startswith("BUILDSTATE_") or name == "BENCH_REFERENCE_DSN":
                os.environ[name] = value
        os.environ["BENCH_REFERENCE_DSN"] = db.url
        os.environ["BUILDSTATE_JWT_SECRET"] = secrets.token_urlsafe(48)
        from buildstate.config import load_settings  # noqa: PLC0415
        from buildstate.observability.logging import configure  # noqa: PLC0415

        log = work / "access.log"
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        saved = os.dup(2)
        os.dup2(fd, 2)
        settings = load_settings()
        configure(settings.log_level, settings.log_format)
        request = (
            f"GET {args.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {key}\r\nUser-Agent: bench\r\n\r\n"
        ).encode()
        try:
            times = uvloop.run(_run(args, request))
        finally:
            for handler in logging.getLogger().handlers:  # what the access log holds, as at exit
                handler.flush()
            sys.stderr.flush()
            os.dup2(saved, 2)
        lines = log.read_text().count("\n")
        print(
            f"{'reference' if args.reference else 'service'} {args.path}: us/request min {min(times):.1f} "
            f"median {sorted(times)[len(times) // 2]:.1f}; log lines {lines}"
        )
        if not args.keep_log:
            log.unlink()
    finally:
        databases.drop(db)


if __name__ == "__main__":
    main()
