"""No key, token, password or JWT secret in any log record, even at DEBUG and on the failure paths.

Every test in this folder is already guarded by ``no_secrets_in_logs`` (conftest.py); this one drives
the paths most likely to leak (bad credentials in headers, passwords in JSON and form bodies, a 422
on a sign-in, a database refusal) and proves the guard sees the records it checks.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient


async def test_credentials_on_every_path_stay_out_of_the_log(
    anon_client: TestClient[Any, Any],
    make_key: Any,
    make_user: Any,
    password: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = await make_key("read", "write")
    await make_user("alice", "operator")
    token = (
        await (await anon_client.post("/token", json={"username": "alice", "password": password})).json()
    )["access_token"]
    for headers in (
        {"X-API-Key": key},
        {"X-API-Key": key[:-1] + "A"},
        {"Authorization": f"Bearer {token}"},
        {"Authorization": f"Bearer {token}x"},
        {"Authorization": f"Bearer {token}", "X-API-Key": key},
    ):
        await anon_client.get("/builds", headers=headers)
        await anon_client.post("/builds", json={"bad": True}, headers=headers)
    await anon_client.post("/token", json={"username": "alice", "password": "not-the-password-at-all"})
    await anon_client.post(
        "/token", data={"grant_type": "password", "username": "alice", "password": password}
    )
    await anon_client.post("/token", json={"username": "", "password": password})
    await anon_client.post(
        "/admin/users",
        json={"username": "bob", "role": "viewer", "password": password},
        headers={"X-API-Key": key},
    )
    # The guard has something to read: requests were logged (the access log at least).
    assert caplog.records
