"""Every HTTP endpoint, declared once in ``ROUTES`` with its models and the scope it needs.

The same table registers the aiohttp routes, generates ``/openapi.json`` and tells the auth middleware
what each route requires, so none of the three can disagree with the others.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from buildstate import __version__
from buildstate.errors import BadRequest, Unprocessable, UnsupportedMediaType
from buildstate.models import (
    MAX_JSON_VALUES,
    Build,
    BuildCreate,
    BuildPage,
    BuildState,
    BuildWithEvent,
    Event,
    EventPage,
    FailureReport,
    Health,
    History,
    QueryTime,
    Ready,
    ResetRequest,
    Root,
    Slug,
    StateChange,
    Status,
    Summary,
    holds_credential,
)
from buildstate.numbers import ascii_int
from buildstate.observability.web import scrape
from buildstate.store.base import (
    BuildCursor,
    BuildFilter,
    EventFilter,
    Idempotency,
    WriteContext,
    WriteResult,
)
from buildstate.web.typedefs import ACTOR, PARSED_BODY, REQUEST_ID, STORE

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=BaseModel)

Scope = Literal["public", "read", "write", "reset", "admin"]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    scope: Scope
    tag: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    responses: dict[int, type[BaseModel] | None] = field(default_factory=dict)
    errors: tuple[int, ...] = ()
    # The audit log's name for what a mutating route does ("build.state"), also for denied attempts.
    action: str | None = None
    # A success answer that is not JSON (model None): its media type, for the OpenAPI document.
    media: str | None = None
    # Request headers the route reads, beyond credentials and Idempotency-Key: OpenAPI header parameters.
    headers: tuple[HeaderParam, ...] = ()

    @property
    def carries_secret(self) -> bool:
        """A response holds a ``Credential`` field: every answer is sent ``Cache-Control: no-store``."""
        return any(model is not None and holds_credential(model) for model in self.responses.values())

    def registered_handler(self) -> Handler:
        """The handler as the router gets it: with ``no-store`` on its answers if they carry a secret."""
        if not self.carries_secret:
            return self.handler
        handler = self.handler

        async def no_store(request: web.Request) -> web.StreamResponse:
            response = await handler(request)
            response.headers.update(NO_STORE)
            return response

        return no_store


@dataclass(frozen=True)
class HeaderParam:
    name: str
    description: str
    pattern: str


ROUTES: list[Route] = []
# RFC 6749 5.1 (and RFC 9111): answers that carry credentials must not be kept by any cache.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def route(
    method: str,
    path: str,
    *,
    summary: str,
    scope: Scope,
    tag: str,
    body: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    responses: dict[int, type[BaseModel] | None],
    errors: tuple[int, ...] = (),
    action: str | None = None,
    media: str | None = None,
    headers: tuple[HeaderParam, ...] = (),
) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        ROUTES.append(
            Route(
                method,
                path,
                handler,
                summary,
                scope,
                tag,
                body,
                query,
                responses,
                errors,
                action,
                media,
                headers,
            )
        )
        return handler

    return register


# ---------------------------------------------------------------- request helpers


def _field_errors(exc: ValidationError, model: type[BaseModel] | None = None) -> list[dict[str, Any]]:
    """The failing fields, never their values (a password may be one); an unknown top-level field of
    ``model`` gets a ``hint`` naming the field it most likely meant (``code`` -> ``error_code``)."""
    errors = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        entry = {
            "loc": ".".join(str(part) for part in error["loc"]),
            "type": error["type"],
            "msg": error["msg"],
        }
        if model is not None and error["type"] == "extra_forbidden" and len(error["loc"]) == 1:
            meant = _did_you_mean(str(error["loc"][0]), model.model_fields)
            if meant is not None:
                entry["hint"] = f"did you mean {meant!r}?"
        errors.append(entry)
    return errors


def _did_you_mean(name: str, fields: Iterable[str]) -> str | None:
    known = list(fields)
    for candidate in known:  # a part of a longer name: code -> error_code, message -> error_message
        if name != candidate and name in candidate.split("_"):
            return candidate
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)  # a typo: plaform -> platform
    return close[0] if close else None


def _validation_problem(exc: ValidationError, model: type[BaseModel]) -> BadRequest | Unprocessable:
    errors = _field_errors(exc, model)
    if all(error["type"] in {"json_invalid", "json_type"} for error in errors):
        return BadRequest(
            "the body is not valid JSON (or not UTF-8)", slug="invalid-json", extra={"errors": errors}
        )
    hints = "".join(f"; {e['loc']!r} is not a field here: {e['hint']}" for e in errors if "hint" in e)
    return Unprocessable(f"{len(errors)} field(s) failed validation{hints}", extra={"errors": errors})


_ESCAPED_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000", re.IGNORECASE)
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
# JSON values a body may hold outside its strings: two bounded free-form fields (models.FreeJson) and the
# fixed fields around them. Counted on the raw bytes, before parsing: parsing a megabyte of empty arrays
# costs the event loop a good part of a second, and that is what a flood of them would buy.
MAX_BODY_VALUES = 2 * MAX_JSON_VALUES + 1000


def _values_in(raw: bytes) -> int:
    """An upper bound of the values a JSON text holds: every value but the first of a container follows a
    comma, so containers + commas + 1, counted outside strings."""
    outside = _JSON_STRING.sub(b"", raw)
    return outside.count(b"[") + outside.count(b"{") + outside.count(b",") + 1


async def read_body(request: web.Request, model: type[M]) -> tuple[M, bytes]:
    """Parse a JSON body into ``model``: 415 if not JSON, then ``parse_body``'s rule. Once per request:
    the auth middleware reads a create's platform through here too."""
    cached = request.get(PARSED_BODY)
    if cached is not None and cached[0] is model:
        return cached[1], cached[2]
    content_type = request.content_type
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise UnsupportedMediaType(
            f"send the body as application/json (got {content_type or 'no Content-Type'})"
        )
    raw = await request.read()
    parsed = parse_body(raw, model)
    request[PARSED_BODY] = (model, parsed, raw)
    return parsed, raw


def parse_body(raw: bytes, model: type[M]) -> M:
    """The one rule for a JSON body, whatever route or content type it came with: no NUL, not more values
    than the free-form fields can hold (counted before parsing), 400 ``invalid-json`` if it does not
    parse, 422 (with the failing fields, and hints for misnamed ones) if it is not ``model``, finite
    numbers."""
    if (b"u0000" in raw or b"U0000" in raw) and _ESCAPED_NUL.search(raw):  # the search is slow, the test not
        # PostgreSQL text and jsonb cannot hold U+0000; refuse it on both stores alike.
        raise Unprocessable("text may not contain the NUL character (\\u0000)", slug="nul-character")
    if len(raw) > MAX_BODY_VALUES and _values_in(raw) > MAX_BODY_VALUES:
        raise Unprocessable(
            f"the body holds more than {MAX_BODY_VALUES} JSON values; free-form fields hold at most "
            f"{MAX_JSON_VALUES} each",
            slug="too-many-values",
        )
    try:
        parsed = model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        raise _validation_problem(exc, model) from None
    if not _finite(parsed.model_dump()):
        # The parser reads 1e999 as infinity and accepts NaN in free-form fields (details, instance_vars):
        # PostgreSQL's jsonb refuses them, SQLite would store text no JSON reader accepts.
        raise Unprocessable(
            "numbers must be finite: JSON has no Infinity or NaN (and 1e999 overflows)",
            slug="non-finite-number",
        )
    return parsed


def parse_fields(fields: dict[str, Any], model: type[M]) -> M:
    """Fields from a form or a query, with the same 422 as a JSON body."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise _validation_problem(exc, model) from None


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(item) for item in value.values())
    if isinstance(value, list):
        return all(_finite(item) for item in value)
    return True


def int_param(text: str, what: str, *, slug: str) -> int:
    """A whole number from a path segment or a header (``numbers.ascii_int``), else 400 naming it."""
    value = ascii_int(text)
    if value is None:
        raise BadRequest(f"{what} must be a whole number: 1 to 18 ASCII digits", slug=slug)
    return value


def read_query(request: web.Request, model: type[M]) -> M:
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as exc:
        errors = _field_errors(exc)
        raise Unprocessable(
            f"{len(errors)} query parameter(s) failed validation", extra={"errors": errors}
        ) from None


def write_context(request: web.Request, body: bytes) -> WriteContext:
    """Who is writing (for events and the audit log) and, with ``Idempotency-Key``, how to spot a retry."""
    actor = request[ACTOR]
    key = request.headers.get("Idempotency-Key")
    idem = None
    if key is not None:
        if not 1 <= len(key) <= 255 or not key.isprintable():
            raise BadRequest(
                "Idempotency-Key must be 1 to 255 printable characters", slug="bad-idempotency-key"
            )
        idem = Idempotency.for_request(actor, key, request.method, request.path, body)
    return WriteContext(actor=actor, request_id=request[REQUEST_ID], source=request.remote, idem=idem)


def json_response(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(body=model.model_dump_json().encode(), status=status, content_type="application/json")


def written(result: WriteResult) -> web.Response:
    response = web.Response(body=result.body, status=result.status_code, content_type="application/json")
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


# ---------------------------------------------------------------- query models


class _Query(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class BuildFilters(_Query):
    platform: Slug | None = None
    os_version: Slug | None = None
    image_type: Slug | None = None
    status: Status | None = None
    min_state: Annotated[int, Field(ge=0, le=100)] | None = None
    max_state: Annotated[int, Field(ge=0, le=100)] | None = None
    updated_since: QueryTime | None = None


class BuildQuery(BuildFilters):
    limit: Annotated[int, Field(ge=1, le=500)] = 50
    cursor: Annotated[str, Field(max_length=512)] | None = Field(
        default=None, description="next_cursor of the previous page."
    )


STATE_WORDS = frozenset({"failed", "succeeded", "reset"})
StateFilter = Annotated[
    str,
    Field(
        pattern=r"^((100|[1-9]?[05]|failed|succeeded|reset),)*(100|[1-9]?[05]|failed|succeeded|reset)$",
        description="Comma list of state codes and/or failed, succeeded, reset.",
    ),
]
TypeFilter = Annotated[
    str,
    Field(
        pattern=r"^((created|state|failure|reset),)*(created|state|failure|reset)$",
        description="Comma list of event types.",
    ),
]
Seq = Annotated[int, Field(ge=0, le=2**62)]


class EventFilters(BuildFilters):
    build_id: Annotated[str, Field(max_length=200)] | None = None
    type: TypeFilter | None = None
    states: StateFilter | None = None


class EventQuery(EventFilters):
    after: Seq = Field(default=0, description="Only events with seq > after.")
    before: Annotated[int, Field(ge=1, le=2**62)] | None = Field(
        default=None, description="Only events with seq < before (paging newest first)."
    )
    order: Literal["asc", "desc"] = "asc"
    limit: Annotated[int, Field(ge=1, le=1000)] = 100


class SummaryQuery(_Query):
    window_hours: Annotated[int, Field(ge=1, le=24 * 366)] = 168


def _build_filter(query: BuildFilters) -> BuildFilter:
    return BuildFilter(
        platform=query.platform,
        os_version=query.os_version,
        image_type=query.image_type,
        status=query.status.value if query.status else None,
        min_state=query.min_state,
        max_state=query.max_state,
        updated_since=query.updated_since,
    )


def event_filter(query: EventFilters) -> EventFilter:
    states: tuple[int | str, ...] = ()
    if query.states:
        # The pattern lets through codes and three words only.
        states = tuple(s if s in STATE_WORDS else int(s) for s in query.states.split(","))
    return EventFilter(
        platform=query.platform,
        os_version=query.os_version,
        image_type=query.image_type,
        build_id=query.build_id,
        status=query.status.value if query.status else None,
        types=tuple(query.type.split(",")) if query.type else (),
        states=states,
        min_state=query.min_state,
        max_state=query.max_state,
        updated_since=query.updated_since,
    )


# ---------------------------------------------------------------- builds

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
    action="build.create",
)
async def create_build(request: web.Request) -> web.Response:
    body, raw = await read_body(request, BuildCreate)
    store = request.app[STORE]
    return written(await store.create_build(body, write_context(request, raw)))


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
    page = await request.app[STORE].list_builds(_build_filter(query), query.limit, cursor)
    return json_response(page)


@route(
    "GET",
    "/builds/{ref}",
    summary="One build, by UUID or build_id",
    scope="read",
    tag="builds",
    responses={200: Build},
    errors=(404,),
)
async def get_build(request: web.Request) -> web.Response:
    return json_response(await request.app[STORE].get_build(request.match_info["ref"]))


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
    action="build.state",
)
async def post_state(request: web.Request) -> web.Response:
    body, raw = await read_body(request, StateChange)
    result = await request.app[STORE].record_state(
        request.match_info["ref"], body, write_context(request, raw)
    )
    return written(result)


@route(
    "POST",
    "/builds/{ref}/failure",
    summary="Mark a build failed at its current state",
    scope="write",
    tag="builds",
    body=FailureReport,
    responses={200: BuildWithEvent},
    errors=WRITE_ERRORS,
    action="build.failure",
)
async def post_failure(request: web.Request) -> web.Response:
    body, raw = await read_body(request, FailureReport)
    result = await request.app[STORE].record_failure(
        request.match_info["ref"], body, write_context(request, raw)
    )
    return written(result)


@route(
    "POST",
    "/builds/{ref}/reset",
    summary="Start a new attempt at state 0, recording who and why",
    scope="reset",
    tag="builds",
    body=ResetRequest,
    responses={200: BuildWithEvent},
    errors=WRITE_ERRORS,
    action="build.reset",
)
async def post_reset(request: web.Request) -> web.Response:
    body, raw = await read_body(request, ResetRequest)
    result = await request.app[STORE].reset_build(
        request.match_info["ref"], body, write_context(request, raw)
    )
    return written(result)


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


# ---------------------------------------------------------------- events and dashboard


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


# ---------------------------------------------------------------- service


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
                store=store.kind,
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
            store=store.kind,
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
