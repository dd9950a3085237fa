"""A write refused half-way leaves nothing behind that a later write could trip over, on either store."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

BUILD = {"platform": "aws", "os_version": "rhel-8.8", "image_type": "base", "build_id": "b-1"}


async def test_a_refused_create_with_new_names_does_not_poison_later_creates(
    client: TestClient[Any, Any],
) -> None:
    # The 409 comes after the store has looked up (and so inserted) the new platform, OS and image type
    # names in its transaction; the rollback must take them back everywhere, caches included.
    assert (await client.post("/builds", json=BUILD)).status == 201
    clash = {**BUILD, "platform": "gcp", "os_version": "ubuntu-24.04", "image_type": "cis"}
    assert (await client.post("/builds", json=clash)).status == 409
    fresh = {**clash, "build_id": "b-2"}
    created = await client.post("/builds", json=fresh)
    assert created.status == 201, await created.text()
    listed = await (await client.get("/builds?platform=gcp")).json()
    assert [b["build_id"] for b in listed["builds"]] == ["b-2"]
