"""Artifacts: record what a build made (``POST /builds/{ref}/artifacts``, or its Packer manifest with
``POST /builds/{ref}/packer-manifest``), read them (``GET /builds/{ref}/artifacts``), and the deployers'
lookup (``GET /artifacts/latest``), which answers JSON or, with ``Accept: text/plain``, just the external
id."""

from __future__ import annotations

import json
from dataclasses import asdict

from aiohttp import web

from buildstate import packer
from buildstate.domain import EVENT_RULES, EventType
from buildstate.errors import Unprocessable
from buildstate.models import (
    MAX_ARTIFACTS_PER_REQUEST,
    ArtifactList,
    ArtifactMatch,
    ArtifactsRecord,
    ArtifactsWritten,
    JsonObject,
    PackerManifest,
)
from buildstate.store.artifacts import ArtifactLookup
from buildstate.web.requests import (
    LABEL_FILTER,
    LABEL_PREFIX,
    LatestQuery,
    json_response,
    label_filters,
    negotiate,
    parse_fields,
    read_body,
    read_query,
    write_context,
    written,
)
from buildstate.web.routes.builds import WRITE_ERRORS
from buildstate.web.routing import route
from buildstate.web.typedefs import STORE

TEXT, JSON = "text/plain", "application/json"
ACTION = EVENT_RULES[EventType.ARTIFACT].action


@route(
    "POST",
    "/builds/{ref}/artifacts",
    summary="Record what a build made (new ones with one artifact event; known ones replay)",
    scope="write",
    tag="artifacts",
    body=ArtifactsRecord,
    responses={200: ArtifactsWritten},
    errors=WRITE_ERRORS,
    action=ACTION,
)
async def post_artifacts(request: web.Request) -> web.Response:
    body, raw = await read_body(request, ArtifactsRecord)
    result = await request.app[STORE].artifacts.record(
        request.match_info["ref"], body, write_context(request, raw)
    )
    return written(request, result)


def manifest_record(raw: bytes) -> ArtifactsRecord:
    """The artifacts of a Packer manifest's last run (``packer.parse_manifest``) as a record: a 422 names
    the manifest's field that cannot be read, and nothing is recorded."""
    try:
        found = packer.parse_manifest(json.loads(raw))
    except packer.ManifestError as unreadable:
        raise Unprocessable(
            f"the Packer manifest's {unreadable.field}: {unreadable.reason}",
            slug="bad-packer-manifest",
            extra={
                "errors": [{"loc": unreadable.field, "type": "packer-manifest", "msg": unreadable.reason}]
            },
        ) from None
    if len(found) > MAX_ARTIFACTS_PER_REQUEST:
        raise Unprocessable(
            f"the Packer manifest's last run made {len(found)} artifacts; one manifest records at most "
            f"{MAX_ARTIFACTS_PER_REQUEST}",
            slug="bad-packer-manifest",
            extra={"errors": [{"loc": "builds", "type": "packer-manifest", "msg": "too many artifacts"}]},
        )
    return parse_fields({"artifacts": [asdict(artifact) for artifact in found]}, ArtifactsRecord)


@route(
    "POST",
    "/builds/{ref}/packer-manifest",
    summary="Record the artifacts of a Packer manifest's last run (the packer-manifest.json as written)",
    scope="write",
    tag="artifacts",
    body=PackerManifest,
    responses={200: ArtifactsWritten},
    errors=WRITE_ERRORS,
    action=ACTION,
)
async def post_packer_manifest(request: web.Request) -> web.Response:
    _, raw = await read_body(request, JsonObject)  # the guards of every body; packer.py reads the rest
    result = await request.app[STORE].artifacts.record(
        request.match_info["ref"], manifest_record(raw), write_context(request, raw)
    )
    return written(request, result)


@route(
    "GET",
    "/builds/{ref}/artifacts",
    summary="A build's artifacts, in the order they were recorded",
    scope="read",
    tag="artifacts",
    responses={200: ArtifactList},
    errors=(404,),
)
async def get_artifacts(request: web.Request) -> web.Response:
    return json_response(await request.app[STORE].artifacts.of_build(request.match_info["ref"]))


@route(
    "GET",
    "/artifacts/latest",
    summary="The newest succeeded (or a channel's) build's matching artifact; text/plain: its external_id",
    scope="read",
    tag="artifacts",
    query=LatestQuery,
    responses={200: ArtifactMatch},
    errors=(404, 410, 422),
    query_patterns=(LABEL_FILTER,),
    alternates=(TEXT,),
)
async def latest_artifact(request: web.Request) -> web.Response:
    query = read_query(request, LatestQuery, prefixes=(LABEL_PREFIX,))
    lookup = ArtifactLookup(
        platform=query.platform,
        os_version=query.os_version,
        image_type=query.image_type,
        region=query.region,
        kind=query.kind,
        labels=label_filters(request.query),
        channel=query.channel,
        include_revoked=query.include_revoked,
    )
    found = await request.app[STORE].artifacts.latest(lookup)
    if negotiate(request.headers.get("Accept"), (JSON, TEXT)) == TEXT:
        response = web.Response(text=found.external_id + "\n", content_type=TEXT, charset="utf-8")
    else:
        response = json_response(found)
    response.headers["Vary"] = "Accept"
    return response
