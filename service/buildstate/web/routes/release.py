"""Ancestry, channels and revocations: ``/builds/{ref}/parents``, ``/builds/{ref}/ancestry``,
``/builds/{ref}/revoke``, ``/builds/{ref}/restore`` and ``/channels...`` (``store/release.py``)."""

from __future__ import annotations

import re
from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from buildstate.auth.scopes import RELEASE
from buildstate.domain import EVENT_RULES, EventType
from buildstate.errors import BadRequest
from buildstate.models import (
    Ancestry,
    ChannelAssign,
    ChannelAssigned,
    ChannelDetail,
    ChannelList,
    ParentsAdd,
    RestoreRequest,
    RevocationResult,
    RevokeRequest,
    Slug,
)
from buildstate.store.release import MAX_HISTORY, Released
from buildstate.web.requests import json_response, read_body, read_query, write_context
from buildstate.web.routing import route
from buildstate.web.typedefs import PRINCIPAL, STORE

RELEASE_ERRORS = (400, 404, 409, 413, 415, 422)
_SLUG = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


class _Query(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


def released(result: Released) -> web.Response:
    response = web.Response(body=result.body, status=result.status_code, content_type="application/json")
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def _channel_name(request: web.Request) -> str:
    """The path's channel name, held to the rule of every name (a slug), else 400 naming it."""
    name = request.match_info["name"]
    if _SLUG.fullmatch(name) is None:
        raise BadRequest(
            "a channel name is 1 to 64 lower-case letters, digits, '.', '_' and '-', starting with a letter "
            "or a digit",
            slug="bad-channel-name",
        )
    return name


@route(
    "POST",
    "/builds/{ref}/parents",
    summary="Name the builds this one was built from (cycles and itself refused)",
    scope="write",
    tag="ancestry",
    body=ParentsAdd,
    responses={200: Ancestry},
    errors=RELEASE_ERRORS,
    action="build.parents",
)
async def add_parents(request: web.Request) -> web.Response:
    body, raw = await read_body(request, ParentsAdd)
    result = await request.app[STORE].release.add_parents(
        request.match_info["ref"],
        body.parents,
        write_context(request, raw),
        may_revoke=request[PRINCIPAL].has(RELEASE),
    )
    return released(result)


@route(
    "GET",
    "/builds/{ref}/ancestry",
    summary="A build's ancestors and descendants: status, revocation, whether out of date",
    scope="read",
    tag="ancestry",
    responses={200: Ancestry},
    errors=(404,),
)
async def get_ancestry(request: web.Request) -> web.Response:
    return json_response(await request.app[STORE].release.ancestry(request.match_info["ref"]))


@route(
    "POST",
    "/builds/{ref}/revoke",
    summary="Revoke a build, now or at a time, and with it every build made from it",
    scope="release",
    tag="revocation",
    body=RevokeRequest,
    responses={200: RevocationResult},
    errors=RELEASE_ERRORS,
    action=EVENT_RULES[EventType.REVOKED].action,
)
async def revoke(request: web.Request) -> web.Response:
    body, raw = await read_body(request, RevokeRequest)
    result = await request.app[STORE].release.revoke(
        request.match_info["ref"], body, write_context(request, raw)
    )
    return released(result)


@route(
    "POST",
    "/builds/{ref}/restore",
    summary="Lift a build's own revocation and exactly the inherited ones it caused",
    scope="release",
    tag="revocation",
    body=RestoreRequest,
    responses={200: RevocationResult},
    errors=RELEASE_ERRORS,
    action=EVENT_RULES[EventType.RESTORED].action,
)
async def restore(request: web.Request) -> web.Response:
    body, raw = await read_body(request, RestoreRequest)
    result = await request.app[STORE].release.restore(
        request.match_info["ref"], body, write_context(request, raw)
    )
    return released(result)


class ChannelsQuery(_Query):
    name: Slug | None = None
    platform: Slug | None = None
    os_version: Slug | None = None
    image_type: Slug | None = None
    limit: Annotated[int, Field(ge=1, le=1000)] = 500


class ChannelQuery(_Query):
    platform: Slug
    os_version: Slug
    image_type: Slug
    limit: Annotated[int, Field(ge=1, le=MAX_HISTORY, description="History rows, newest first.")] = 100


@route(
    "PUT",
    "/channels/{name}",
    summary="Assign a channel of a platform x OS version x image type to a succeeded, non-revoked build",
    scope="release",
    tag="channels",
    body=ChannelAssign,
    responses={200: ChannelAssigned},
    errors=RELEASE_ERRORS,
    action=EVENT_RULES[EventType.CHANNEL].action,
)
async def assign_channel(request: web.Request) -> web.Response:
    name = _channel_name(request)
    body, raw = await read_body(request, ChannelAssign)
    result = await request.app[STORE].release.assign(name, body, write_context(request, raw))
    return released(result)


@route(
    "GET",
    "/channels",
    summary="Channels and their heads",
    scope="read",
    tag="channels",
    query=ChannelsQuery,
    responses={200: ChannelList},
    errors=(422,),
)
async def list_channels(request: web.Request) -> web.Response:
    query = read_query(request, ChannelsQuery)
    bucket = {"platform": query.platform, "os_version": query.os_version, "image_type": query.image_type}
    return json_response(await request.app[STORE].release.list_channels(query.name, bucket, query.limit))


@route(
    "GET",
    "/channels/{name}",
    summary="A channel's head and its assignment history",
    scope="read",
    tag="channels",
    query=ChannelQuery,
    responses={200: ChannelDetail},
    errors=(400, 404, 422),
)
async def get_channel(request: web.Request) -> web.Response:
    name = _channel_name(request)
    query = read_query(request, ChannelQuery)
    bucket = {"platform": query.platform, "os_version": query.os_version, "image_type": query.image_type}
    return json_response(await request.app[STORE].release.channel(name, bucket, query.limit))
