"""Fixtures shared by the store tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from buildstate.store.postgres import PostgresStore


@pytest.fixture
async def pg_store(pg_url: str) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(pg_url, min_size=1, max_size=4)
    await store.open()
    yield store
    await store.close()
