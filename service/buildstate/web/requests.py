"""What handlers do with a request: parse its body, query and path, say who writes, answer in JSON.

Every JSON body goes through ``parse_body`` whatever route or content type it came with, and every query
through ``read_query``, so one rule refuses the same input the same way everywhere. The query models of the
build and event routes (shared by ``/events/stream``) are here too.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from buildstate.domain import EVENT_TYPE_TOKEN, STATE_TOKEN, STATE_WORDS
from buildstate.errors import BadRequest, Unprocessable, UnsupportedMediaType
from buildstate.models import (
    MAX_JSON_VALUES,
    ArtifactKind,
    LabelKey,
    LabelValue,
    QueryTime,
    Region,
    Slug,
    Status,
)
from buildstate.numbers import ascii_int
from buildstate.store.types import BuildFilter, EventFilter, Idempotency, WriteContext, WriteResult
from buildstate.web.routing import HeaderParam
from buildstate.web.typedefs import ACTOR, PARSED_BODY, REQUEST_ID, WRITE_RESULT

M = TypeVar("M", bound=BaseModel)

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


def read_query(request: web.Request, model: type[M], *, prefixes: tuple[str, ...] = ()) -> M:
    """The query as ``model``. A strict model (``extra="forbid"``) refuses what it does not name, but the
    parameters under ``prefixes`` (``label.``: read by the route), and a parameter it names given twice:
    neither may widen a lookup unseen."""
    strict = model.model_config.get("extra") == "forbid"
    if strict:
        repeated = sorted({name for name in request.query if len(request.query.getall(name)) > 1})
        if repeated:
            raise Unprocessable(
                f"query parameter(s) given more than once: {', '.join(repeated)}; each has one value",
                extra={"errors": [{"loc": name, "type": "repeated", "msg": "given more than once"}
                                  for name in repeated]},
            )  # fmt: skip
    values = {name: value for name, value in request.query.items() if not name.startswith(prefixes)}
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        errors = _field_errors(exc, model if strict else None)
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


def written(request: web.Request, result: WriteResult) -> web.Response:
    """The answer to a write, from what it did; kept on the request for the metrics (``web.observe``)."""
    request[WRITE_RESULT] = result
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


StateFilter = Annotated[
    str,
    Field(
        pattern=rf"^(({STATE_TOKEN}),)*({STATE_TOKEN})$",
        description=f"Comma list of state codes and/or {', '.join(STATE_WORDS)}.",
    ),
]
TypeFilter = Annotated[
    str,
    Field(
        pattern=rf"^(({EVENT_TYPE_TOKEN}),)*({EVENT_TYPE_TOKEN})$", description="Comma list of event types."
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


def build_filter(query: BuildFilters) -> BuildFilter:
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


# ---------------------------------------------------------------- the artifact lookup

LABEL_PREFIX = "label."
MAX_LABEL_FILTERS = 16


class LatestQuery(_Query):
    # A deployer's typo (`regoin=`, `labels.arch=`) ignored would answer another region's or arch's image.
    model_config = ConfigDict(extra="forbid", frozen=True)

    platform: Slug
    os_version: Slug
    image_type: Slug
    region: Region | None = Field(
        default=None,
        description="Only artifacts of this region ('' for region-less ones); any when left out.",
    )
    kind: ArtifactKind | None = Field(default=None, description="Only artifacts of this kind (`ami`, ...).")
    channel: Slug | None = Field(
        default=None,
        description="The artifact of this channel's head (of the platform x OS version x image type) instead "
        "of the newest succeeded build's; 404 when the channel has no head.",
    )
    include_revoked: bool = Field(
        default=False, description="Answer a revoked build's artifact instead of 410 naming the revocation."
    )


LABEL_FILTER = HeaderParam(
    "label.{key}",
    "Repeatable, one per label (`label.arch=arm64`): the artifact's label of that name, or its build's "
    f"when the artifact has none, must have that value; at most {MAX_LABEL_FILTERS}.",
    ".*",
)


class _LabelFilters(_Query):
    labels: Annotated[dict[LabelKey, LabelValue], Field(max_length=MAX_LABEL_FILTERS)]


def label_filters(query: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """``label.<key>=<value>`` parameters (a multidict: each key once), validated like build labels."""
    labels: dict[str, str] = {}
    for name, value in query.items():
        if not name.startswith(LABEL_PREFIX):
            continue
        key = name[len(LABEL_PREFIX) :]
        if key in labels:
            raise Unprocessable(
                f"{name} is given more than once; a label has one value",
                extra={"errors": [{"loc": name, "type": "repeated", "msg": "given more than once"}]},
            )
        labels[key] = value
    try:
        _LabelFilters.model_validate({"labels": labels})
    except ValidationError as exc:
        errors = [
            {"loc": LABEL_PREFIX + ".".join(str(part) for part in error["loc"][1:2]), "msg": error["msg"]}
            for error in exc.errors(include_url=False, include_input=False, include_context=False)
        ]
        raise Unprocessable(
            f"{len(errors)} label filter(s) failed validation: keys like build labels' "
            f"(letters, digits, '.', '_', '/', '-'), values of at most 1024 characters, at most "
            f"{MAX_LABEL_FILTERS}",
            extra={"errors": errors},
        ) from None
    return tuple(labels.items())


# One media range of an Accept header (RFC 9110 12.5.1): type/subtype, then parameters, maybe a q.
_QUALITY = re.compile(r"^(0(\.\d{0,3})?|1(\.0{0,3})?)$")


def negotiate(accept: str | None, offered: Sequence[str]) -> str:
    """The media type of ``offered`` that ``accept`` prefers: each offer takes the q of the most specific
    range that matches it (``text/plain`` over ``text/*`` over ``*/*``); a tie, no header, or a header
    that accepts none of them, gives the first offered (a 406 is never the answer: JSON is)."""
    if not accept:
        return offered[0]
    ranges: list[tuple[str, float]] = []
    for part in accept.split(","):  # as long as aiohttp lets a header be (8190 bytes)
        media, *params = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                value = value.strip()
                quality = float(value) if _QUALITY.match(value) else -1.0  # malformed: ignored
        if quality >= 0:
            ranges.append((media.lower(), quality))

    def score(offer: str) -> float:
        family = offer.split("/", maxsplit=1)[0] + "/*"
        matches = [(3 if media == offer else 2 if media == family else 1, q)
                   for media, q in ranges if media in (offer, family, "*/*")]  # fmt: skip
        return max(matches)[1] if matches else 0.0

    scores = [score(offer) for offer in offered]
    best = max(range(len(offered)), key=lambda i: (scores[i], -i))
    return offered[best] if scores[best] > 0 else offered[0]
