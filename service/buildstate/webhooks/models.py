"""Models of the webhook admin API."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from buildstate.models import Credential, EventType, Slug

StateWord = Annotated[str, StringConstraints(pattern=r"^(100|[1-9]?[05]|failed|succeeded|reset)$")]


class WebhookKind(StrEnum):
    JSON = "json"  # {"type", "timestamp", "data": <event>} signed per Standard Webhooks
    CDEVENTS = "cdevents"  # a CDEvents build event in a CloudEvents envelope, signed the same way
    CONCOURSE = "concourse"  # Concourse's resource check webhook: the secret is its webhook_token


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    url: Annotated[str, StringConstraints(min_length=8, max_length=2000)]
    kind: WebhookKind = WebhookKind.JSON
    platform: Slug | None = None
    os_version: Slug | None = None
    image_type: Slug | None = None
    states: Annotated[list[StateWord], Field(min_length=1, max_length=30)] | None = None
    event_types: Annotated[list[EventType], Field(min_length=1, max_length=4)] | None = None
    secret: Annotated[str, StringConstraints(min_length=16, max_length=512)] | None = Field(
        default=None,
        description="Signing secret (whsec_...); generated when absent. For kind=concourse: the "
        "resource's webhook_token (or pass it in the URL's webhook_token parameter).",
    )


class Webhook(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    name: str
    url: str = Field(
        description="The target; a Concourse webhook_token is never shown, nor any credential-named query "
        "value (token=***)."
    )
    kind: WebhookKind
    platform: str | None
    os_version: str | None
    image_type: str | None
    states: list[str] | None
    event_types: list[str] | None
    enabled: bool
    disabled_reason: str | None
    consecutive_failures: int
    created_at: datetime
    created_by: str


class WebhookCreated(Webhook):
    secret: Annotated[str, Credential()] = Field(
        description="Shown once: verify signatures with it (Standard Webhooks); kind=concourse: the token."
    )


class WebhookList(BaseModel):
    webhooks: list[Webhook]


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERING = "delivering"
    DELIVERED = "delivered"
    DEAD = "dead"


class DeliveryAttempt(BaseModel):
    attempt: int
    at: datetime
    status_code: int | None
    duration_ms: int | None
    error: str | None


class Delivery(BaseModel):
    id: int
    webhook_id: int
    event_seq: int
    message_id: str = Field(description="The webhook-id header: the same on every retry.")
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime
    last_status_code: int | None
    last_error: str | None
    last_duration_ms: int | None
    created_at: datetime
    delivered_at: datetime | None
    attempt_log: list[DeliveryAttempt] | None = None


class DeliveryPage(BaseModel):
    deliveries: list[Delivery]
    next_before: int | None


class WebhookTestResult(BaseModel):
    ok: bool
    status_code: int | None
    duration_ms: int
    error: str | None
