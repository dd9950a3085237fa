"""The webhook operations shared by the admin routes and the ``buildstate webhooks`` command.

Both write the audit log as things really went: a refused subscription (a URL the policy or the client
cannot use, a secret that cannot sign) is a ``refused`` row with its status, and every test send is a row
that says what came of it (``webhook.test``; a test makes this service connect somewhere, like a create).
"""

from __future__ import annotations

from datetime import UTC, datetime

from buildstate.config import Settings
from buildstate.errors import Problem
from buildstate.store import Store
from buildstate.store.base import AuditEntry, WriteContext
from buildstate.webhooks import payloads
from buildstate.webhooks.dispatcher import Dispatcher
from buildstate.webhooks.models import WebhookCreate, WebhookCreated, WebhookKind, WebhookTestResult
from buildstate.webhooks.secrets import SecretBox, check_signing_secret, new_signing_secret
from buildstate.webhooks.store import WebhookStore
from buildstate.webhooks.targets import TargetPolicy


def _checked(settings: Settings, body: WebhookCreate) -> tuple[str, str]:
    """The URL to store and the secret to seal, or a 422 saying why the subscription cannot work."""
    policy = TargetPolicy.from_settings(settings)
    policy.check_url(body.url)
    if body.kind == WebhookKind.CONCOURSE:
        url, token = payloads.split_concourse_url(body.url, body.secret)
        policy.check_url(payloads.with_token(url, token))  # what will be sent, token and all
        return url, token
    if body.secret is not None:
        check_signing_secret(body.secret)
    return body.url, body.secret or new_signing_secret()


async def subscribe(
    store: Store, settings: Settings, body: WebhookCreate, ctx: WriteContext
) -> WebhookCreated:
    """Check the target and the secret, seal the secret (generated if not given), store the subscription."""
    target = f"webhook:{body.name}"
    try:
        url, secret = _checked(settings, body)
    except Problem as refused:
        await store.record_audit(
            AuditEntry(
                ctx.actor, "webhook.create", target, "refused", refused.status, ctx.request_id, ctx.source,
                {"reason": refused.detail},
            )
        )  # fmt: skip
        raise
    box = SecretBox.from_settings(settings)
    sealed = box.seal(secret)
    filters = body.model_dump(include={"platform", "os_version", "image_type", "states", "event_types"})
    stored = await WebhookStore(store).create(
        name=body.name,
        url=url,
        url_sealed=box.seal(url),
        kind=body.kind,
        filters=filters,
        secret_encrypted=sealed,
        ctx=ctx,
        now=datetime.now(UTC),
    )
    return WebhookCreated(**stored.public.model_dump(), secret=secret)


async def send_test(dispatcher: Dispatcher, webhook_id: int, ctx: WriteContext) -> WebhookTestResult:
    """Send a signed test message now; the answer says no more than a delivery's log would."""
    store = dispatcher.store
    hook = await dispatcher.hooks.audited_get(webhook_id, "webhook.test", ctx)
    attempt = await dispatcher.send_test(hook)
    result = WebhookTestResult(
        ok=attempt.ok, status_code=attempt.status, duration_ms=attempt.duration_ms, error=attempt.error
    )
    await store.record_audit(
        AuditEntry(
            ctx.actor, "webhook.test", f"webhook:{webhook_id}", "allowed", 200, ctx.request_id, ctx.source,
            {"ok": result.ok, "result": result.error or f"HTTP {result.status_code}"},
        )
    )  # fmt: skip
    return result
