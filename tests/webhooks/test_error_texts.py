"""What a failed delivery records and answers holds neither the target URL nor a credential, on both stores.

aiohttp puts the whole request URL into some of its error texts ("Connection timeout to host <url>", an
invalid URL's own text): for a Concourse webhook that URL carries the ``webhook_token``. The dispatcher
therefore stores and answers only fixed texts, and logs the exception's text redacted of the webhook's
secret and URL. The ``no_canary_in_the_log`` guard (conftest) checks every log record of these tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from tests.conftest import ClientMaker, make_settings
from tests.store.test_rules import create
from tests.webhooks.conftest import CONCOURSE_PATH, CONCOURSE_TOKEN, Receiver, StubResolver
from tests.webhooks.test_delivery import subscribe

from buildstate.config import Settings
from buildstate.store import Store
from buildstate.web.typedefs import DISPATCHER
from buildstate.webhooks.dispatcher import NO_ANSWER, Dispatcher
from buildstate.webhooks.models import WebhookKind

Client = TestClient[Any, Any]


async def every_answer_about(client: Client, webhook_id: int) -> str:
    """The text of every admin answer about a webhook: itself, the list, its deliveries, each attempt."""
    base = f"/admin/webhooks/{webhook_id}"
    page = await (await client.get(f"{base}/deliveries")).json()
    paths = ["/admin/webhooks", base, f"{base}/deliveries", "/audit"]
    paths += [f"{base}/deliveries/{delivery['id']}" for delivery in page["deliveries"]]
    return "\n".join([await (await client.get(path)).text() for path in paths])


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        database_url, tmp_path, webhook_timeout_seconds=0.3, webhook_retry_base_seconds=0.01,
        webhook_allow_private=True, webhook_dispatcher=False,
    )  # fmt: skip


async def test_a_connect_timeout_records_no_url_and_no_token(
    client: Client, store: Store, settings: Settings
) -> None:
    """A black-holed Concourse (here, a lookup that never ends): aiohttp's error holds the URL and token."""
    url = f"http://ci.example.test:8080{CONCOURSE_PATH}"
    hook = await subscribe(store, settings, url, kind=WebhookKind.CONCOURSE, secret=CONCOURSE_TOKEN)
    await create(store, "timeout")
    resolver = StubResolver({"ci.example.test": ["127.0.0.1"]}, delay=5)
    dispatcher = Dispatcher(store, settings, resolver=resolver)
    async with dispatcher.session() as session:
        await dispatcher.run_once(session)
    client.app[DISPATCHER].resolver = resolver
    tested = await client.post(f"/admin/webhooks/{hook.public.id}/test")
    assert (await tested.json())["error"] == NO_ANSWER
    text = await every_answer_about(client, hook.public.id) + await tested.text()
    assert NO_ANSWER in text
    assert CONCOURSE_TOKEN not in text
    assert "ci.example.test" not in text.replace(url, "")  # the URL appears only as the webhook's own url


async def test_a_url_only_urlsplit_accepts_records_no_token(
    client: Client, store: Store, settings: Settings
) -> None:
    """The issue's case: port 99999 passes ``urlsplit``, so an older version stored it; yarl refuses it."""
    url = f"http://127.0.0.1:99999{CONCOURSE_PATH}"
    hook = await subscribe(store, settings, url, kind=WebhookKind.CONCOURSE, secret=CONCOURSE_TOKEN)
    await create(store, "bad-port")
    dispatcher = Dispatcher(store, settings)
    async with dispatcher.session() as session:
        await dispatcher.run_once(session)
    tested = await client.post(f"/admin/webhooks/{hook.public.id}/test")
    assert tested.status == 200
    text = await every_answer_about(client, hook.public.id) + await tested.text()
    assert "cannot be parsed" in text
    assert CONCOURSE_TOKEN not in text


async def test_the_token_still_reaches_the_receiver(
    make_client: ClientMaker, admin_key: str, settings: Settings, receiver: Receiver
) -> None:
    """The other side of the redaction: the token goes on the wire, to the receiver only."""
    client = await make_client(headers={"X-API-Key": admin_key})
    target = f"http://127.0.0.1:{receiver.port}{CONCOURSE_PATH}?webhook_token={CONCOURSE_TOKEN}"
    created = await client.post("/admin/webhooks", json={"name": "ci", "url": target, "kind": "concourse"})
    assert created.status == 201
    tested = await client.post(f"/admin/webhooks/{(await created.json())['id']}/test")
    assert (await tested.json())["ok"] is True
    [(_, body, path)] = receiver.received
    assert (path, body) == (f"{CONCOURSE_PATH}?webhook_token={CONCOURSE_TOKEN}", b"")
    assert CONCOURSE_TOKEN not in await every_answer_about(client, (await created.json())["id"])


async def test_a_credential_in_a_webhook_urls_query_is_masked_in_answers_and_still_sent(
    make_client: ClientMaker, admin_key: str, settings: Settings, receiver: Receiver
) -> None:
    """Some receivers take their credential in the query (?token=): shown like the Concourse token, never."""
    client = await make_client(headers={"X-API-Key": admin_key})
    target = f"{receiver.url}?team=7&token={CONCOURSE_TOKEN}"
    created = await client.post("/admin/webhooks", json={"name": "q", "url": target})
    assert created.status == 201
    hook = await created.json()
    assert hook["url"] == f"{receiver.url}?team=7&token=***"
    tested = await client.post(f"/admin/webhooks/{hook['id']}/test")
    assert (await tested.json())["ok"] is True
    assert receiver.received[0][2] == f"/hooks?team=7&token={CONCOURSE_TOKEN}"
    assert CONCOURSE_TOKEN not in await every_answer_about(client, hook["id"])
