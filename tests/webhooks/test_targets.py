"""Where webhooks may send (webhooks/targets.py), on both stores: only public addresses unless the operator
opens more, checked on the address connected to after DNS, and a ``/test`` that says no more than
"refused by policy" or "could not connect".

No test here looks a name up or connects anywhere but 127.0.0.1: names resolve through ``StubResolver``, and
``connections_only_to_loopback`` (conftest) fails a test whose dispatcher gets past the policy to any other
address before a connection is tried.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from tests.conftest import ClientMaker, make_settings
from tests.store.test_rules import create
from tests.support import free_port
from tests.webhooks.conftest import Receiver, StubResolver
from tests.webhooks.test_delivery import drain, subscribe

from buildstate.config import Settings
from buildstate.store import Store
from buildstate.store.access import AuditFilter
from buildstate.web.typedefs import DISPATCHER
from buildstate.webhooks.dispatcher import NO_ANSWER, NOT_LISTED, Dispatcher
from buildstate.webhooks.store import WebhookStore
from buildstate.webhooks.targets import REFUSED, TargetPolicy, is_public

Client = TestClient[Any, Any]
NOT_PUBLIC = {
    "loopback": "127.0.0.1",
    "loopback, IPv6": "::1",
    "private 10/8": "10.1.2.3",
    "private 172.16/12": "172.16.0.1",
    "private 192.168/16": "192.168.1.1",
    "link-local: the cloud metadata endpoint": "169.254.169.254",
    "link-local, IPv6": "fe80::1",
    "unspecified": "0.0.0.0",  # noqa: S104 - an address under test, nothing binds it
    "unspecified, IPv6": "::",
    "this network 0/8": "0.1.2.3",
    "CGNAT 100.64/10": "100.64.0.1",
    "multicast": "224.0.0.1",
    "multicast, IPv6": "ff02::1",
    "reserved 240/4": "240.0.0.1",
    "broadcast": "255.255.255.255",
    "unique-local fc00::/7 (fd)": "fd00::1",
    "unique-local fc00::/7 (fc)": "fc00::1",
    "IPv4-mapped loopback": "::ffff:127.0.0.1",
    "IPv4-mapped public address": "::ffff:8.8.8.8",
    "6to4 of loopback": "2002:7f00:1::1",
    "NAT64 of loopback": "64:ff9b::7f00:1",
    "documentation": "192.0.2.1",
    "benchmarking": "198.18.0.1",
}
PUBLIC = ("8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "2a00:1450:4001::200e")


def test_only_public_unicast_addresses_are_public() -> None:
    assert [name for name, a in NOT_PUBLIC.items() if is_public(ipaddress.ip_address(a))] == []
    assert all(is_public(ipaddress.ip_address(address)) for address in PUBLIC)


async def audit_rows(store: Store, action: str) -> list[tuple[str, int | None, dict[str, Any] | None]]:
    rows = await store.access.list_audit(AuditFilter(action=action))
    return [(row.outcome, row.status_code, row.detail) for row in reversed(rows)]


@pytest.mark.parametrize("address", list(NOT_PUBLIC.values()), ids=list(NOT_PUBLIC))
async def test_a_literal_address_that_is_not_public_is_refused_at_creation_and_audited(
    client: Client, store: Store, address: str
) -> None:
    host = f"[{address}]" if ":" in address else address
    answer = await client.post("/admin/webhooks", json={"name": "probe", "url": f"http://{host}:5432/"})
    assert answer.status == 422
    problem = await answer.json()
    assert problem["type"].endswith("/webhook-target-refused")
    assert "BUILDSTATE_WEBHOOK_ALLOW_PRIVATE=true" in problem["detail"]  # the setting that would allow it
    assert (await (await client.get("/admin/webhooks")).json())["webhooks"] == []
    assert await audit_rows(store, "webhook.create") == [("refused", 422, {"reason": REFUSED})]


@pytest.mark.parametrize("host", ["2130706433", "127.1", "0x7f.0.0.1", "017700000001"])
async def test_numbers_that_spell_an_address_are_refused_at_creation(client: Client, host: str) -> None:
    answer = await client.post("/admin/webhooks", json={"name": "probe", "url": f"http://{host}/"})
    assert answer.status == 422
    assert "not a name or an address" in (await answer.json())["detail"]


@pytest.mark.parametrize("host", ["127.0.0.1.", "8.8.8.8.", "127.1."])
async def test_an_address_with_a_trailing_dot_is_refused_at_creation(client: Client, host: str) -> None:
    """It was accepted, then every send called the URL unusable and disabled the webhook."""
    answer = await client.post("/admin/webhooks", json={"name": "probe", "url": f"http://{host}:8080/"})
    assert answer.status == 422
    assert "with a dot after it" in (await answer.json())["detail"]


@pytest.fixture
def strict_settings(database_url: str, tmp_path: Path) -> Settings:
    """The default policy (private targets refused), quick retries."""
    return make_settings(database_url, tmp_path, webhook_retry_base_seconds=0.01, webhook_timeout_seconds=2)


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "10.0.0.7", "169.254.169.254", "::ffff:127.0.0.1", "fd00::1", "100.64.0.1"]
)
async def test_a_name_that_resolves_to_a_private_address_is_refused_when_connecting(
    store: Store, strict_settings: Settings, receiver: Receiver, connections_only_to_loopback: list[str],
    address: str,
) -> None:  # fmt: skip
    # The name passes creation (no lookup there); what it resolves to when sending is what counts, so DNS
    # that answered a public address yesterday and answers 127.0.0.1 now (rebinding) gets nowhere either.
    hook = await subscribe(store, strict_settings, f"http://hooks.example.test:{receiver.port}/hooks")
    await create(store, "rebound")
    resolver = StubResolver({"hooks.example.test": [address]})
    dispatcher = Dispatcher(store, strict_settings, resolver=resolver)
    async with dispatcher.session() as session:
        assert await dispatcher.run_once(session) == 1
    [delivery] = (
        await WebhookStore(store).deliveries(hook.public.id, status=None, before=None, limit=5)
    ).deliveries
    assert (delivery.status, delivery.last_status_code, delivery.last_error) == ("pending", None, REFUSED)
    assert resolver.asked == ["hooks.example.test"]
    assert receiver.received == []
    assert connections_only_to_loopback == []  # refused before any socket was made


async def test_the_same_name_is_delivered_once_private_targets_are_allowed(
    store: Store, database_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    """The other half of the test above: the stub leads to the receiver, so only the policy stopped it."""
    allowing = make_settings(database_url, tmp_path, webhook_allow_private=True)
    await subscribe(store, allowing, f"http://hooks.example.test:{receiver.port}/hooks")
    await create(store, "allowed")
    dispatcher = Dispatcher(store, allowing, resolver=StubResolver({"hooks.example.test": ["127.0.0.1"]}))
    await drain(dispatcher, lambda: len(receiver.received) == 1)


@pytest.mark.parametrize(
    ("allowed_hosts", "url_host"),
    [(["hooks.example.test"], "hooks.example.test"), (["*.example.test"], "hooks.example.test"),
     (["127.0.0.0/8"], "127.0.0.1"), (["127.0.0.1"], "127.0.0.1")],
)  # fmt: skip
async def test_a_host_or_network_on_the_allow_list_may_be_private(
    store: Store, database_url: str, tmp_path: Path, receiver: Receiver, *, allowed_hosts: list[str],
    url_host: str,
) -> None:  # fmt: skip
    listed = make_settings(database_url, tmp_path, webhook_allowed_hosts=allowed_hosts)
    url = f"http://{url_host}:{receiver.port}/hooks"
    TargetPolicy.from_settings(listed).check_url(url)  # accepted at creation
    await subscribe(store, listed, url)
    await create(store, "listed")
    dispatcher = Dispatcher(store, listed, resolver=StubResolver({"hooks.example.test": ["127.0.0.1"]}))
    await drain(dispatcher, lambda: len(receiver.received) == 1)


async def test_a_host_taken_off_the_allow_list_is_refused_when_sending(
    store: Store, database_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    listed = make_settings(database_url, tmp_path, webhook_allowed_hosts=["other.example.test"])
    hook = await subscribe(store, listed, f"http://hooks.example.test:{receiver.port}/hooks")
    await create(store, "delisted")
    dispatcher = Dispatcher(store, listed, resolver=StubResolver({"hooks.example.test": ["127.0.0.1"]}))
    async with dispatcher.session() as session:
        await dispatcher.run_once(session)
    [delivery] = (
        await WebhookStore(store).deliveries(hook.public.id, status=None, before=None, limit=5)
    ).deliveries
    assert delivery.last_error == NOT_LISTED
    assert receiver.received == []


async def test_the_test_button_answers_refused_or_no_answer_and_nothing_more(
    make_client: ClientMaker, admin_key: str, settings: Settings, store: Store
) -> None:
    """A closed port, a black hole (a lookup that never ends), an unknown name and a refusal by policy: what
    ``/test`` answers tells them apart only as refused vs. not answered, never which way it failed."""
    headers = {"X-API-Key": admin_key}
    strict = await make_client(
        make_settings(settings.database_url, settings.data_dir, webhook_timeout_seconds=0.5), headers=headers
    )
    allowing = await make_client(
        make_settings(settings.database_url, settings.data_dir, webhook_timeout_seconds=0.5,
                      webhook_allow_private=True),
        headers=headers,
    )  # fmt: skip
    strict.app[DISPATCHER].resolver = StubResolver({"internal.example.test": ["10.0.0.7"]})
    allowing.app[DISPATCHER].resolver = StubResolver({"slow.example.test": ["127.0.0.1"]}, delay=5)
    cases = [
        (strict, "http://internal.example.test:6379/", REFUSED),
        (allowing, f"http://127.0.0.1:{free_port()}/closed", NO_ANSWER),
        (allowing, "http://slow.example.test:8080/", NO_ANSWER),
        (allowing, "http://unknown.example.test/", NO_ANSWER),
    ]
    for client, url, expected in cases:
        created = await client.post("/admin/webhooks", json={"name": "probe", "url": url})
        assert created.status == 201, await created.text()
        answer = await client.post(f"/admin/webhooks/{(await created.json())['id']}/test")
        assert answer.status == 200
        result = await answer.json()
        assert set(result) == {"ok", "status_code", "duration_ms", "error"}
        assert (result["ok"], result["status_code"], result["error"]) == (False, None, expected), url
    rows = await audit_rows(store, "webhook.test")
    assert [(outcome, status) for outcome, status, _ in rows] == [("allowed", 200)] * 4
    assert [detail for _, _, detail in rows] == [{"ok": False, "result": expected} for *_, expected in cases]
