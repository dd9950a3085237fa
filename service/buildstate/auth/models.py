"""Request and response models of ``/token``, ``/admin/*`` and ``/audit`` (they feed /openapi.json too)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints

from buildstate.auth.scopes import KeyScope, Role
from buildstate.models import Credential, QueryTime, Slug

# No NUL: PostgreSQL text cannot hold it, and a form sign-in is not checked for it by read_body.
Username = Annotated[
    str, StringConstraints(min_length=1, max_length=64, strip_whitespace=True, pattern=r"^[^\x00]+$")
]
Password = Annotated[
    SecretStr, Field(min_length=1, max_length=1024, description="Never logged, never stored in clear.")
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Response(BaseModel):
    model_config = ConfigDict(frozen=True)


class TokenRequest(BaseModel):
    """JSON ``{"username", "password"}``, or the OAuth2 password grant as a form (RFC 6749 4.3)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    username: Username
    password: Password
    grant_type: Literal["password"] | None = None
    scope: Annotated[str, StringConstraints(max_length=200)] | None = Field(
        default=None, description="Space-separated subset of the role's scopes; default: all of them."
    )


class TokenResponse(_Response):
    access_token: Annotated[str, Credential()]
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int = Field(description="Seconds until the token expires.")
    scope: str


class KeyCreate(_Request):
    name: Annotated[str, StringConstraints(min_length=1, max_length=100, strip_whitespace=True)]
    scopes: Annotated[list[KeyScope], Field(min_length=1, max_length=3)]
    platforms: Annotated[list[Slug], Field(min_length=1, max_length=100)] | None = Field(
        default=None, description="Only builds on these platforms may be changed; default: every platform."
    )
    expires_in_days: Annotated[int, Field(ge=1, le=3650)] | None = None


class ApiKeyInfo(_Response):
    id: str = Field(description="The key's public id (bs_ and 8 hex digits); the actor is key:<id>.")
    name: str
    scopes: list[str]
    platforms: list[str] | None
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    last_used_at: datetime | None = Field(description="Updated at most once a minute.")
    revoked_at: datetime | None
    revoked_by: str | None
    active: bool

    @classmethod
    def of(cls, record: Any) -> ApiKeyInfo:
        now = datetime.now(UTC)
        expired = record.expires_at is not None and record.expires_at <= now
        return cls(
            id=record.prefix,
            name=record.name,
            scopes=list(record.scopes),
            platforms=list(record.platforms) if record.platforms is not None else None,
            created_at=record.created_at,
            created_by=record.created_by,
            expires_at=record.expires_at,
            last_used_at=record.last_used_at,
            revoked_at=record.revoked_at,
            revoked_by=record.revoked_by,
            active=record.revoked_at is None and not expired,
        )


class CreatedKey(ApiKeyInfo):
    key: Annotated[str, Credential()] = Field(
        description="The key itself: shown this once, stored only as a hash."
    )


class KeyList(_Response):
    keys: list[ApiKeyInfo]


class KeyListQuery(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    include_revoked: bool = False


class UserCreate(_Request):
    username: Username
    role: Role
    password: Password


class PasswordChange(_Request):
    password: Password


class UserInfo(_Response):
    username: str
    role: str
    created_at: datetime
    created_by: str
    password_changed_at: datetime
    disabled_at: datetime | None
    disabled: bool

    @classmethod
    def of(cls, record: Any) -> UserInfo:
        return cls(
            username=record.username,
            role=record.role,
            created_at=record.created_at,
            created_by=record.created_by,
            password_changed_at=record.password_changed_at,
            disabled_at=record.disabled_at,
            disabled=record.disabled_at is not None,
        )


class UserList(_Response):
    users: list[UserInfo]


Outcome = Literal["allowed", "replayed", "refused", "denied"]


class AuditQuery(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    actor: Annotated[str, StringConstraints(max_length=200)] | None = Field(
        default=None, description="e.g. key:bs_1a2b3c4d, user:alice, anonymous"
    )
    action: Annotated[str, StringConstraints(max_length=100)] | None = Field(
        default=None, description="e.g. build.state, build.reset, key.create, user.disable, auth.token"
    )
    outcome: Outcome | None = None
    since: QueryTime | None = None
    before: Annotated[int, Field(ge=1, le=2**62)] | None = Field(
        default=None, description="next_before of the previous page."
    )
    limit: Annotated[int, Field(ge=1, le=500)] = 100


class AuditEntryOut(_Response):
    id: int
    at: datetime
    actor: str
    action: str
    target: str | None
    outcome: str = Field(description="allowed, replayed, refused (a rule said no), denied (auth said no)")
    status_code: int | None
    request_id: str | None
    source: str | None
    detail: dict[str, Any] | None
    repeats: int = Field(
        description="How many times this happened: the denials of one source, actor, action and status "
        "within one window (BUILDSTATE_AUTH_FAILURE_WINDOW_SECONDS) are one row; the first one's details."
    )
    last_at: datetime | None = Field(description="When the last of the repeats happened.")


class AuditPage(_Response):
    entries: list[AuditEntryOut] = Field(description="Newest first.")
    next_before: int | None = Field(description="Pass as ?before= for the next (older) page.")
