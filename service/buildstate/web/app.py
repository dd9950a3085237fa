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

from buildstate.auth.service import build_authenticator
from buildstate.config import Settings
from buildstate.errors import ServiceUnavailable
from buildstate.observability.metrics import Metrics
from buildstate.store import Store, create_store
from buildstate.store.types import WriteContext
from buildstate.web import ui
from buildstate.web.middlewares import problems
from buildstate.web.middlewares.auth import auth_middleware
from buildstate.web.middlewares.cors import Cors
from buildstate.web.middlewares.forwarded import forwarded_client
from buildstate.web.observe import metrics_flusher, observe_middleware, pool_sampler
from buildstate.web.openapi import build_openapi
from buildstate.web.routes import access
from buildstate.web.routes.stream import close_streams, live_updates_ctx
from buildstate.web.routing import ROUTES, RouteTable
from buildstate.web.typedefs import AUTHENTICATOR, METRICS, SETTINGS, STORE, STREAMS_CLOSING

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
    tasks = [
        asyncio.create_task(_purge_idempotency_keys(app)),
        asyncio.create_task(_fire_scheduled_revocations(app)),
    ]
    yield
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await store.close()


async def _purge_idempotency_keys(app: web.Application) -> None:
    ttl = timedelta(hours=app[SETTINGS].idempotency_ttl_hours)
    while True:
        try:
            await app[STORE].purge_idempotency_keys(datetime.now(UTC) - ttl)
        except ServiceUnavailable:
            log.info("idempotency key purge skipped: database unavailable")
        await asyncio.sleep(3600)


async def _fire_scheduled_revocations(app: web.Application) -> None:
    """Every worker of every instance polls; the release lock makes each revocation fire in one of them."""
    ctx = WriteContext(actor="scheduler")
    while True:
        await asyncio.sleep(app[SETTINGS].revocation_poll_seconds)
        try:
            fired = await app[STORE].release.fire_due(ctx)
        except ServiceUnavailable:
            log.info("scheduled revocations skipped: database unavailable")
        except Exception as error:
            # The poller outlives one bad pass (a deadlock, a timeout): one line, no traceback, the next pass
            # retries; the type says what to look for.
            log.warning("scheduled revocations failed this pass (%s); retrying", type(error).__name__)
        else:
            if fired:
                log.info("fired %d scheduled revocation(s)", fired)


async def _auth_ctx(app: web.Application) -> AsyncIterator[None]:
    """Per worker: the watch of the store's key epoch that lets it keep keys in memory."""
    authenticator = app[AUTHENTICATOR]
    watching = None
    if authenticator.key_cache:
        watching = asyncio.create_task(authenticator.key_changes.watch(), name="key-changes")
    yield
    if watching is not None:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
    await authenticator.limiter.close()


def create_app(settings: Settings | None = None, store: Store | None = None) -> web.Application:
    settings = settings or Settings()
    # Importing buildstate.web.routes (above) has registered every handler in ROUTES.
    routes = RouteTable.of(ROUTES, public=[("GET", "/openapi.json"), *ui.PUBLIC])
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[
            # Each layer costs every request a call and a coroutine: without trusted proxies the
            # forwarded-client layer would do nothing, so it is left out.
            *([forwarded_client(settings.trusted_proxies)] if settings.trusted_proxies else []),
            # The request id, metrics and the access log, and CORS just inside them.
            observe_middleware(Cors(settings.cors_origins)),
            problems.problems,
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
        ROUTES, security=access.SECURITY_SCHEMES, server_url=settings.public_url.rstrip("/") or "/"
    )
    return access.document(document)
