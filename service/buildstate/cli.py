"""The ``buildstate`` console command.

buildstate serve     run the HTTP service under gunicorn (migrates first, once, before forking)
buildstate migrate   apply pending database migrations and exit
buildstate verify    check the tables kept on write against the event log (store/verify.py)
buildstate openapi   print the OpenAPI document that GET /openapi.json serves
buildstate keys      create, list and revoke API keys (auth/cli.py)
buildstate users     create, list, disable and re-password users (auth/cli.py)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import asyncpg

from buildstate import __version__
from buildstate.auth.cli import add_commands as add_access_commands
from buildstate.auth.secret import MissingSecretError, jwt_secret
from buildstate.config import Settings, SettingsError, load_settings
from buildstate.console import announce_store
from buildstate.errors import Problem
from buildstate.files import DataDirUnwritable
from buildstate.observability.logging import configure as configure_logging
from buildstate.store import create_store, describe_store, describe_url, migrate
from buildstate.store.verify import Report, verify
from buildstate.webhooks.cli import add_commands as add_live_commands

log = logging.getLogger("buildstate")


def _cmd_migrate(settings: Settings, _args: argparse.Namespace) -> int:
    announce_store(settings)
    applied = migrate(settings)
    target = describe_url(settings.effective_database_url)
    print(f"applied {', '.join(applied)} to {target}" if applied else f"{target} is up to date")
    return 0


def _cmd_verify(settings: Settings, args: argparse.Namespace) -> int:
    announce_store(settings)

    async def run() -> Report | str:
        store = create_store(settings)
        await store.open()
        try:
            status = await store.schema_status()
            if status.current != status.expected:
                return f"the schema is at version {status.current}, not {status.expected}: migrate first"
            return await verify(store)
        finally:
            await store.close()

    try:
        report = asyncio.run(run())
    except Problem as problem:  # the database is missing or unreachable
        report = problem.detail
    if isinstance(report, str):
        print(f"buildstate: {report}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        checked = ", ".join(f"{n} {name}" for name, n in report.checked.items() if name != "max_seq")
        print(f"{describe_url(settings.effective_database_url)}: checked {checked}")
        for finding in report.drift:
            print(f"drift in {finding.check}: {finding.subject}: {finding.detail}")
        if report.drift_count > len(report.drift):
            print(f"... {report.drift_count - len(report.drift)} more drift finding(s) not shown")
        for finding in report.conflicts:
            print(f"reference conflict: {finding.subject}: {finding.detail}")
        print(
            "ok: no drift"
            if report.ok
            else f"{report.drift_count} drift, {len(report.conflicts)} conflict(s)"
        )
    return 0 if report.ok else 1


def _cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    # The master imports neither the app nor prometheus_client: gunicorn_conf.on_starting migrates and sets
    # up the metrics directory first, and each worker builds the app after the fork.
    from gunicorn.app.base import BaseApplication  # noqa: PLC0415 - only `serve` needs gunicorn

    from buildstate import gunicorn_conf  # noqa: PLC0415

    bind = args.bind or settings.bind
    workers = args.workers or settings.workers
    try:  # before forking: production without a JWT secret stops here, with the reason
        jwt_secret(settings)
    except MissingSecretError as exc:
        print(f"buildstate: {exc}", file=sys.stderr)
        return 2

    class Service(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in vars(gunicorn_conf).items():
                if key in self.cfg.settings:
                    self.cfg.set(key, value)
            self.cfg.set("bind", bind)
            self.cfg.set("workers", workers)

        def load(self) -> Any:
            async def factory() -> Any:
                from buildstate.web.app import create_app  # noqa: PLC0415 - in the worker, after fork
                from buildstate.web.runner import graceful_runner  # noqa: PLC0415

                return graceful_runner(create_app(settings), settings)

            return factory

    host = bind.rsplit(":", 1)
    url = f"http://{host[0]}:{host[1]}" if len(host) == 2 else bind
    print(
        f"buildstate {__version__} on {url} with {workers} workers, "
        f"store {describe_url(settings.effective_database_url)}\n"
        f"  dashboard: {url}/ui/   try: curl {url}/health   API: {url}/openapi.json",
        flush=True,
    )
    Service().run()
    return 0


def _cmd_openapi(settings: Settings, _args: argparse.Namespace) -> int:
    from buildstate.web.app import openapi_document  # noqa: PLC0415 - only this command needs the app

    print(json.dumps(openapi_document(settings), indent=2))
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
        "worker (settings in buildstate/gunicorn_conf.py). Defaults come from BUILDSTATE_BIND and "
        "BUILDSTATE_WORKERS. SIGTERM drains in-flight requests; SIGHUP replaces the workers without "
        "refusing any request.",
    )
    serve.add_argument("--bind", help="host:port to listen on (default: BUILDSTATE_BIND or 127.0.0.1:8080)")
    serve.add_argument("--workers", type=int, help="worker processes (default: BUILDSTATE_WORKERS or 2)")
    serve.set_defaults(run=_cmd_serve)

    mig = commands.add_parser(
        "migrate",
        help="apply pending database migrations",
        description="Apply pending migrations to BUILDSTATE_DATABASE_URL and exit. Safe to run from "
        "several processes at once; `serve` runs it too.",
    )
    mig.set_defaults(run=_cmd_migrate)

    check = commands.add_parser(
        "verify",
        help="check the maintained tables against the event log",
        description="Recompute status counts, combinations, failures and each build's state from the event "
        "log and report any difference, and list builds whose build_id reads as a UUID (recorded by "
        "migration 0005). Reads only; safe on a live service. Exit status: 0 clean, 1 drift or "
        "conflicts found, 2 could not check.",
    )
    check.add_argument("--json", action="store_true", help="one JSON object on stdout")
    check.set_defaults(run=_cmd_verify)
    spec = commands.add_parser(
        "openapi",
        help="print the OpenAPI document",
        description="Print what GET /openapi.json serves (OpenAPI 3.1), without a running service: for "
        "generating clients or linting it (scripts/test runs Redocly's linter on it).",
    )
    spec.set_defaults(run=_cmd_openapi)
    add_access_commands(commands)
    add_live_commands(commands)
    return parser


# A reader that stops reading (`| head`) ends the command as SIGPIPE ends other Unix tools: 128 + 13.
BROKEN_PIPE_EXIT = 141


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"buildstate: settings: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    try:
        result: int = args.run(settings, args)
        sys.stdout.flush()  # here, not at exit, so that a closed pipe is met inside this handler
    except BrokenPipeError:
        # Whatever is still buffered would fail again at exit: stdout goes to /dev/null instead.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return BROKEN_PIPE_EXIT
    except SettingsError as exc:
        print(f"buildstate: settings: {exc}", file=sys.stderr)
        return 2
    except (OSError, asyncpg.PostgresError, Problem) as exc:  # the store is unreachable or refuses us
        if isinstance(exc, Problem):
            reason = exc.detail
        elif isinstance(exc, DataDirUnwritable):  # says itself what to do
            reason = str(exc)
        else:
            reason = f"{type(exc).__name__}: {exc}"
        print(f"buildstate: store {describe_store(settings)}: {reason}", file=sys.stderr)
        return 1
    return result
