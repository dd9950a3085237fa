"""``create_app``: the aiohttp application, one per gunicorn worker (or per test)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from buildstate.auth.middleware import RouteTable, auth_middleware
from buildstate.auth.service import build_authenticator
from buildstate.config import Settings
from buildstate.errors import ServiceUnavailable
from buildstate.observability.metrics import Metrics
from buildstate.observability.web import metrics_flusher, observe, pool_sampler
from buildstate.store import Store, create_store
from buildstate.web import access_routes, middleware, ui
from buildstate.web.cors import cors_middleware
from buildstate.web.forwarded import forwarded_client
from buildstate.web.openapi import build_openapi
from buildstate.web.routes import ROUTES
from buildstate.web.typedefs import AUTHENTICATOR, METRICS, SETTINGS, STORE, STREAMS_CLOSING
from buildstate.webhooks.routes import close_streams, live_updates_ctx

log = logging.getLogger("buildstate")


class SchemaMismatchError(RuntimeError):
    """The database schema is not the one this code expects: run ``buildstate migrate``."""


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    store = app[STORE]
    await store.open()
    try:
        status = await store.schema_status()
    except ServiceUnavailable:
        # Start anyway: /ready reports the outage and the pool reconnects when the database returns.
        log.warning("database unreachable at start-up; serving /ready=503 until it returns")
    else:
        if status.current != status.expected:
            await store.close()
            raise SchemaMismatchError(
                f"database schema is at version {status.current}, this code needs {status.expected}: "
                "run `buildstate migrate` (pending: " + ", ".join(status.pending) + ")"
            )
    purge = asyncio.create_task(_purge_idempotency_keys(app))
    yield
    purge.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await purge
    await store.close()


async def _purge_idempotency_keys(app: web.Application) -> None:
    ttl = timedelta(hours=app[SETTINGS].idempotency_ttl_hours)
    while True:
        try:
            await app[STORE].purge_idempotency_keys(datetime.now(UTC) - ttl)
        except ServiceUnavailable:
            log.info("idempotency key purge skipped: database unavailable")
        await asyncio.sleep(3600)


async def _auth_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[AUTHENTICATOR].limiter.close()


def create_app(settings: Settings | None = None, store: Store | None = None) -> web.Application:
    settings = settings or Settings()
    # access_routes has added /token, /admin/* and /audit to ROUTES by now (imported above).
    routes = RouteTable.of(ROUTES, public=[("GET", "/openapi.json"), *ui.PUBLIC])
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[
            forwarded_client(settings.trusted_proxies),
            middleware.request_id,
            observe,
            cors_middleware(settings.cors_origins),
            middleware.problems,
            auth_middleware(routes),
        ],
    )
    app[SETTINGS] = settings
    app[STORE] = store or create_store(settings)
    app[AUTHENTICATOR] = build_authenticator(settings, app[STORE])
    app[METRICS] = Metrics(platforms=settings.metrics_platforms, components=settings.metrics_components)
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_auth_ctx)
    app.cleanup_ctx.append(pool_sampler)
    app.cleanup_ctx.append(metrics_flusher)
    app[STREAMS_CLOSING] = asyncio.Event()
    app.cleanup_ctx.append(live_updates_ctx)
    app.on_shutdown.append(close_streams)
    # Fixed paths before templated ones, so that /events/stream is not taken for /events/{seq}.
    for r in sorted(ROUTES, key=lambda r: "{" in r.path):
        app.router.add_route(r.method, r.path, r.registered_handler(), name=r.handler.__name__)

    spec = json.dumps(openapi_document(settings)).encode()

    async def openapi(_request: web.Request) -> web.Response:
        return web.Response(body=spec, content_type="application/json")

    app.router.add_get("/openapi.json", openapi, name="openapi")
    ui.add_ui_routes(app)
    return app


def openapi_document(settings: Settings) -> dict[str, Any]:
    """What ``GET /openapi.json`` serves (and ``buildstate openapi`` prints)."""
    document = build_openapi(
        ROUTES, security=access_routes.SECURITY_SCHEMES, server_url=settings.public_url.rstrip("/") or "/"
    )
    return access_routes.document(document)


async def gunicorn_app() -> web.Application:
    """Entry point for gunicorn's aiohttp worker (``buildstate.web.app:gunicorn_app``)."""
    return create_app()
