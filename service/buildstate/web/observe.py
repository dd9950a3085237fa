"""Observability in the aiohttp app: the ``observe`` middleware, the pool sampler and ``/metrics``.

The collectors and the log formats are framework-free, in ``buildstate.observability``; this module is what
feeds them from requests.

``observe`` is the outermost layer but for the forwarded client: it gives every request its id first
(``problems.request_id``, echoed on every answer) and sits outside ``problems``, so it sees the final
status of every answer, problem responses included. Per request it updates the request
counter and latency histogram (kept in the process and flushed in batches, see ``metrics.py``), counts the
build event a successful write recorded, measures how far behind a reader of the event feed is, and
writes one access-log record.

Which writes recorded an event: the write's own ``WriteResult`` (``requests.written`` keeps it on the
request) says so, and which event; the feed lag comes from the ``EventPage`` the handler answered with.
No response body is read back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from aiohttp import web
from aiohttp.typedefs import Middleware

from buildstate.observability.metrics import CONTENT_TYPE_LATEST, FLUSH_SECONDS, Metrics
from buildstate.web.middlewares.cors import Cors
from buildstate.web.middlewares.problems import request_id
from buildstate.web.routing import Handler
from buildstate.web.typedefs import ACTOR, FEED_PAGE, METRICS, SETTINGS, STORE, WRITE_RESULT

log = logging.getLogger("buildstate.access")

# Probes and scrapes arrive every few seconds: their successes are logged at DEBUG, not INFO.
QUIET_ROUTES = frozenset({"/health", "/ready", "/metrics"})
POOL_SAMPLE_SECONDS = 5.0


def route_template(request: web.Request) -> str:
    """The route as declared (``/builds/{ref}``): a bounded label, unlike the path."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def observe_middleware(cors: Cors) -> Middleware:
    """``observe``, with CORS (``middlewares.cors``) applied just inside it, as a layer of its own would
    (one layer less for every request)."""

    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        rid = request_id(request)
        metrics = request.app[METRICS]
        started = time.perf_counter()
        status = 500
        response: web.StreamResponse | None = None
        metrics.request_started()
        try:
            origin = request.headers.get("Origin")
            if origin is None:
                response = await handler(request)
            else:
                response = cors.preflight(request, origin)
                if response is None:
                    response = await handler(request)
                    cors.decorate(response, origin)
            status = response.status
        except web.HTTPException as exc:
            status = exc.status
            exc.headers["X-Request-ID"] = rid
            raise
        except asyncio.CancelledError:
            status = 499  # the client went away first (nginx's code for it)
            raise
        finally:
            seconds = time.perf_counter() - started
            route = route_template(request)
            metrics.request_finished(request.method, route, status, seconds)
            if 200 <= status < 300:
                _record_outcome(request, metrics)
            if request.app[SETTINGS].access_log:
                _log_request(request, rid, route, status, seconds)
        response.headers["X-Request-ID"] = rid
        return response

    return observe


def _record_outcome(request: web.Request, metrics: Metrics) -> None:
    # Which keys the request holds, read once: request.get raises and catches a KeyError for each key
    # that is absent (on most requests both are), which cost more than the rest of this.
    held = set(request)
    written = request[WRITE_RESULT] if WRITE_RESULT in held else None
    if written is not None:
        if written.appended:
            metrics.record_event(written.build)
        return
    page = request[FEED_PAGE] if FEED_PAGE in held else None
    if page is not None and page.events and _follows_feed(request):
        metrics.record_feed_lag(page.events[0].recorded_at, datetime.now(UTC))


def _follows_feed(request: web.Request) -> bool:
    """A reader paging forward from where it stopped (not a first read from the start, not newest-first)."""
    return request.query.get("after", "0") != "0" and request.query.get("order", "asc") == "asc"


class _AccessRecords:
    """Access-log records made from a template: what ``LogRecord.__init__`` computes that is the same for
    every request line (the level's name, the file, the process) is copied, not computed again; only the
    time fields, ``args`` and the request's fields are set per record. The template is made once per level
    by ``log.makeRecord`` (so the same record class), which means a ``LogRecordFactory`` that computes
    per-record values would see them copied from the first record: nothing here installs one."""

    def __init__(self) -> None:
        self._templates: dict[int, tuple[type[logging.LogRecord], dict[str, object]]] = {}
        os.register_at_fork(after_in_child=self._templates.clear)  # the pid is in the template

    def make(self, level: int, args: tuple[object, ...], fields: dict[str, object]) -> logging.LogRecord:
        template = self._templates.get(level)
        if template is None:
            made = log.makeRecord(log.name, level, __file__, 0, ACCESS_FORMAT, (), None)
            template = self._templates[level] = (type(made), made.__dict__)
        kind, attributes = template
        record = kind.__new__(kind)
        values = record.__dict__
        values.update(attributes)
        now = time.time()
        values["created"] = now
        values["msecs"] = int((now - int(now)) * 1000) + 0.0  # as LogRecord computes them
        values["relativeCreated"] = (now - _LOGGING_STARTED) * 1000
        values["args"] = args
        values.update(fields)
        return record


ACCESS_FORMAT = "%s %s %d %.1fms"
_LOGGING_STARTED: float = logging._startTime  # type: ignore[attr-defined]
_records = _AccessRecords()


def _log_request(request: web.Request, rid: str, route: str, status: int, seconds: float) -> None:
    if status >= 500:
        level = logging.WARNING
    elif route in QUIET_ROUTES and status < 400:
        level = logging.DEBUG
    else:
        level = logging.INFO
    if not log.isEnabledFor(level):
        return
    duration_ms = round(seconds * 1000, 2)
    method, path = request.method, request.path
    # The record is made as log.log would make it, minus the stack walk that finds the caller's file and
    # line (a fixed place, and no formatter prints it), the checks of ``extra`` against the record's own
    # attributes (these names are not among them) and the work LogRecord does again for every record: a
    # measurable share of a small request's time.
    record = _records.make(
        level,
        (method, path, status, duration_ms),
        {
            "request_id": rid,
            "method": method,
            "route": route,
            "path": path,
            "status": status,
            "duration_ms": duration_ms,
            "actor": request.get(ACTOR),
            "remote": request.remote,
        },
    )
    log.handle(record)


# ---------------------------------------------------------------------- database pool


def sample_pool(app: web.Application) -> None:
    """Copy the PostgreSQL pool's sizes into the gauges (SQLite has no pool: nothing to report)."""
    stats = app[STORE].pool_stats()
    if stats is not None:
        app[METRICS].record_pool(in_use=stats.in_use, idle=stats.idle, maximum=stats.maximum)


async def pool_sampler(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx`` (after the store's): sample the pool every few seconds in each worker, so the summed
    gauge stays current even in workers that do not answer the scrape."""

    async def sample_forever() -> None:
        while True:
            sample_pool(app)
            await asyncio.sleep(POOL_SAMPLE_SECONDS)

    # The store is open by now (its cleanup_ctx runs first): a store with a pool reports its sizes.
    task = asyncio.create_task(sample_forever()) if app[STORE].pool_stats() is not None else None
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def metrics_flusher(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx``: this process's request metrics reach the shared files every ``FLUSH_SECONDS``, and
    once more when it stops (``Metrics.flush``)."""
    metrics = app[METRICS]

    async def flush_forever() -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            metrics.flush()

    task = asyncio.create_task(flush_forever())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    metrics.flush()


async def scrape(request: web.Request) -> web.Response:
    """``GET /metrics``: merging the workers' files is blocking file I/O, so it runs off the event loop
    (after this process's own pending values are flushed, on the loop where they are recorded)."""
    sample_pool(request.app)
    request.app[METRICS].flush()
    body = await asyncio.get_running_loop().run_in_executor(None, request.app[METRICS].exposition)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
