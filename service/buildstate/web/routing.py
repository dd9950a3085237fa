"""The route table: every HTTP endpoint declared once, in ``ROUTES``, with its models and the scope it needs.

The same table registers the aiohttp routes (``web.app``), generates ``/openapi.json`` (``web.openapi``) and
tells the auth middleware what each route requires (``RouteTable``), so none of the three can disagree with
the others. The handlers live in ``web/routes/``, one module per resource; they register themselves here
with ``@route(...)`` when ``buildstate.web.routes`` is imported.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from aiohttp import web
from pydantic import BaseModel

from buildstate.models import holds_credential

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Scope = Literal["public", "read", "write", "reset", "release", "admin"]


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
    # Query parameters whose names are a pattern (``label.{key}``), which a query model cannot declare.
    query_patterns: tuple[HeaderParam, ...] = ()
    # Media types a JSON success answer may also be sent as (chosen by ``Accept``), each a string.
    alternates: tuple[str, ...] = ()

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
    """A header (or a query parameter named by a pattern) a route reads: its OpenAPI parameter."""

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
    query_patterns: tuple[HeaderParam, ...] = (),
    alternates: tuple[str, ...] = (),
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
                query_patterns,
                alternates,
            )
        )
        return handler

    return register


@dataclass(frozen=True, slots=True)
class RouteTable:
    """What each (method, canonical path) needs; ``public`` adds routes that are not in ``ROUTES``."""

    routes: dict[tuple[str, str], Route]
    public: frozenset[tuple[str, str]]

    @classmethod
    def of(cls, routes: Iterable[Route], public: Iterable[tuple[str, str]] = ()) -> RouteTable:
        table = {(r.method, r.path): r for r in routes}
        extra = frozenset(public) | {key for key, r in table.items() if r.scope == "public"}
        return cls(table, extra)

    def find(self, request: web.Request) -> tuple[Route | None, bool]:
        """The matched route (if it is in ROUTES) and whether the request is to a public route."""
        resource = request.match_info.route.resource
        if resource is None:  # no route matched: 404 or 405 after authentication
            return None, False
        method = "GET" if request.method == "HEAD" else request.method
        key = (method, resource.canonical)
        # Exact: the matched route is public and the path is literally its path (no template, no prefix).
        public = key in self.public and request.path == resource.canonical
        return self.routes.get(key), public
