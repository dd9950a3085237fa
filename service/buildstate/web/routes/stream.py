"""``/events/stream``: the event feed as Server-Sent Events, and the per-worker live updates (the feed
watcher and the webhook dispatcher) that wake it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp_sse import EventSourceResponse, sse_response
from pydantic import Field

from buildstate.auth.scopes import READ
from buildstate.errors import ServiceUnavailable, Unauthorized
from buildstate.store.types import EventFilter
from buildstate.web.requests import EventFilters, Seq, event_filter, int_param, read_query
from buildstate.web.routing import HeaderParam, route
from buildstate.web.typedefs import AUTHENTICATOR, DISPATCHER, SETTINGS, STORE, STREAMS_CLOSING, WATCHER
from buildstate.webhooks.dispatcher import Dispatcher
from buildstate.webhooks.watch import FeedWatcher

log = logging.getLogger("buildstate.stream")


class StreamQuery(EventFilters):
    after: Seq | None = Field(
        default=None,
        description="Start after this seq (Last-Event-ID takes precedence); absent: only new events.",
    )


STREAM_PAGE = 200


async def _resume_point(request: web.Request, query: StreamQuery) -> int:
    last_id = request.headers.get("Last-Event-ID", "").strip()
    if last_id:
        return int_param(last_id, "Last-Event-ID (an event's seq)", slug="bad-last-event-id")
    if query.after is not None:
        return query.after
    return await request.app[STORE].max_seq()


# Before events are sent, the credential is checked again if its last check is older than this: a revoked
# key reads at most this long after its revocation, however long the period between idle checks is.
SEND_RECHECK_SECONDS = 1.0


class StreamCredential:
    """The credential a stream was opened with, checked again while it stays open.

    A stream lives for hours, its credential maybe not: every ``period`` seconds, and before events are sent
    when the last check is older than ``SEND_RECHECK_SECONDS``, the request's own headers go through
    ``Authenticator.identify`` again, the same checks as a new request. The first failure ends the stream
    with a final ``end`` event that says why (``key-revoked``, ``key-expired``, ``user-disabled``,
    ``token-withdrawn``, ``token-expired``, ``missing-scope``, ...)."""

    def __init__(self, request: web.Request, period: float) -> None:
        self._request = request
        self._period = period
        self._checked_at = time.monotonic()  # the auth middleware has just checked it

    @property
    def wait_seconds(self) -> float:
        return max(0.0, self._checked_at + self._period - time.monotonic())

    async def lost(self, *, max_age: float | None = None) -> dict[str, str] | None:
        """``None`` while the credential may still read the feed; otherwise why it may not. It is checked
        again when the last check is older than ``max_age`` (default: the period)."""
        age = time.monotonic() - self._checked_at
        if age < (self._period if max_age is None else min(max_age, self._period)):
            return None
        try:
            principal = await self._request.app[AUTHENTICATOR].identify(self._request.headers, fresh=True)
        except Unauthorized as refused:
            return {"reason": refused.type_slug, "detail": refused.detail}
        self._checked_at = time.monotonic()
        if not principal.has(READ):
            return {"reason": "missing-scope", "detail": "this credential no longer has the 'read' scope"}
        return None


@route(
    "GET",
    "/events/stream",
    summary="The event feed as Server-Sent Events: id = seq, event = type, data = the event; resumable. "
    "Ends with an 'end' event ({reason, detail}) when the credential is revoked, expires or loses 'read'",
    scope="read",
    tag="events",
    query=StreamQuery,
    responses={200: None},
    errors=(400, 422),
    media="text/event-stream",
    headers=(
        HeaderParam(
            "Last-Event-ID",
            "Resume after this seq: the id of the last event received (takes precedence over ?after=).",
            r"^[0-9]{1,18}$",
        ),
    ),
)
async def stream_events(request: web.Request) -> web.StreamResponse:
    query = read_query(request, StreamQuery)
    cursor = await _resume_point(request, query)
    where = event_filter(query)
    settings = request.app[SETTINGS]
    credential = StreamCredential(request, settings.stream_recheck_seconds)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    async with sse_response(
        request, headers=headers, ping_interval=settings.stream_heartbeat_seconds
    ) as stream:
        with contextlib.suppress(ConnectionResetError, asyncio.CancelledError):
            try:
                await _follow(stream, request, credential, cursor, where)
            except ServiceUnavailable as exc:
                # The answer has begun: a problem response is too late. End the stream cleanly so that the
                # client reconnects with Last-Event-ID (at once, not when its read times out).
                log.info("event stream ended: %s", exc.detail)
    return stream


async def _follow(
    stream: EventSourceResponse, request: web.Request, credential: StreamCredential, cursor: int,
    where: EventFilter,
) -> None:  # fmt: skip
    store, watcher = request.app[STORE], request.app[WATCHER]
    settings, closing = request.app[SETTINGS], request.app[STREAMS_CLOSING]
    while stream.is_connected() and not closing.is_set():
        if (lost := await credential.lost()) is not None:
            await stream.send(json.dumps(lost), event="end")
            return
        horizon = watcher.latest
        page = await store.list_events(
            where, after=cursor, before=None, limit=STREAM_PAGE, newest_first=False
        )
        if page.events and (lost := await credential.lost(max_age=SEND_RECHECK_SECONDS)) is not None:
            await stream.send(json.dumps(lost), event="end")  # nothing reaches a credential revoked since
            return
        for event in page.events:
            await stream.send(event.model_dump_json(), id=str(event.seq), event=event.type.value)
            cursor = event.seq
        if not page.has_more:
            idle = max(settings.stream_heartbeat_seconds, 1.0)
            await watcher.wait(horizon, min(idle, credential.wait_seconds))


async def live_updates_ctx(app: web.Application) -> AsyncIterator[None]:
    """Per worker: the feed watcher (LISTEN or poll) and the webhook dispatcher."""
    settings = app[SETTINGS]
    watcher = FeedWatcher(app[STORE], poll_seconds=settings.stream_poll_seconds)
    app[WATCHER] = watcher
    await watcher.start()
    dispatcher = app[DISPATCHER] = Dispatcher(app[STORE], settings, watcher)
    dispatching = None
    if settings.webhook_dispatcher:
        dispatching = asyncio.create_task(dispatcher.run(), name="webhook-dispatcher")
    yield
    if dispatching is not None:
        dispatching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await dispatching
    await watcher.stop()


async def close_streams(app: web.Application) -> None:
    """On shutdown, let open streams end so that gunicorn's graceful stop does not wait on them."""
    app[STREAMS_CLOSING].set()
    if WATCHER in app:
        app[WATCHER].bump(app[WATCHER].latest + 1)
