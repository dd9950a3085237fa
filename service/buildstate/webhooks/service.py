"""The webhook operations shared by the admin routes and the ``buildstate webhooks`` command."""

from __future__ import annotations

from datetime import UTC, datetime

from buildstate.config import Settings
from buildstate.store import Store
from buildstate.store.base import WriteContext
from buildstate.webhooks import payloads
from buildstate.webhooks.dispatcher import Dispatcher, validate_target
from buildstate.webhooks.models import WebhookCreate, WebhookCreated, WebhookKind, WebhookTestResult
from buildstate.webhooks.secrets import SecretBox, new_signing_secret
from buildstate.webhooks.store import WebhookStore


async def subscribe(
    store: Store, settings: Settings, body: WebhookCreate, ctx: WriteContext
) -> WebhookCreated:
    """Validate the target, seal the secret (generating one if needed) and store the subscription."""
    validate_target(body.url, settings.webhook_allowed_hosts)
    url, secret = body.url, body.secret or new_signing_secret()
    if body.kind == WebhookKind.CONCOURSE:
        url, secret = payloads.split_concourse_url(body.url, body.secret)
    sealed = SecretBox.from_settings(settings).seal(secret)
    filters = body.model_dump(include={"platform", "os_version", "image_type", "states", "event_types"})
    stored = await WebhookStore(store).create(
        name=body.name,
        url=url,
        kind=body.kind,
        filters=filters,
        secret_encrypted=sealed,
        ctx=ctx,
        now=datetime.now(UTC),
    )
    return WebhookCreated(**stored.public.model_dump(), secret=secret)


async def send_test(store: Store, settings: Settings, webhook_id: int) -> WebhookTestResult:
    hook = await WebhookStore(store).get(webhook_id)
    status, duration_ms, error = await Dispatcher(store, settings).send_test(hook)
    ok = status is not None and 200 <= status < 300
    return WebhookTestResult(ok=ok, status_code=status, duration_ms=duration_ms, error=error)
