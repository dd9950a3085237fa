"""``/token``, ``/admin/keys``, ``/admin/users`` and ``/audit``: signing in, managing keys and users, reading
the audit log. The rules are in ``buildstate.auth`` (``accounts``, ``service``); the rows behind
``store.access``."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from buildstate.auth import accounts
from buildstate.auth.models import (
    ApiKeyInfo,
    AuditEntryOut,
    AuditPage,
    AuditQuery,
    CreatedKey,
    KeyCreate,
    KeyList,
    KeyListQuery,
    PasswordChange,
    TokenRequest,
    TokenResponse,
    UserCreate,
    UserInfo,
    UserList,
)
from buildstate.errors import BadRequest
from buildstate.store.access import AuditFilter
from buildstate.store.types import WriteContext
from buildstate.web.requests import json_response, parse_body, parse_fields, read_body, read_query
from buildstate.web.routing import route
from buildstate.web.typedefs import ACTOR, AUTHENTICATOR, REQUEST_ID, STORE

FORM = "application/x-www-form-urlencoded"
FORM_FIELDS = 8  # grant_type, username, password, scope, client_id, ... with room to spare


def _context(request: web.Request) -> WriteContext:
    return WriteContext(actor=request[ACTOR], request_id=request[REQUEST_ID], source=request.remote)


async def _token_request(request: web.Request) -> TokenRequest:
    """JSON, or the OAuth2 form. ``curl -d '{"username": ...}'`` labels JSON as a form: a form body that
    opens with ``{`` is read as the JSON it is, so the README's one-line sign-in works as written, and is
    judged by the same rule as any JSON body (400 ``invalid-json`` when it does not parse)."""
    if request.content_type != FORM:
        body, _ = await read_body(request, TokenRequest)
        return body
    raw = await request.read()
    if raw.lstrip().startswith(b"{"):
        return parse_body(raw, TokenRequest)  # the checks of every JSON body (size, NUL, values)
    try:  # an anonymous route: a megabyte of "&a&a..." must not become half a million fields
        pairs = parse_qsl(raw.decode(), keep_blank_values=True, max_num_fields=FORM_FIELDS)
    except ValueError:
        raise BadRequest(f"a sign-in form has at most {FORM_FIELDS} fields", slug="bad-form") from None
    body = parse_fields(dict(pairs), TokenRequest)
    if body.grant_type != "password":
        raise BadRequest("a form sign-in needs grant_type=password", slug="unsupported-grant-type")
    return body


@route(
    "POST",
    "/token",
    summary="Sign in with a username and password (JSON or OAuth2 password form) for a bearer JWT",
    scope="public",
    tag="auth",
    body=TokenRequest,
    responses={200: TokenResponse},
    errors=(400, 401, 415, 422, 429),
)
async def issue_token(request: web.Request) -> web.Response:
    body = await _token_request(request)
    signed_in = await request.app[AUTHENTICATOR].sign_in(
        body.username, body.password.get_secret_value(), body.scope, _context(request)
    )
    answer = TokenResponse(
        access_token=signed_in.token, expires_in=signed_in.expires_in, scope=signed_in.scope
    )
    return json_response(answer)


# ---------------------------------------------------------------- keys


@route(
    "GET",
    "/admin/keys",
    summary="API keys (active ones unless include_revoked=true); never the keys themselves",
    scope="admin",
    tag="admin",
    query=KeyListQuery,
    responses={200: KeyList},
    errors=(422,),
)
async def list_keys(request: web.Request) -> web.Response:
    query = read_query(request, KeyListQuery)
    records = await request.app[STORE].access.list_keys(include_revoked=query.include_revoked)
    return json_response(KeyList(keys=[ApiKeyInfo.of(r) for r in records]))


@route(
    "POST",
    "/admin/keys",
    summary="Create an API key; the answer holds the key, shown this once",
    scope="admin",
    tag="admin",
    body=KeyCreate,
    responses={201: CreatedKey},
    errors=(400, 413, 415, 422),
    action="key.create",
)
async def create_key(request: web.Request) -> web.Response:
    body, _ = await read_body(request, KeyCreate)
    key, record = await accounts.create_api_key(
        request.app[STORE],
        name=body.name,
        scopes=body.scopes,
        platforms=body.platforms,
        expires_in_days=body.expires_in_days,
        ctx=_context(request),
    )
    created = CreatedKey(**ApiKeyInfo.of(record).model_dump(), key=key)
    return json_response(created, status=201)


@route(
    "POST",
    "/admin/keys/{key_id}/revoke",
    summary="Revoke an API key: refused at once on every worker (revoking twice is harmless)",
    scope="admin",
    tag="admin",
    responses={200: ApiKeyInfo},
    errors=(404, 422),
    action="key.revoke",
)
async def revoke_key(request: web.Request) -> web.Response:
    key_id = accounts.check_key_id(request.match_info["key_id"])
    record = await request.app[STORE].access.revoke_key(key_id, _context(request))
    return json_response(ApiKeyInfo.of(record))


# ---------------------------------------------------------------- users


@route(
    "GET",
    "/admin/users",
    summary="Users and their roles",
    scope="admin",
    tag="admin",
    responses={200: UserList},
)
async def list_users(request: web.Request) -> web.Response:
    records = await request.app[STORE].access.list_users()
    return json_response(UserList(users=[UserInfo.of(r) for r in records]))


@route(
    "POST",
    "/admin/users",
    summary="Create a user: viewer (read), operator (read, write, reset, release) or admin (everything)",
    scope="admin",
    tag="admin",
    body=UserCreate,
    responses={201: UserInfo},
    errors=(400, 409, 413, 415, 422),
    action="user.create",
)
async def create_user(request: web.Request) -> web.Response:
    body, _ = await read_body(request, UserCreate)
    record = await accounts.create_user(
        request.app[STORE],
        username=body.username,
        role=body.role,
        password=body.password.get_secret_value(),
        ctx=_context(request),
    )
    return json_response(UserInfo.of(record), status=201)


@route(
    "POST",
    "/admin/users/{username}/disable",
    summary="Disable a user: sign-in and every token already issued stop working at once",
    scope="admin",
    tag="admin",
    responses={200: UserInfo},
    errors=(404, 422),
    action="user.disable",
)
async def disable_user(request: web.Request) -> web.Response:
    record = await accounts.set_disabled(
        request.app[STORE], username=request.match_info["username"], disabled=True, ctx=_context(request)
    )
    return json_response(UserInfo.of(record))


@route(
    "POST",
    "/admin/users/{username}/enable",
    summary="Enable a disabled user again (tokens from before the disable stay invalid)",
    scope="admin",
    tag="admin",
    responses={200: UserInfo},
    errors=(404, 422),
    action="user.enable",
)
async def enable_user(request: web.Request) -> web.Response:
    record = await accounts.set_disabled(
        request.app[STORE], username=request.match_info["username"], disabled=False, ctx=_context(request)
    )
    return json_response(UserInfo.of(record))


@route(
    "POST",
    "/admin/users/{username}/password",
    summary="Set a user's password; tokens issued before stop working",
    scope="admin",
    tag="admin",
    body=PasswordChange,
    responses={200: UserInfo},
    errors=(400, 404, 413, 415, 422),
    action="user.password",
)
async def set_password(request: web.Request) -> web.Response:
    body, _ = await read_body(request, PasswordChange)
    record = await accounts.change_password(
        request.app[STORE],
        username=request.match_info["username"],
        password=body.password.get_secret_value(),
        ctx=_context(request),
    )
    return json_response(UserInfo.of(record))


# ---------------------------------------------------------------- audit


@route(
    "GET",
    "/audit",
    summary="The audit log, newest first: every change, sign-in and denied attempt",
    scope="admin",
    tag="audit",
    query=AuditQuery,
    responses={200: AuditPage},
    errors=(422,),
)
async def list_audit(request: web.Request) -> web.Response:
    query = read_query(request, AuditQuery)
    where = AuditFilter(
        actor=query.actor,
        action=query.action,
        outcome=query.outcome,
        since=query.since,
        before=query.before,
        limit=query.limit + 1,
    )
    rows = await request.app[STORE].access.list_audit(where)
    entries = [AuditEntryOut.model_validate(row, from_attributes=True) for row in rows[: query.limit]]
    next_before = entries[-1].id if len(rows) > query.limit else None
    return json_response(AuditPage(entries=entries, next_before=next_before))


# ---------------------------------------------------------------- OpenAPI

SECURITY_SCHEMES = {
    "apiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "For pipelines: bs_<id>_<secret>, from `buildstate keys create` or POST /admin/keys.",
    },
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "For people and dashboards: access_token from POST /token.",
    },
}


def document(spec: dict[str, Any]) -> dict[str, Any]:
    """What the generic generator cannot know: /token also takes the OAuth2 password form."""
    sign_in = spec["paths"]["/token"]["post"]["requestBody"]["content"]
    sign_in[FORM] = {"schema": dict(sign_in["application/json"]["schema"])}
    return spec
