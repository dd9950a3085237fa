"""What every ``buildstate`` subcommand that works on the store directly shares: say which store, apply
pending migrations, open it for one piece of work, and print errors and JSON the same way.

Used by ``auth.cli`` (keys, users) and ``webhooks.cli`` (webhooks); ``cli`` wires them into one command.
"""

# ruff: noqa: T201 - a console command talks on stdout
from __future__ import annotations

import asyncio
import getpass
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from buildstate.config import Settings
from buildstate.errors import Problem
from buildstate.store import Store, create_store, describe_store, migrate
from buildstate.store.types import WriteContext

T = TypeVar("T")


def operator() -> WriteContext:
    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # a container user with no passwd entry
        name = f"uid{os.getuid()}"
    return WriteContext(actor=f"cli:{name}", source="cli")


@asynccontextmanager
async def opened(settings: Settings) -> AsyncIterator[Store]:
    store = create_store(settings)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def announce_store(settings: Settings) -> None:
    """Say on stderr which store a command works on, so a wrong one is seen at once."""
    print(f"buildstate: store {describe_store(settings)}", file=sys.stderr, flush=True)


def run(settings: Settings, work: Callable[[Store], Awaitable[T]]) -> T:
    announce_store(settings)
    migrate(settings)

    async def main() -> T:
        async with opened(settings) as store:
            return await work(store)

    return asyncio.run(main())


def fail(problem: Problem) -> int:
    print(f"buildstate: {problem.detail}", file=sys.stderr)
    return 1


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value is not None else "-"
