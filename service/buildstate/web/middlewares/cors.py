"""CORS for browser front ends: only the origins in ``BUILDSTATE_CORS_ORIGINS`` (none by default).

A listed origin gets its own name back with ``Access-Control-Allow-Credentials: true``. ``*`` in the
list lets any origin read without credentials (browsers never send cookies or auth to ``*``, and this
service echoes no origin it was not told about). Preflights (``OPTIONS`` with
``Access-Control-Request-Method``) are answered here, before authentication, as browsers send them
without credentials. The middleware sits outside ``problems`` so error responses carry the headers too:
a browser can only show a 401 or 429 it is allowed to read.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web
from aiohttp.typedefs import Middleware

from buildstate.errors import Forbidden
from buildstate.web.middlewares.problems import problem_response
from buildstate.web.routing import Handler

ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, X-API-Key, Idempotency-Key, X-Request-ID"
EXPOSE_HEADERS = "RateLimit, RateLimit-Policy, Retry-After, X-Request-ID, Idempotent-Replayed, Location"
MAX_AGE = "600"


def cors_middleware(origins: Iterable[str]) -> Middleware:
    listed = frozenset(origin.rstrip("/") for origin in origins if origin != "*")
    anyone = "*" in origins

    def grant(origin: str) -> dict[str, str] | None:
        if origin in listed:
            return {"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Credentials": "true"}
        if anyone:
            return {"Access-Control-Allow-Origin": "*"}
        return None

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is None:
            return await handler(request)
        allowed = grant(origin)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
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
        response = await handler(request)
        if listed:  # the answer depends on the Origin: caches must not hand one origin's to another
            response.headers.add("Vary", "Origin")
        if allowed is not None:
            response.headers.update(allowed)
            response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
        return response

    return cors
