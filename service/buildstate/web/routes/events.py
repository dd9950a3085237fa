"""``/events`` (the ordered feed, one event) and ``/dashboard/summary``."""

from __future__ import annotations

from aiohttp import web

from buildstate.models import Event, EventPage, Summary
from buildstate.web.requests import (
    EventQuery,
    SummaryQuery,
    event_filter,
    int_param,
    json_response,
    read_query,
)
from buildstate.web.routing import route
from buildstate.web.typedefs import FEED_PAGE, STORE


@route(
    "GET",
    "/events",
    summary="The ordered event feed (never skips; page with ?after=next_after)",
    scope="read",
    tag="events",
    query=EventQuery,
    responses={200: EventPage},
    errors=(400, 422),
)
async def list_events(request: web.Request) -> web.Response:
    query = read_query(request, EventQuery)
    page = await request.app[STORE].list_events(
        event_filter(query),
        after=query.after,
        before=query.before,
        limit=query.limit,
        newest_first=query.order == "desc",
    )
    request[FEED_PAGE] = page  # for the feed-lag metric (web.observe)
    return json_response(page)


@route(
    "GET",
    "/events/{seq}",
    summary="One event, with the build it belongs to",
    scope="read",
    tag="events",
    responses={200: Event},
    errors=(400, 404),
)
async def get_event(request: web.Request) -> web.Response:
    seq = int_param(request.match_info["seq"], "an event's seq", slug="bad-seq")
    return json_response(await request.app[STORE].get_event(seq))


@route(
    "GET",
    "/dashboard/summary",
    summary="Counts by status, latest build per platform x OS x image type, failures, step durations",
    scope="read",
    tag="dashboard",
    query=SummaryQuery,
    responses={200: Summary},
    errors=(422,),
)
async def dashboard_summary(request: web.Request) -> web.Response:
    query = read_query(request, SummaryQuery)
    return json_response(await request.app[STORE].summary(query.window_hours))
