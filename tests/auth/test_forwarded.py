"""Behind a trusted proxy the client is the right-most untrusted X-Forwarded-For hop; otherwise the header
is ignored. Audit rows and per-client sign-in throttling use that address."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from buildstate.config import Settings
from buildstate.store import Store
from buildstate.store.access import AuditFilter


async def source_of(client: TestClient[Any, Any], store: Store, forwarded: str | None) -> str | None:
    headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
    await client.post("/builds/nope/state", json={"state_code": 5}, headers=headers)
    rows = await store.access.list_audit(AuditFilter(limit=1))
    return rows[0].source


async def test_without_trusted_proxies_the_header_is_ignored(
    client: TestClient[Any, Any], store: Store
) -> None:
    assert await source_of(client, store, "203.0.113.9") == "127.0.0.1"


@pytest.mark.parametrize(
    ("forwarded", "client_address"),
    [
        (None, "127.0.0.1"),
        ("203.0.113.9", "203.0.113.9"),
        ("198.51.100.1, 203.0.113.9", "203.0.113.9"),  # the left hop is the client's own claim
        ("203.0.113.9, 127.0.0.1", "203.0.113.9"),  # a chain of trusted proxies is walked back
        ("not-an-address", "127.0.0.1"),
        ("2001:db8::1", "2001:db8::1"),
        # A zone is any text: it would put the header's words into the audit row's source.
        ("fe80::1%<script>-and-anything-else", "127.0.0.1"),
        ("203.0.113.9, fe80::2%eth0", "127.0.0.1"),
    ],
)
async def test_behind_a_trusted_proxy_the_forwarded_client_is_recorded(  # noqa: PLR0917 - fixtures
    forwarded: str | None,
    client_address: str,
    make_client: Any,
    settings: Settings,
    admin_key: str,
    store: Store,
) -> None:
    behind = settings.model_copy(update={"trusted_proxies": ["127.0.0.0/8"]})
    proxied = await make_client(behind, headers={"X-API-Key": admin_key})
    assert await source_of(proxied, store, forwarded) == client_address


async def test_sign_in_throttling_tells_clients_behind_the_proxy_apart(
    make_client: Any, settings: Settings, make_user: Any, password: str
) -> None:
    behind = settings.model_copy(
        update={
            "trusted_proxies": ["127.0.0.1"],
            "signin_failures_per_client": 2,
            "signin_window_seconds": 600,
        }
    )
    proxy = await make_client(behind)
    await make_user("alice")
    attacker = {"X-Forwarded-For": "198.51.100.66"}
    for n in range(2):
        await proxy.post(
            "/token", json={"username": f"guess{n}", "password": "nope-nope-nope"}, headers=attacker
        )
    assert (
        await proxy.post("/token", json={"username": "x", "password": "y"}, headers=attacker)
    ).status == 429
    colleague = {"X-Forwarded-For": "198.51.100.7"}
    response = await proxy.post("/token", json={"username": "alice", "password": password}, headers=colleague)
    assert response.status == 200


def test_a_bad_proxy_network_is_refused_by_the_settings(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6"):
        Settings(trusted_proxies="10.0.0.0/8, nginx", data_dir=tmp_path)  # type: ignore[arg-type]
