"""Raw SQL on either store, for tests that must write what the service never would (old data, drift)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from buildstate.store import Store
from buildstate.store.sql import Params


def _statement(store: Store, template: str, values: tuple[Any, ...]) -> tuple[str, list[Any]]:
    """``template`` with ``{}`` for each value, written in the store's placeholders."""
    p = Params(store.executor.dialect)
    return template.format(*(p(value) for value in values)), p.values


async def run_sql(store: Store, template: str, *values: Any) -> None:
    await store.executor.run_batch([_statement(store, template, values)])


async def fetch(store: Store, template: str, *values: Any) -> list[list[Any]]:
    return await store.executor.run_batch([_statement(store, template, values)], write=False)


def uuid_value(store: Store, value: str) -> Any:
    return value if store.name == "sqlite" else UUID(value)


def time_value(store: Store, value: datetime) -> Any:
    return store.executor.dialect.time_param(value.astimezone(UTC))
