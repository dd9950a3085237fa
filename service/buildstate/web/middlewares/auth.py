"""The auth middleware: every request's credential, rate limit, scope and platform, checked in one place.

What a route needs comes from ``ROUTES`` (``web/routing.py``), looked up by the route aiohttp matched
(method and canonical path), so the table that registers a route is the table that protects it. Public
routes are matched exactly: ``/healthz``, ``/health/`` or ``/health/../admin`` match no public route and
need a credential like everything else; so do paths that match no route at all (401 before 404, so
probing for routes needs a credential).

Order of checks: credential (401) -> rate limit (429) -> scope (403) -> platform (403). A refused
credential also counts against its client address: past ``BUILDSTATE_AUTH_FAILURES_PER_CLIENT`` within
the window, the client's refused requests are 429 with ``Retry-After`` and write nothing. Denied attempts
on mutating routes are written to the audit log (with the key's public id, never the key), repeats of one
source, actor, action and status within the window as one row with a count. Every authenticated
response carries the rate-limit fields.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Middleware

from buildstate.auth.keys import PUBLIC_ID
from buildstate.auth.principal import Principal
from buildstate.auth.scopes import spell
from buildstate.auth.service import ANONYMOUS
from buildstate.errors import Forbidden, NotFound, Problem, TooManyRequests, Unauthorized
from buildstate.store.types import AuditEntry
from buildstate.web.requests import read_body
from buildstate.web.routing import Handler, Route, RouteTable
from buildstate.web.typedefs import ACTOR, AUTHENTICATOR, METRICS, PRINCIPAL, REQUEST_ID, STORE

log = logging.getLogger("buildstate.auth")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_SCOPE_HINTS = {
    "read": "read keys, and every user role",
    "write": "write keys, operator and admin users",
    "reset": "write keys, operator and admin users",
    "release": "release keys, operator and admin users",
    "admin": "admin keys and admin users",
}


def _denied_action(request: web.Request, route: Route | None) -> str:
    if route is not None and route.action:
        return route.action
    resource = request.match_info.route.resource
    return f"{request.method} {resource.canonical if resource is not None else request.path}"


async def _audit_denied(
    request: web.Request, route: Route | None, problem: Problem, credential: str | None
) -> None:
    detail: dict[str, str] = {"reason": problem.detail}
    if credential is not None:
        detail["credential"] = credential
    target = next(iter(request.match_info.values()), None) if route is not None else None
    entry = AuditEntry(
        actor=request.get(ACTOR, ANONYMOUS),
        action=_denied_action(request, route),
        target=target[:200] if target is not None else None,
        outcome="denied",
        status_code=problem.status,
        request_id=request.get(REQUEST_ID),
        source=request.remote,
        detail=detail,
    )
    await request.app[AUTHENTICATOR].record_denial(entry, throttled=isinstance(problem, TooManyRequests))


async def _count_refusal(request: web.Request, refused: Unauthorized) -> None:
    """A refused credential counts against its client: past the client's allowance the answer is 429
    (with ``Retry-After``) instead of 401, and nothing is written for it."""
    decision = await request.app[AUTHENTICATOR].credential_refused(request.remote)
    if not decision.allowed:
        raise TooManyRequests(
            f"too many refused credentials from this address; retry in {decision.retry_after} s",
            slug="credential-failures-throttled",
            headers={"Retry-After": str(decision.retry_after)},
        ) from refused


async def _platform_of(request: web.Request, route: Route) -> str | None:
    """The platform of the build a write touches: from the path's build, or the body's ``platform``."""
    ref = request.match_info.get("ref")
    if ref is not None:
        try:
            build = await request.app[STORE].get_build(ref)
        except NotFound:
            return None  # the handler answers 404
        return build.platform
    if route.body is not None and "platform" in route.body.model_fields:
        try:  # with read_body's guards (size, NUL, values), and parsed once for the handler too
            body, _ = await read_body(request, route.body)
        except Problem:
            return None  # the handler answers 400/413/415/422 from the same body
        platform = getattr(body, "platform", None)
        return platform if isinstance(platform, str) else None
    return None


async def _authorize(request: web.Request, route: Route, principal: Principal) -> None:
    if not principal.has(route.scope):
        granted = spell(principal.scopes) or "none"
        raise Forbidden(
            f"{request.method} {route.path} needs the '{route.scope}' scope ({_SCOPE_HINTS[route.scope]}); "
            f"this credential has: {granted}",
            slug="missing-scope",
            extra={"missing_scope": route.scope},
        )
    if principal.platforms is not None and request.method not in SAFE_METHODS:
        platform = await _platform_of(request, route)
        if platform is not None and not principal.may_touch(platform):
            allowed = ", ".join(sorted(principal.platforms))
            raise Forbidden(
                f"this key may only change builds on {allowed}; this build is on {platform}",
                slug="platform-not-allowed",
                extra={"platform": platform},
            )


def _credential_hint(request: web.Request) -> str | None:
    """The public id of a presented key (never the key itself), for the audit row of a 401."""
    presented = request.headers.get("X-API-Key", "")
    match = PUBLIC_ID.match(presented.strip())
    return f"key:{match.group(0)}" if match else None


async def _admit(request: web.Request, route: Route | None) -> dict[str, str]:
    """Identify, rate-limit and authorize the caller; the rate-limit fields for the response."""
    authenticator = request.app[AUTHENTICATOR]
    try:  # not a coroutine of its own: this runs for every authenticated request
        principal = await authenticator.identify(request.headers)
    except Unauthorized as refused:
        await _count_refusal(request, refused)
        raise
    request[PRINCIPAL] = principal
    request[ACTOR] = principal.actor
    decision = await authenticator.limit(principal)
    headers = decision.headers()
    if not decision.allowed:
        raise TooManyRequests(
            f"rate limit: {decision.bucket.burst} requests at once, refilled at "
            f"{decision.bucket.rate:g}/s; retry in {decision.retry_after} s",
            headers=headers,
        )
    if route is not None:
        try:
            await _authorize(request, route, principal)
        except Forbidden as refused:
            refused.headers = {**headers, **refused.headers}
            raise
    return headers


def auth_middleware(table: RouteTable) -> Middleware:
    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        route, public = table.find(request)
        request[ACTOR] = ANONYMOUS
        if public:
            return await handler(request)
        try:
            limit_headers = await _admit(request, route)
        except (Unauthorized, Forbidden, TooManyRequests) as denied:
            request.app[METRICS].record_auth_failure(denied.type_slug)
            if denied.type_slug == "credential-failures-throttled":
                raise  # the flood itself: nothing is written for it (the metrics count it)
            if request.method not in SAFE_METHODS and route is not None:  # attempts at changes, not scans
                hint = _credential_hint(request) if isinstance(denied, Unauthorized) else None
                await _audit_denied(request, route, denied, hint)
            raise
        try:
            response = await handler(request)
        except Problem as problem:
            problem.headers = {**limit_headers, **problem.headers}
            raise
        except web.HTTPException as exc:
            exc.headers.update(limit_headers)
            raise
        response.headers.update(limit_headers)
        return response

    return authenticate
