"""CORS for browser front ends: only the origins in ``BUILDSTATE_CORS_ORIGINS`` (none by default).

A listed origin gets its own name back with ``Access-Control-Allow-Credentials: true``. ``*`` in the
list lets any origin read without credentials (browsers never send cookies or auth to ``*``, and this
service echoes no origin it was not told about). Preflights (``OPTIONS`` with
``Access-Control-Request-Method``) are answered here, before authentication, as browsers send them
without credentials. ``web.observe`` applies it outside ``problems`` so error responses carry the headers
too: a browser can only show a 401 or 429 it is allowed to read.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web

from buildstate.errors import Forbidden
from buildstate.web.middlewares.problems import problem_response

ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, X-API-Key, Idempotency-Key, X-Request-ID"
EXPOSE_HEADERS = "RateLimit, RateLimit-Policy, Retry-After, X-Request-ID, Idempotent-Replayed, Location"
MAX_AGE = "600"


class Cors:
    """What CORS does to a request: answer its preflight (``preflight``), then add the fields its answer
    needs (``decorate``). ``web.observe`` calls both, so that CORS is no middleware layer of its own."""

    def __init__(self, origins: Iterable[str]) -> None:
        origins = list(origins)
        self.listed = frozenset(origin.rstrip("/") for origin in origins if origin != "*")
        self.anyone = "*" in origins

    def grant(self, origin: str) -> dict[str, str] | None:
        if origin in self.listed:
            return {"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Credentials": "true"}
        if self.anyone:
            return {"Access-Control-Allow-Origin": "*"}
        return None

    def preflight(self, request: web.Request, origin: str) -> web.Response | None:
        """The answer to a preflight from ``origin``, or None for any other request."""
        if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
            return None
        allowed = self.grant(origin)
        if allowed is None:
            return problem_response(
                Forbidden(f"origin {origin!r} is not allowed; see BUILDSTATE_CORS_ORIGINS", slug="cors"),
                request,
            )
        return web.Response(
            status=204,
            headers={
                "Vary": "Origin",
                **allowed,
                "Access-Control-Allow-Methods": ALLOW_METHODS,
                "Access-Control-Allow-Headers": ALLOW_HEADERS,
                "Access-Control-Max-Age": MAX_AGE,
            },
        )

    def decorate(self, response: web.StreamResponse, origin: str) -> None:
        """The fields of the answer to a request from ``origin`` (not a preflight)."""
        if self.listed:  # the answer depends on the Origin: caches must not hand one origin's to another
            response.headers.add("Vary", "Origin")
        allowed = self.grant(origin)
        if allowed is not None:
            response.headers.update(allowed)
            response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
