"""``/events/stream`` (Server-Sent Events) and ``/admin/webhooks`` (subscriptions and their deliveries)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Literal

from aiohttp import web
from aiohttp_sse import EventSourceResponse, sse_response
from pydantic import BaseModel, ConfigDict, Field

from buildstate.auth.scopes import READ
from buildstate.errors import ServiceUnavailable, Unauthorized
from buildstate.store.base import EventFilter
from buildstate.web.routes import (
    EventFilters,
    HeaderParam,
    Seq,
    event_filter,
    int_param,
    json_response,
    read_body,
    read_query,
    route,
    write_context,
)
from buildstate.web.typedefs import AUTHENTICATOR, DISPATCHER, SETTINGS, STORE, STREAMS_CLOSING, WATCHER
from buildstate.webhooks import service
from buildstate.webhooks.dispatcher import Dispatcher
from buildstate.webhooks.models import (
    Delivery,
    DeliveryPage,
    Webhook,
    WebhookCreate,
    WebhookCreated,
    WebhookList,
    WebhookTestResult,
)
from buildstate.webhooks.store import WebhookStore
from buildstate.webhooks.watch import FeedWatcher

log = logging.getLogger("buildstate.stream")

# ---------------------------------------------------------------- event stream


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
            principal = await self._request.app[AUTHENTICATOR].identify(self._request.headers)
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


# ---------------------------------------------------------------- webhooks admin


def _hooks(request: web.Request) -> WebhookStore:
    return WebhookStore(request.app[STORE])


def _webhook_id(request: web.Request, name: str = "id") -> int:
    return int_param(request.match_info[name], name, slug="bad-id")


@route(
    "POST",
    "/admin/webhooks",
    summary="Subscribe a URL to events (the signing secret is shown once)",
    scope="admin",
    tag="webhooks",
    body=WebhookCreate,
    responses={201: WebhookCreated},
    errors=(400, 413, 415, 422, 503),
    action="webhook.create",
)
async def create_webhook(request: web.Request) -> web.Response:
    body, raw = await read_body(request, WebhookCreate)
    created = await service.subscribe(
        request.app[STORE], request.app[SETTINGS], body, write_context(request, raw)
    )
    return json_response(created, status=201)


@route(
    "GET", "/admin/webhooks", summary="Every webhook subscription", scope="admin", tag="webhooks",
    responses={200: WebhookList},
)  # fmt: skip
async def list_webhooks(request: web.Request) -> web.Response:
    return json_response(WebhookList(webhooks=[h.public for h in await _hooks(request).all()]))


@route(
    "GET", "/admin/webhooks/{id}", summary="One webhook subscription", scope="admin", tag="webhooks",
    responses={200: Webhook}, errors=(400, 404),
)  # fmt: skip
async def get_webhook(request: web.Request) -> web.Response:
    return json_response((await _hooks(request).get(_webhook_id(request))).public)


async def _set_enabled(request: web.Request, *, enabled: bool) -> web.Response:
    stored = await _hooks(request).set_enabled(
        _webhook_id(request),
        enabled=enabled,
        reason=None if enabled else "disabled by an admin",
        ctx=write_context(request, b""),
        now=datetime.now(UTC),
    )
    return json_response(stored.public)


@route(
    "POST", "/admin/webhooks/{id}/disable", summary="Stop delivering (queued deliveries wait)",
    scope="admin", tag="webhooks", responses={200: Webhook}, errors=(400, 404), action="webhook.disable",
)  # fmt: skip
async def disable_webhook(request: web.Request) -> web.Response:
    return await _set_enabled(request, enabled=False)


@route(
    "POST", "/admin/webhooks/{id}/enable", summary="Resume delivering, with a fresh failure count",
    scope="admin", tag="webhooks", responses={200: Webhook}, errors=(400, 404), action="webhook.enable",
)  # fmt: skip
async def enable_webhook(request: web.Request) -> web.Response:
    return await _set_enabled(request, enabled=True)


@route(
    "POST", "/admin/webhooks/{id}/test", summary="Send a signed test message now and report the answer",
    scope="admin", tag="webhooks", responses={200: WebhookTestResult}, errors=(400, 404, 503),
    action="webhook.test",
)  # fmt: skip
async def test_webhook(request: web.Request) -> web.Response:
    webhook_id = _webhook_id(request)
    result = await service.send_test(request.app[DISPATCHER], webhook_id, write_context(request, b""))
    return json_response(result)


class DeliveryQuery(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    status: Literal["pending", "delivering", "delivered", "dead"] | None = None
    before: Annotated[int, Field(ge=1, le=2**62)] | None = None  # ids are 64-bit in the database
    limit: Annotated[int, Field(ge=1, le=500)] = 50


@route(
    "GET", "/admin/webhooks/{id}/deliveries", summary="The delivery log, newest first",
    scope="admin", tag="webhooks", query=DeliveryQuery, responses={200: DeliveryPage}, errors=(400, 422),
)  # fmt: skip
async def list_deliveries(request: web.Request) -> web.Response:
    query = read_query(request, DeliveryQuery)
    page = await _hooks(request).deliveries(
        _webhook_id(request), status=query.status, before=query.before, limit=query.limit
    )
    return json_response(page)


@route(
    "GET", "/admin/webhooks/{id}/deliveries/{delivery_id}", summary="One delivery with every attempt",
    scope="admin", tag="webhooks", responses={200: Delivery}, errors=(400, 404),
)  # fmt: skip
async def get_delivery(request: web.Request) -> web.Response:
    hooks = _hooks(request)
    return json_response(await hooks.delivery(_webhook_id(request), _webhook_id(request, "delivery_id")))


@route(
    "POST", "/admin/webhooks/{id}/deliveries/{delivery_id}/redeliver",
    summary="Queue a delivery again (same webhook-id)", scope="admin", tag="webhooks",
    responses={200: Delivery}, errors=(400, 404), action="webhook.redeliver",
)  # fmt: skip
async def redeliver(request: web.Request) -> web.Response:
    hooks = _hooks(request)
    webhook_id, delivery_id = _webhook_id(request), _webhook_id(request, "delivery_id")
    await hooks.redeliver(webhook_id, delivery_id, ctx=write_context(request, b""), now=datetime.now(UTC))
    return json_response(await hooks.delivery(webhook_id, delivery_id))
