"""The middlewares that wrap every request first: request ids and problem+json errors (``web.middlewares``
says in which order all of them run)."""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import secrets
from typing import Any

from aiohttp import web, web_urldispatcher
from aiohttp.http import HttpVersion11

from buildstate.errors import (
    BadRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Problem,
    Unprocessable,
    UnsupportedMediaType,
)
from buildstate.redaction import redact
from buildstate.web.routing import Handler
from buildstate.web.typedefs import REQUEST_ID

log = logging.getLogger("buildstate.web")

PROBLEM_JSON = "application/problem+json"
# nginx's "client closed request": what a request is counted and logged as when its client hung up first.
CLIENT_CLOSED_REQUEST = 499
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
# The content codings aiohttp decodes without optional packages (br and zstd need Brotli and zstandard, and
# its parser refuses them before any handler runs); any other coding would reach a handler undecoded.
ACCEPTED_CODINGS = frozenset({"", "identity", "gzip", "deflate"})


def problem_response(problem: Problem, request: web.Request | None = None) -> web.Response:
    body = problem.to_dict(instance=request.path if request is not None else None)
    return web.Response(
        body=json.dumps(body).encode(),
        status=problem.status,
        content_type=PROBLEM_JSON,
        headers=problem.headers,
    )


def _from_http_exception(exc: web.HTTPException) -> Problem:
    if isinstance(exc, web.HTTPNotFound):
        return NotFound("no such resource; see GET /openapi.json for the routes", slug="no-route")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return MethodNotAllowed(
            f"{exc.method} is not allowed here; allowed: {allowed}", headers={"Allow": allowed}
        )
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return PayloadTooLarge(f"the request body is larger than the limit: {exc.text}")
    if isinstance(exc, web.HTTPUnsupportedMediaType):
        return UnsupportedMediaType(exc.text or "unsupported media type")
    generic = type("HTTPProblem", (Problem,), {"status": exc.status, "title": exc.reason, "slug": "http"})
    detail: Any = exc.text if exc.text and not exc.text.startswith(str(exc.status)) else exc.reason
    return generic(str(detail))  # type: ignore[no-any-return]


def _refuse_nul(request: web.Request) -> None:
    """U+0000 in the path or the query names nothing and PostgreSQL text cannot hold it: refuse it here,
    before any route hands it to a store (bodies are checked in ``requests.read_body``)."""
    if "\x00" in request.path:
        raise NotFound("no such resource: the path holds a NUL character", slug="nul-character")
    if request.query_string and any(
        "\x00" in name or "\x00" in value for name, value in request.query.items()
    ):
        raise Unprocessable("query parameters may not contain the NUL character", slug="nul-character")


def _refuse_coding(request: web.Request) -> None:
    coding = request.headers.get("Content-Encoding")
    if coding is not None and coding.strip().lower() not in ACCEPTED_CODINGS:
        raise UnsupportedMediaType(
            "send the body with Content-Encoding identity, gzip or deflate",
            slug="unsupported-content-encoding",
            headers={"Accept-Encoding": "gzip, deflate"},  # RFC 7694
        )


async def expect_continue(request: web.Request) -> None:
    """Every route's ``Expect`` handler: ``100-continue`` is answered, any other expectation is ignored (RFC
    9110 allows either that or a 417). aiohttp's own handler runs before the middlewares: it answered other
    values with a text 417 that echoed them, and a 500 with a traceback for bytes it could not encode."""
    if (
        request.version == HttpVersion11
        and request.headers.get("Expect", "").strip().lower() == "100-continue"
    ):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the answer proper has not begun


# aiohttp has no application-wide setting for it: routes (system routes for 404/405 included, made per
# request) take the module's default when they are made.
web_urldispatcher._default_expect_handler = expect_continue


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


class _RequestIds:
    """Minted request ids: 32 hex characters, a random prefix per process and a counter. They correlate a
    response with its log lines and audit rows and grant nothing, so they need to be unique, not secret:
    64 random bits per process (drawn again in each forked worker) keep two workers or instances from
    ever sharing one, without drawing 16 random bytes from the OS on every request."""

    def __init__(self) -> None:
        self.renew()
        os.register_at_fork(after_in_child=self.renew)

    def renew(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._counter = itertools.count()

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


_mint = _RequestIds()


def request_id(request: web.Request) -> str:
    """Honour a sane ``X-Request-ID`` (no header injection, bounded, nothing shaped like a credential: the
    id is echoed, logged unredacted and kept in audit rows), else mint one; ``observe`` sets it on the
    request first of all and echoes it on the answer (one layer less than a middleware of its own)."""
    given = request.headers.get("X-Request-ID", "")
    rid = given if given and _SANE_REQUEST_ID.match(given) and redact(given) == given else _mint()
    request[REQUEST_ID] = rid
    return rid


@web.middleware
async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as RFC 9457 problem+json, router 404/405 and body-size 413 included.

    A client that hangs up before it is answered (mid-body: reading the body raises ``ConnectionResetError``)
    is not an error of the service: its request ends as a bodiless 499 that no one receives, which
    ``observe`` counts and logs as one access-log line. A connection error while the client is still
    connected (the database's, an outbound call's) stays an unhandled 500."""
    try:
        _refuse_nul(request)
        _refuse_coding(request)
        return await handler(request)
    except Problem as problem:
        return problem_response(problem, request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return problem_response(_from_http_exception(exc), request)
    except UnicodeDecodeError:
        return problem_response(BadRequest("the request is not valid UTF-8"), request)
    except web.RequestPayloadError:
        said = "the request body cannot be read: it does not match its Content-Encoding or Transfer-Encoding"
        refused = problem_response(BadRequest(said, slug="unreadable-body"), request)
        # The rest of the body cannot be parsed either: close the connection after this answer, and end the
        # body here so that aiohttp does not read it again to keep the connection (and log a traceback).
        refused.force_close()
        request.content.feed_eof()
        return refused
    except Exception as exc:
        if isinstance(exc, ConnectionError) and _client_gone(request):
            return web.Response(status=CLIENT_CLOSED_REQUEST)
        log.exception("unhandled error in %s %s", request.method, request.path)
        return problem_response(
            Problem("an unexpected error occurred; it has been logged with the request id"), request
        )
