"""A write refused half-way leaves nothing behind that a later write could trip over, on either store."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from buildstate.config import Settings
from buildstate.errors import ServiceUnavailable
from buildstate.models import BuildCreate, StateChange
from buildstate.store import create_store
from buildstate.store.types import WriteContext

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


async def test_sqlite_full_is_a_503_and_the_store_writes_again_once_there_is_room(sqlite_url: str) -> None:
    # SQLite rolls a transaction back by itself when the disk fills; the store must not then fail on its
    # own ROLLBACK (which turned the 503 into a 500). max_page_count makes "full" without root or mounts.
    store = create_store(Settings(database_url=sqlite_url))
    await store.open()
    ctx = WriteContext(actor="test")
    try:
        await store.create_build(BuildCreate(**BUILD), ctx)
        pages = await store.executor.run_batch([("PRAGMA page_count", [])])
        limit = f"PRAGMA max_page_count = {pages[0][0][0]}"
        await store.executor.run_batch([(limit, [])])  # the writer thread's connection: the one writes use
        message = "x" * 3000
        with pytest.raises(ServiceUnavailable):
            for code in range(5, 101, 5):
                await store.record_state("b-1", StateChange(state_code=code, message=message), ctx)
        await store.executor.run_batch([("PRAGMA max_page_count = 1073741823", [])])
        moved = await store.record_state("b-1", StateChange(state_code=100), ctx)
        assert moved.status_code == 200
        with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        await store.close()
