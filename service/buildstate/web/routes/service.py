"""The service's own routes: ``/``, ``/health``, ``/ready`` and ``/metrics``."""

from __future__ import annotations

from aiohttp import web

from buildstate import __version__
from buildstate.models import Health, Ready, Root
from buildstate.web.observe import scrape
from buildstate.web.requests import json_response
from buildstate.web.routing import route
from buildstate.web.typedefs import STORE


@route(
    "GET", "/health", summary="The process is alive", scope="public", tag="service", responses={200: Health}
)
async def health(_request: web.Request) -> web.Response:
    return json_response(Health(status="ok", version=__version__))


@route(
    "GET",
    "/ready",
    summary="The database is reachable and its schema current",
    scope="public",
    tag="service",
    responses={200: Ready, 503: Ready},
)
async def ready(request: web.Request) -> web.Response:
    store = request.app[STORE]
    try:
        status = await store.schema_status()
    except Exception as exc:
        return json_response(
            Ready(
                status="unavailable",
                store=store.name,
                schema_version=None,
                expected_schema_version=0,
                detail=f"database unreachable: {type(exc).__name__}",
            ),
            status=503,
        )
    ok = status.current == status.expected
    return json_response(
        Ready(
            status="ready" if ok else "unavailable",
            store=store.name,
            schema_version=status.current,
            expected_schema_version=status.expected,
            detail=None if ok else f"pending migrations: {', '.join(status.pending)}",
        ),
        status=200 if ok else 503,
    )


@route(
    "GET",
    "/metrics",
    summary="Prometheus metrics, summed over every worker (keep it off the public side of the proxy)",
    scope="public",
    tag="service",
    responses={200: None},
    media="text/plain; version=0.0.4",
)
async def metrics(request: web.Request) -> web.Response:
    return await scrape(request)


@route("GET", "/", summary="Name, version and links", scope="public", tag="service", responses={200: Root})
async def root(_request: web.Request) -> web.Response:
    links = {
        "openapi": "/openapi.json",
        "health": "/health",
        "ready": "/ready",
        "builds": "/builds",
        "events": "/events",
        "dashboard_summary": "/dashboard/summary",
    }
    return json_response(Root(name="buildstate", version=__version__, links=links))
