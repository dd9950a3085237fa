"""Errors that become RFC 9457 ``application/problem+json`` responses.

::

    Problem                      any answer that is not a success, with status, title and detail
    ├── BadRequest               400  malformed request (bad query value, invalid JSON, bad cursor)
    ├── Unauthorized             401  no or bad credentials
    ├── Forbidden                403  credentials lack a scope or a platform
    ├── NotFound                 404  no such build, event or route
    ├── Conflict                 409  the request breaks a state rule (lower code, failed build, ...)
    ├── Gone                     410  what was asked for is withdrawn (a revoked build's artifact)
    ├── PayloadTooLarge          413
    ├── UnsupportedMediaType     415  body is not JSON
    ├── Unprocessable            422  fields fail validation, idempotency key reused with another body
    ├── TooManyRequests          429
    └── ServiceUnavailable       503  the database is unreachable or read-only

The store raises these directly: a rule broken in the database is the same rule broken over HTTP.
"""

from __future__ import annotations

from typing import Any, ClassVar

from buildstate.redaction import redact

PROBLEM_BASE = "https://buildstate.dev/problems/"


class Problem(Exception):
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal Server Error"
    slug: ClassVar[str] = "internal"

    def __init__(
        self,
        detail: str,
        *,
        slug: str | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.type_slug = slug or self.slug
        self.extra = extra or {}
        self.headers = headers or {}

    def to_dict(self, instance: str | None = None) -> dict[str, Any]:
        # Details and the path echo what the client sent: a key pasted into a path (or a field) must not
        # come back in an answer that proxies and browser tools keep.
        body: dict[str, Any] = {
            "type": PROBLEM_BASE + self.type_slug,
            "title": self.title,
            "status": self.status,
            "detail": redact(self.detail),
        }
        if instance:
            body["instance"] = redact(instance)
        body.update(self.extra)
        return body


class BadRequest(Problem):
    status, title, slug = 400, "Bad Request", "bad-request"


class Unauthorized(Problem):
    status, title, slug = 401, "Unauthorized", "unauthorized"


class Forbidden(Problem):
    status, title, slug = 403, "Forbidden", "forbidden"


class NotFound(Problem):
    status, title, slug = 404, "Not Found", "not-found"


class MethodNotAllowed(Problem):
    status, title, slug = 405, "Method Not Allowed", "method-not-allowed"


class Conflict(Problem):
    status, title, slug = 409, "Conflict", "conflict"


class Gone(Problem):
    status, title, slug = 410, "Gone", "gone"


class PayloadTooLarge(Problem):
    status, title, slug = 413, "Payload Too Large", "payload-too-large"


class UnsupportedMediaType(Problem):
    status, title, slug = 415, "Unsupported Media Type", "unsupported-media-type"


class Unprocessable(Problem):
    status, title, slug = 422, "Unprocessable Content", "validation"


class TooManyRequests(Problem):
    status, title, slug = 429, "Too Many Requests", "rate-limited"


class ServiceUnavailable(Problem):
    status, title, slug = 503, "Service Unavailable", "unavailable"
