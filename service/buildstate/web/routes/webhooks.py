"""``/admin/webhooks``: subscriptions, their delivery log, test messages and redelivery. The rules are in
``buildstate.webhooks`` (``service``, ``targets``), the rows in ``webhooks.store``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from buildstate.web.requests import int_param, json_response, read_body, read_query, write_context
from buildstate.web.routing import route
from buildstate.web.typedefs import DISPATCHER, SETTINGS, STORE
from buildstate.webhooks import service
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
