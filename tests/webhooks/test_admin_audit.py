"""The webhook admin calls write the audit log as things went, on both stores: the real status of every
answer (``webhook.create`` is a 201), and a call on a missing webhook or delivery is a ``refused`` 404 row,
never an ``allowed`` one committed before the 404."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from tests.conftest import make_settings
from tests.store.test_rules import create

from buildstate.config import Settings
from buildstate.store import Store
from buildstate.store.access import AuditFilter
from buildstate.webhooks.store import WebhookStore

Client = TestClient[Any, Any]
HOOK = {"name": "ci", "url": "https://hooks.example.com/buildstate"}


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path, webhook_dispatcher=False)  # deliveries wait to be looked at


async def rows(store: Store) -> list[tuple[str, str | None, str, int | None]]:
    found = await store.access.list_audit(AuditFilter(limit=100))
    return [
        (r.action, r.target, r.outcome, r.status_code)
        for r in reversed(found)
        if r.action.startswith("webhook")
    ]


async def test_creating_a_webhook_is_audited_with_the_status_it_answered(
    client: Client, store: Store
) -> None:
    created = await client.post("/admin/webhooks", json=HOOK)
    assert created.status == 201
    refused = await client.post("/admin/webhooks", json={**HOOK, "secret": "not base64, not at all"})
    assert refused.status == 422
    assert await rows(store) == [
        ("webhook.create", "webhook:ci", "allowed", 201),
        ("webhook.create", "webhook:ci", "refused", 422),
    ]


async def test_calls_on_a_missing_webhook_are_audited_as_refused_404s(client: Client, store: Store) -> None:
    for action in ("disable", "enable", "test"):
        answer = await client.post(f"/admin/webhooks/9999/{action}")
        assert answer.status == 404, action
    answer = await client.post("/admin/webhooks/9999/deliveries/1/redeliver")
    assert answer.status == 404
    assert await rows(store) == [
        ("webhook.disable", "webhook:9999", "refused", 404),
        ("webhook.enable", "webhook:9999", "refused", 404),
        ("webhook.test", "webhook:9999", "refused", 404),
        ("webhook.redeliver", "delivery:1", "refused", 404),
    ]
    [row] = await store.access.list_audit(AuditFilter(action="webhook.disable"))
    assert row.detail == {"reason": "no webhook 9999"}


async def test_redelivering_is_audited_as_it_went(client: Client, store: Store) -> None:
    hook = await (await client.post("/admin/webhooks", json=HOOK)).json()
    await create(store, "audited")
    [delivery] = (
        await WebhookStore(store).deliveries(hook["id"], status=None, before=None, limit=5)
    ).deliveries
    base = f"/admin/webhooks/{hook['id']}/deliveries"
    assert (await client.post(f"{base}/{delivery.id}/redeliver")).status == 200
    assert (await client.post(f"{base}/{delivery.id + 1}/redeliver")).status == 404
    assert (
        await client.post(f"/admin/webhooks/{hook['id'] + 1}/deliveries/{delivery.id}/redeliver")
    ).status == 404
    # A delivery in flight (claimed by a dispatcher) cannot be redelivered: refused, not allowed.
    [claimed] = await WebhookStore(store).claim(now=datetime.now(UTC), lease=timedelta(minutes=5), limit=5)
    assert claimed.id == delivery.id
    assert (await client.post(f"{base}/{delivery.id}/redeliver")).status == 404
    assert [(action, target, outcome, status) for action, target, outcome, status in await rows(store)
            if action == "webhook.redeliver"] == [
        ("webhook.redeliver", f"delivery:{delivery.id}", "allowed", 200),
        ("webhook.redeliver", f"delivery:{delivery.id + 1}", "refused", 404),
        ("webhook.redeliver", f"delivery:{delivery.id}", "refused", 404),
        ("webhook.redeliver", f"delivery:{delivery.id}", "refused", 404),
    ]  # fmt: skip
