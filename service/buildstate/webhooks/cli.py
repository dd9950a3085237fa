"""``buildstate webhooks create|list|test|disable|enable`` and ``buildstate events tail``.

``webhooks`` works on ``BUILDSTATE_DATABASE_URL`` directly, like ``keys`` and ``users``: the server need not
run. ``events tail`` follows a running service's ``/events/stream`` over HTTP, reconnecting with
``Last-Event-ID`` so that nothing is missed or repeated; it reads the service URL from ``--url`` or
``BUILDSTATE_URL`` and credentials from ``BUILDSTATE_API_KEY`` or ``BUILDSTATE_TOKEN`` (never from the
command line, where other local users could read them).
"""

# ruff: noqa: T201 - a console command talks on stdout
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from pydantic import ValidationError

from buildstate import paths
from buildstate.auth.cli import _fail, _operator, _print_json, _run, _when
from buildstate.config import Settings
from buildstate.errors import Problem
from buildstate.webhooks import service
from buildstate.webhooks.dispatcher import Dispatcher
from buildstate.webhooks.models import WebhookCreate, WebhookKind
from buildstate.webhooks.store import WebhookStore


def _create(settings: Settings, args: argparse.Namespace) -> int:
    try:
        body = WebhookCreate(
            name=args.name,
            url=args.url,
            kind=args.kind,
            platform=args.platform,
            os_version=args.os_version,
            image_type=args.image_type,
            states=args.states,
            event_types=args.event_types,
            secret=os.environ.get("BUILDSTATE_WEBHOOK_SECRET") or None,
        )
    except ValidationError as exc:
        print(f"buildstate: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}", file=sys.stderr)
        return 2
    try:
        created = _run(settings, lambda store: service.subscribe(store, settings, body, _operator()))
    except Problem as problem:
        return _fail(problem)
    if args.json:
        _print_json(created.model_dump(mode="json"))
        return 0
    print(f"created webhook {created.id} ({created.kind}) -> {created.url}")
    if created.kind != WebhookKind.CONCOURSE:
        print("signing secret (shown once; verify deliveries with it):")
        print(created.secret)
    return 0


def _list(settings: Settings, args: argparse.Namespace) -> int:
    hooks = _run(settings, lambda store: WebhookStore(store).all())
    if args.json:
        _print_json([h.public.model_dump(mode="json") for h in hooks])
        return 0
    print(f"{'ID':>4}  {'KIND':9} {'ENABLED':7} {'FAILS':>5}  {'CREATED':16}  NAME -> URL")
    for hook in hooks:
        h = hook.public
        print(
            f"{h.id:>4}  {h.kind.value:9} {'yes' if h.enabled else 'no':7} {h.consecutive_failures:>5}  "
            f"{_when(h.created_at):16}  {h.name} -> {h.url}"
            + (f"  ({h.disabled_reason})" if h.disabled_reason else "")
        )
    return 0


def _test(settings: Settings, args: argparse.Namespace) -> int:
    try:
        result = _run(
            settings,
            lambda store: service.send_test(Dispatcher(store, settings), args.webhook_id, _operator()),
        )
    except Problem as problem:
        return _fail(problem)
    outcome = f"HTTP {result.status_code}" if result.status_code is not None else result.error
    print(f"{'ok' if result.ok else 'failed'}: {outcome} in {result.duration_ms} ms")
    return 0 if result.ok else 1


def _set_enabled(enabled: bool) -> Any:
    def run(settings: Settings, args: argparse.Namespace) -> int:
        from datetime import UTC, datetime  # noqa: PLC0415

        try:
            stored = _run(
                settings,
                lambda store: WebhookStore(store).set_enabled(
                    args.webhook_id,
                    enabled=enabled,
                    reason=None if enabled else "disabled from the command line",
                    ctx=_operator(),
                    now=datetime.now(UTC),
                ),
            )
        except Problem as problem:
            return _fail(problem)
        print(f"webhook {stored.public.id} {'enabled' if enabled else 'disabled'}")
        return 0

    return run


# ---------------------------------------------------------------- events tail


def _line(event: dict[str, Any]) -> str:
    build = event["build"]
    what = {"failure": "FAILED", "reset": "RESET", "created": "created"}.get(event["type"], "")
    detail = event.get("message") or ""
    if event["type"] == "failure" and event.get("failure"):
        failure = event["failure"]
        detail = f"[{failure.get('component') or '-'}/{failure.get('error_code') or '-'}] {detail}"
    return (
        f"{event['seq']:>8}  {event['recorded_at'][:19].replace('T', ' ')}  {build['build_id']}  "
        f"{build['platform']}/{build['os_version']}/{build['image_type']}  "
        f"{event['state_code']:>3} {what or event['status']}  {detail}".rstrip()
    )


# A proxy or a restarting service answers these for a moment: worth trying again, like a refused connection.
_TRANSIENT_STATUSES = frozenset({502, 503, 504})
_MAX_BACKOFF_SECONDS = 10.0


class _Interrupted(Exception):
    """The stream could not be (re)opened or broke off; the reason, fit for one line."""


def _cause(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def _problem(resp: aiohttp.ClientResponse) -> str:
    """``401 Unauthorized: <detail>`` from a problem+json answer, or the start of any other body."""
    text = (await resp.text(errors="replace"))[:500]
    detail = text.strip()
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("detail"):
        detail = str(body["detail"])
    return f"{resp.status} {resp.reason}" + (f": {detail}" if detail else "")


def _unusable(exc: ValueError) -> str:
    """Why a stream could not be read, without echoing the bytes (a header carries the credential)."""
    if isinstance(exc, UnicodeDecodeError):
        return "the stream is not UTF-8 text: does --url name a buildstate service?"
    if isinstance(exc, json.JSONDecodeError):
        return f"an event's data is not JSON ({exc.msg}): does --url name a buildstate service?"
    return "a request header is not valid (a control character in BUILDSTATE_API_KEY or BUILDSTATE_TOKEN?)"


def _no_credential_hint() -> str:
    command = paths.command()
    return (
        "set BUILDSTATE_API_KEY to a key with the read scope "
        f"(`{command} keys create --name tail --scope read`), or BUILDSTATE_TOKEN to a token from POST /token"
    )


@dataclass
class _Progress:
    shown: int = 0
    last_id: str | None = None


async def _follow_once(
    session: aiohttp.ClientSession, stream_url: str, params: dict[str, str], headers: dict[str, str], *,
    progress: _Progress, args: argparse.Namespace,
) -> int | None:  # fmt: skip
    """One connection: an exit code when done (0: --count reached; 1: refused), None when the service
    closed the stream; raises ``_Interrupted`` or a connection error for the caller to retry."""
    request_headers = dict(headers)
    if progress.last_id is not None:
        request_headers["Last-Event-ID"] = progress.last_id
    async with session.get(stream_url, params=params, headers=request_headers) as resp:
        if resp.status in _TRANSIENT_STATUSES:
            raise _Interrupted(await _problem(resp))
        if resp.status != 200:
            reason = await _problem(resp)
            if resp.status == 401 and "X-API-Key" not in headers and "Authorization" not in headers:
                reason += f"; {_no_credential_hint()}"
            print(f"buildstate: GET {stream_url}: {reason}", file=sys.stderr)
            return 1
        if resp.content_type != "text/event-stream":
            print(
                f"buildstate: GET {stream_url}: answered 200 with {resp.content_type or 'no content type'}, "
                "not an event stream: does --url name a buildstate service?",
                file=sys.stderr,
            )
            return 1
        data: list[str] = []
        kind = ""
        received = False
        async for raw in resp.content:
            received = True
            line = raw.decode().rstrip("\r\n")
            if line.startswith("id:"):
                progress.last_id = line[3:].strip()
            elif line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif line == "" and data:
                event = json.loads("\n".join(data))
                data, ended, kind = [], kind == "end", ""
                if ended:  # the credential no longer reads the feed: reconnecting cannot help
                    print(f"buildstate: stream ended: {event.get('detail')}", file=sys.stderr)
                    return 1
                print(json.dumps(event) if args.json else _line(event), flush=True)
                progress.shown += 1
                if args.count is not None and progress.shown >= args.count:
                    return 0
    if not received:  # a service closes a stream it opened only after a heartbeat at least
        raise _Interrupted("the stream closed before its first line")
    return None


async def _tail(url: str, headers: dict[str, str], params: dict[str, str], args: argparse.Namespace) -> int:
    """Follow the stream, reconnecting with Last-Event-ID. Connection failures (and 502/503/504) are retried
    with backoff for ``--retry-seconds`` in a row, then it gives up with the URL and the cause; any other
    answer than 200 ends it at once."""
    stream_url = f"{url}/events/stream"
    progress = _Progress(last_id=params.pop("after", None))
    failing_since: float | None = None
    attempt = 0
    print(f"buildstate: following {stream_url}", file=sys.stderr, flush=True)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            try:
                done = await _follow_once(session, stream_url, params, headers, progress=progress, args=args)
            except (aiohttp.ClientError, TimeoutError) as exc:
                reason = _cause(exc)
            except _Interrupted as exc:
                reason = str(exc)
            except ValueError as exc:  # undecodable bytes or JSON in the stream, or a header aiohttp refuses
                print(f"buildstate: GET {stream_url}: {_unusable(exc)}", file=sys.stderr)
                return 1
            else:
                if done is not None:
                    return done
                failing_since, attempt = None, 0  # it was open: the service closed it; open it again
                continue
            now = time.monotonic()
            failing_since = now if failing_since is None else failing_since
            attempt += 1
            delay = min(2.0 ** (attempt - 1), _MAX_BACKOFF_SECONDS)
            if now - failing_since + delay > args.retry_seconds:
                print(
                    f"buildstate: cannot follow {stream_url}: {reason} (gave up after {attempt} "
                    f"attempt{'s' if attempt > 1 else ''} in {now - failing_since:.0f} s; "
                    f"--retry-seconds is {args.retry_seconds:g})",
                    file=sys.stderr,
                )
                return 1
            print(f"buildstate: {stream_url}: {reason}; retrying in {delay:g} s", file=sys.stderr, flush=True)
            await asyncio.sleep(delay)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds >= 0")
    return value


def _events_tail(_settings: Settings, args: argparse.Namespace) -> int:
    url = (args.url or os.environ.get("BUILDSTATE_URL") or "http://127.0.0.1:8080").rstrip("/")
    headers = {"Accept": "text/event-stream"}
    if key := os.environ.get("BUILDSTATE_API_KEY"):
        headers["X-API-Key"] = key
    elif token := os.environ.get("BUILDSTATE_TOKEN"):
        headers["Authorization"] = f"Bearer {token}"
    params = {
        name: str(value)
        for name in ("platform", "os_version", "image_type", "build_id", "states", "type", "after")
        if (value := getattr(args, name)) is not None
    }
    try:
        return asyncio.run(_tail(url, headers, params, args))
    except KeyboardInterrupt:
        return 0


# ---------------------------------------------------------------- parser


def add_commands(commands: Any) -> None:
    """Add ``webhooks`` and ``events`` to the ``buildstate`` command's subparsers."""
    hooks = commands.add_parser(
        "webhooks",
        help="manage webhook subscriptions",
        description="Subscribe URLs to build events, in BUILDSTATE_DATABASE_URL; the server need not run. "
        "Deliveries are signed per Standard Webhooks and retried for up to a day.",
    )
    actions = hooks.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser(
        "create",
        help="subscribe a URL",
        description="The signing secret is generated and printed once, or taken from "
        "BUILDSTATE_WEBHOOK_SECRET. For --kind concourse, pass the resource's check webhook URL with its "
        "?webhook_token=.",
    )
    create.add_argument("--name", required=True)
    create.add_argument("--url", required=True)
    create.add_argument("--kind", choices=[k.value for k in WebhookKind], default="json")
    create.add_argument("--platform")
    create.add_argument("--os-version", dest="os_version")
    create.add_argument("--image-type", dest="image_type")
    create.add_argument(
        "--state", dest="states", action="append", help="a code, failed, succeeded or reset (repeatable)"
    )
    create.add_argument(
        "--event-type", dest="event_types", action="append", choices=["created", "state", "failure", "reset"]
    )
    create.add_argument("--json", action="store_true")
    create.set_defaults(run=_create)

    listing = actions.add_parser("list", help="list subscriptions (never their secrets)")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=_list)

    for name, helptext, runner in (
        ("test", "send a signed test message now and show the answer", _test),
        ("disable", "stop delivering (queued deliveries wait)", _set_enabled(False)),
        ("enable", "resume delivering", _set_enabled(True)),
    ):
        action = actions.add_parser(name, help=helptext)
        action.add_argument("webhook_id", type=int)
        action.set_defaults(run=runner)

    events = commands.add_parser("events", help="follow the event feed")
    event_actions = events.add_subparsers(dest="action", required=True, metavar="ACTION")
    tail = event_actions.add_parser(
        "tail",
        help="print events as they happen",
        description="Follow GET /events/stream of a running service (--url or BUILDSTATE_URL, default "
        "http://127.0.0.1:8080), with BUILDSTATE_API_KEY or BUILDSTATE_TOKEN. Reconnects without missing an "
        "event; gives up with the reason once the service stayed unreachable for --retry-seconds.",
    )
    tail.add_argument("--url")
    tail.add_argument("--platform")
    tail.add_argument("--os-version", dest="os_version")
    tail.add_argument("--image-type", dest="image_type")
    tail.add_argument("--build", dest="build_id")
    tail.add_argument("--states", help="comma list of codes and failed, succeeded, reset")
    tail.add_argument("--type", help="comma list of created, state, failure, reset")
    tail.add_argument("--after", type=int, help="start after this seq (default: only new events)")
    tail.add_argument("--count", type=int, help="stop after this many events")
    tail.add_argument("--json", action="store_true", help="one JSON event per line")
    tail.add_argument(
        "--retry-seconds",
        type=_seconds,
        default=30.0,
        help="how long to keep trying while the service cannot be reached, before giving up with the "
        "reason (default 30; 0: one attempt)",
    )
    tail.set_defaults(run=_events_tail)
