"""The ``buildstate`` console command.

buildstate serve     run the HTTP service under gunicorn (migrates first, once, before forking)
buildstate migrate   apply pending database migrations and exit
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from buildstate import __version__
from buildstate.config import Settings
from buildstate.store import describe_url, migrate

log = logging.getLogger("buildstate")


def _cmd_migrate(settings: Settings, _args: argparse.Namespace) -> int:
    applied = migrate(settings)
    target = describe_url(settings.effective_database_url)
    print(f"applied {', '.join(applied)} to {target}" if applied else f"{target} is up to date")
    return 0


def _cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from gunicorn.app.base import BaseApplication  # noqa: PLC0415 - only `serve` needs gunicorn

    from buildstate.web.app import create_app  # noqa: PLC0415

    bind = args.bind or settings.bind
    workers = args.workers or settings.workers
    applied = migrate(settings)
    if applied:
        print(f"migrated {describe_url(settings.effective_database_url)}: {', '.join(applied)}", flush=True)

    class Service(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            options: dict[str, Any] = {
                "bind": bind,
                "workers": workers,
                "worker_class": "aiohttp.GunicornUVLoopWebWorker",
                "graceful_timeout": 30,
                "timeout": 60,
                "keepalive": 75,
                "accesslog": "-" if args.access_log else None,
                "errorlog": "-",
                "proc_name": "buildstate",
            }
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            async def factory() -> Any:
                return create_app(settings)

            return factory

    host = bind.rsplit(":", 1)
    url = f"http://{host[0]}:{host[1]}" if len(host) == 2 else bind
    print(
        f"buildstate {__version__} on {url} with {workers} workers, "
        f"store {describe_url(settings.effective_database_url)}\n"
        f"  try: curl {url}/health   API: {url}/openapi.json",
        flush=True,
    )
    Service().run()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="buildstate",
        description="buildstate: where every VM image build stands. Settings come from BUILDSTATE_* "
        "environment variables (see .env.example).",
    )
    parser.add_argument("--version", action="version", version=f"buildstate {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the HTTP service",
        description="Apply pending migrations once, then run the service under gunicorn with the aiohttp "
        "worker. Defaults come from BUILDSTATE_BIND and BUILDSTATE_WORKERS.",
    )
    serve.add_argument("--bind", help="host:port to listen on (default: BUILDSTATE_BIND or 127.0.0.1:8080)")
    serve.add_argument("--workers", type=int, help="worker processes (default: BUILDSTATE_WORKERS or 2)")
    serve.add_argument("--access-log", action="store_true", help="log every request to stderr")
    serve.set_defaults(run=_cmd_serve)

    mig = commands.add_parser(
        "migrate",
        help="apply pending database migrations",
        description="Apply pending migrations to BUILDSTATE_DATABASE_URL and exit. Safe to run from "
        "several processes at once; `serve` runs it too.",
    )
    mig.set_defaults(run=_cmd_migrate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("BUILDSTATE_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    settings = Settings()
    result: int = args.run(settings, args)
    return result
