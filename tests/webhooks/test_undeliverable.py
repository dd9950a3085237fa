"""Deliveries that can never succeed, on both stores: refused at creation where they can be seen coming; a
stored one (made before the check existed, or by a changed key) ends ``dead`` with its reason, once, logged
as one line without a traceback, and ``/test`` explains instead of answering 500.

And the Concourse ``webhook_token`` of such a webhook goes nowhere but the receiver: not into the log, an
attempt's error, ``last_error`` or any answer (the issue's port 99999, which ``urlsplit`` accepts and yarl
refuses, made aiohttp put the whole URL into its error text).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from cryptography.fernet import Fernet
from tests.conftest import ClientMaker, make_settings
from tests.store.test_rules import create
from tests.webhooks.conftest import CONCOURSE_PATH, CONCOURSE_TOKEN, Receiver
from tests.webhooks.test_delivery import subscribe

from buildstate.config import Settings
from buildstate.store import Store
from buildstate.store.base import WriteContext
from buildstate.store.sql import Params
from buildstate.webhooks import payloads
from buildstate.webhooks.dispatcher import Dispatcher
from buildstate.webhooks.models import WebhookKind
from buildstate.webhooks.secrets import SecretBox
from buildstate.webhooks.store import WebhookStore

Client = TestClient[Any, Any]
NOT_BASE64 = "not-base64-but-long-enough!"


@pytest.fixture
def allowing(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path, webhook_allow_private=True, webhook_retry_base_seconds=0.01)


@pytest.mark.parametrize(
    "secret", [NOT_BASE64, "whsec_" + "A" * 17, "whsec_" + "A" * 20 + "!!!!", "whsec_" + "=" * 16]
)
async def test_a_signing_secret_that_is_not_base64_is_refused_at_creation(
    client: Client, secret: str
) -> None:
    answer = await client.post(
        "/admin/webhooks", json={"name": "h", "url": "https://hooks.example.com/x", "secret": secret}
    )
    assert answer.status == 422
    problem = await answer.json()
    assert problem["type"].endswith("/bad-webhook-secret")
    assert secret not in await answer.text()
    assert (await (await client.get("/admin/webhooks")).json())["webhooks"] == []


@pytest.mark.parametrize(
    "url",
    [
        f"http://127.0.0.1:99999{CONCOURSE_PATH}?webhook_token={CONCOURSE_TOKEN}",  # urlsplit: fine; yarl: no
        f"http://[::1{CONCOURSE_PATH}?webhook_token={CONCOURSE_TOKEN}",
        f"http://ci.example.com\\@127.0.0.1{CONCOURSE_PATH}?webhook_token={CONCOURSE_TOKEN}",
    ],
)
async def test_a_url_the_client_cannot_parse_is_refused_at_creation_without_echoing_it(
    client: Client, url: str
) -> None:
    answer = await client.post("/admin/webhooks", json={"name": "ci", "url": url, "kind": "concourse"})
    assert answer.status == 422
    assert (await answer.json())["type"].endswith("/bad-webhook-url")
    assert CONCOURSE_TOKEN not in await answer.text()


async def _stored(store: Store, settings: Settings, url: str, **fields: Any) -> int:
    """A webhook as an older version (or a direct database edit) may have stored it: no checks."""
    return (await subscribe(store, settings, url, **fields)).public.id


def _no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []


async def test_a_stored_webhook_that_cannot_deliver_ends_dead_once_and_is_disabled(
    store: Store, allowing: Settings, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    cases = {
        "secret not base64": await _stored(store, allowing, receiver.url, secret=NOT_BASE64),
        "port out of range": await _stored(
            store, allowing, f"http://127.0.0.1:99999{CONCOURSE_PATH}", kind=WebhookKind.CONCOURSE,
            secret=CONCOURSE_TOKEN,
        ),
    }  # fmt: skip
    sealed_elsewhere = SecretBox(Fernet.generate_key()).seal("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    lost_key = await WebhookStore(store).create(
        name="lost key", url=receiver.url, url_sealed=SecretBox.from_settings(allowing).seal(receiver.url),
        kind=WebhookKind.JSON, filters={}, secret_encrypted=sealed_elsewhere, ctx=WriteContext(actor="admin"),
        now=datetime.now(UTC),
    )  # fmt: skip
    cases["secret sealed with another key"] = lost_key.public.id
    for number in range(3):
        await create(store, f"doomed-{number}")
    dispatcher = Dispatcher(store, allowing)
    caplog.clear()
    async with dispatcher.session() as session:
        for _ in range(5):  # later rounds find nothing to do: the webhooks are disabled
            await dispatcher.run_once(session)
    hooks = WebhookStore(store)
    for name, webhook_id in cases.items():
        page = await hooks.deliveries(webhook_id, status=None, before=None, limit=10)
        assert [d.status for d in page.deliveries] == ["dead"] * 3, name
        reasons = {d.last_error for d in page.deliveries}
        assert len(reasons) == 1, name
        [reason] = reasons
        hook = (await hooks.get(webhook_id)).public
        assert (hook.enabled, hook.disabled_reason) == (False, reason), name
        detail = await hooks.delivery(webhook_id, page.deliveries[0].id)
        assert [(a.attempt, a.error) for a in detail.attempt_log or []] == [(1, reason)], name
    assert receiver.received == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == len(cases), warnings  # one line per webhook, not one per delivery or round
    _no_traceback(caplog)
    everything = " ".join(warnings) + str([await hooks.deliveries(i, status=None, before=None, limit=10)
                                           for i in cases.values()])  # fmt: skip
    assert CONCOURSE_TOKEN not in everything


async def test_a_payload_that_cannot_be_built_kills_only_its_delivery(
    store: Store, allowing: Settings, receiver: Receiver, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    webhook_id = await _stored(store, allowing, receiver.url)
    await create(store, "unbuildable")

    def unbuildable(*_args: Any, **_kwargs: Any) -> payloads.Request:
        raise ValueError("a field no payload can hold")

    monkeypatch.setattr(payloads, "build_request", unbuildable)
    dispatcher = Dispatcher(store, allowing)
    async with dispatcher.session() as session:
        await dispatcher.run_once(session)
        await dispatcher.run_once(session)
    [delivery] = (
        await WebhookStore(store).deliveries(webhook_id, status=None, before=None, limit=5)
    ).deliveries
    assert (delivery.status, delivery.last_error) == ("dead", "its payload cannot be built (ValueError)")
    assert (await WebhookStore(store).get(webhook_id)).public.enabled  # the webhook itself is fine
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    _no_traceback(caplog)


async def test_the_test_button_of_a_webhook_that_cannot_deliver_explains_instead_of_failing(
    make_client: ClientMaker, admin_key: str, settings: Settings, store: Store,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    allowing = make_settings(settings.database_url, settings.data_dir, webhook_allow_private=True)
    client = await make_client(allowing, headers={"X-API-Key": admin_key})
    bad_secret = await _stored(store, allowing, "http://127.0.0.1:9/x", secret=NOT_BASE64)
    bad_url = await _stored(
        store, allowing, f"http://127.0.0.1:99999{CONCOURSE_PATH}", kind=WebhookKind.CONCOURSE,
        secret=CONCOURSE_TOKEN,
    )  # fmt: skip
    for webhook_id in (bad_secret, bad_url):
        answer = await client.post(f"/admin/webhooks/{webhook_id}/test")
        assert answer.status == 200
        result = await answer.json()
        assert result["ok"] is False
        assert result["error"].startswith("its ")
        assert CONCOURSE_TOKEN not in await answer.text()
    _no_traceback(caplog)


async def test_a_delivery_tried_a_thousand_times_still_gets_a_next_attempt(
    store: Store, allowing: Settings, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """Attempts keep counting across redeliveries and lease take-overs; the backoff once overflowed a float
    past ~1025 of them and failed the bookkeeping of that delivery on every round."""
    webhook_id = await _stored(store, allowing, receiver.url)
    receiver.answers = [(503, {})]
    await create(store, "tried-often")
    p = Params(store.dialect)
    await store.run_batch([(f"UPDATE webhook_deliveries SET attempts = {p(1500)}", p.values)])
    dispatcher = Dispatcher(store, allowing)
    async with dispatcher.session() as session:
        assert await dispatcher.run_once(session) == 1
    [delivery] = (
        await WebhookStore(store).deliveries(webhook_id, status=None, before=None, limit=5)
    ).deliveries
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("pending", 1501, "HTTP 503")
    assert delivery.next_attempt_at - datetime.now(UTC) <= timedelta(hours=1)
    _no_traceback(caplog)
