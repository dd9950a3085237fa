"""``/builds``: register builds, move them forward, fail and reset them, read them and their history."""

from __future__ import annotations

from aiohttp import web

from buildstate.auth.scopes import RELEASE
from buildstate.domain import EVENT_RULES, EventType
from buildstate.models import (
    BuildCreate,
    BuildDetail,
    BuildPage,
    BuildState,
    BuildWithEvent,
    FailureReport,
    History,
    ResetRequest,
    StateChange,
)
from buildstate.store.types import BuildCursor
from buildstate.web.requests import (
    BuildQuery,
    build_filter,
    json_response,
    read_body,
    read_query,
    write_context,
    written,
)
from buildstate.web.routing import route
from buildstate.web.typedefs import PRINCIPAL, STORE

WRITE_ERRORS = (400, 404, 409, 413, 415, 422)


@route(
    "POST",
    "/builds",
    summary="Register a build (replays if the same build_id and fields exist)",
    scope="write",
    tag="builds",
    body=BuildCreate,
    responses={201: BuildWithEvent, 200: BuildWithEvent},
    errors=(400, 409, 413, 415, 422),
    action=EVENT_RULES[EventType.CREATED].action,
)
async def create_build(request: web.Request) -> web.Response:
    body, raw = await read_body(request, BuildCreate)
    store = request.app[STORE]
    ctx = write_context(request, raw)
    if body.parents:  # refused before the build exists: a missing parent, the build itself
        await store.release.check_parents(body.build_id, body.parents)
    result = await store.create_build(body, ctx)
    if body.parents:  # to an existing build (200) the link may revoke it: that needs release, as later
        created = result.status_code == 201
        may_revoke = created or request[PRINCIPAL].has(RELEASE)
        await store.release.link_created(result.build.id, body.parents, ctx, may_revoke=may_revoke)
    return written(request, result)


@route(
    "GET",
    "/builds",
    summary="List builds, most recently updated first, with filters and a cursor",
    scope="read",
    tag="builds",
    query=BuildQuery,
    responses={200: BuildPage},
    errors=(400, 422),
)
async def list_builds(request: web.Request) -> web.Response:
    query = read_query(request, BuildQuery)
    cursor = BuildCursor.decode(query.cursor) if query.cursor else None
    page = await request.app[STORE].list_builds(build_filter(query), query.limit, cursor)
    return json_response(page)


@route(
    "GET",
    "/builds/{ref}",
    summary="One build, by UUID or build_id, with its artifacts",
    scope="read",
    tag="builds",
    responses={200: BuildDetail},
    errors=(404,),
)
async def get_build(request: web.Request) -> web.Response:
    return json_response(await request.app[STORE].build_detail(request.match_info["ref"]))


@route(
    "GET",
    "/builds/{ref}/state",
    summary="A build's current state",
    scope="read",
    tag="builds",
    responses={200: BuildState},
    errors=(404,),
)
async def get_state(request: web.Request) -> web.Response:
    build = await request.app[STORE].get_build(request.match_info["ref"])
    return json_response(BuildState(**build.model_dump(include=set(BuildState.model_fields))))


@route(
    "POST",
    "/builds/{ref}/state",
    summary="Move a build forward to a state code",
    scope="write",
    tag="builds",
    body=StateChange,
    responses={200: BuildWithEvent},
    errors=WRITE_ERRORS,
    action=EVENT_RULES[EventType.STATE].action,
)
async def post_state(request: web.Request) -> web.Response:
    body, raw = await read_body(request, StateChange)
    result = await request.app[STORE].record_state(
        request.match_info["ref"], body, write_context(request, raw)
    )
    return written(request, result)


@route(
    "POST",
    "/builds/{ref}/failure",
    summary="Mark a build failed at its current state",
    scope="write",
    tag="builds",
    body=FailureReport,
    responses={200: BuildWithEvent},
    errors=WRITE_ERRORS,
    action=EVENT_RULES[EventType.FAILURE].action,
)
async def post_failure(request: web.Request) -> web.Response:
    body, raw = await read_body(request, FailureReport)
    result = await request.app[STORE].record_failure(
        request.match_info["ref"], body, write_context(request, raw)
    )
    return written(request, result)


@route(
    "POST",
    "/builds/{ref}/reset",
    summary="Start a new attempt at state 0, recording who and why",
    scope="reset",
    tag="builds",
    body=ResetRequest,
    responses={200: BuildWithEvent},
    errors=WRITE_ERRORS,
    action=EVENT_RULES[EventType.RESET].action,
)
async def post_reset(request: web.Request) -> web.Response:
    body, raw = await read_body(request, ResetRequest)
    result = await request.app[STORE].reset_build(
        request.match_info["ref"], body, write_context(request, raw)
    )
    return written(request, result)


@route(
    "GET",
    "/builds/{ref}/history",
    summary="A build's events, oldest first",
    scope="read",
    tag="builds",
    responses={200: History},
    errors=(404,),
)
async def get_history(request: web.Request) -> web.Response:
    return json_response(await request.app[STORE].history(request.match_info["ref"]))
