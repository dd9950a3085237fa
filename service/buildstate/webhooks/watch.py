"""Wake event streams and the webhook dispatcher when new events commit, in any process.

PostgreSQL: the event append sends ``NOTIFY buildstate_events, '<seq>'`` at commit; one LISTEN connection
per worker hears every instance's writes. SQLite: one cheap ``max(seq)`` poll per worker. Either way a
wake-up is only a hint to look again: readers always re-query the feed, and also look on a timer, so a
lost notification delays an update by at most one poll interval and never loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from buildstate.errors import ServiceUnavailable
from buildstate.store import Store

log = logging.getLogger("buildstate.watch")
CHANNEL = "buildstate_events"


class FeedWatcher:
    def __init__(self, store: Store, *, poll_seconds: float = 0.25) -> None:
        self._store = store
        self._poll_seconds = poll_seconds
        self._latest = 0
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def latest(self) -> int:
        return self._latest

    def bump(self, seq: int) -> None:
        """Record that events up to ``seq`` exist and wake every waiter."""
        if seq > self._latest:
            self._latest = seq
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    async def wait(self, after: int, seconds: float) -> None:
        """Return once an event newer than ``after`` is known, or after ``seconds``."""
        if self._latest > after:
            return
        changed = self._changed
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that arrives
        # as the event is set (at shutdown, exactly when close_streams wakes everyone), leaving the
        # dispatcher running forever and gunicorn waiting out its graceful timeout.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await changed.wait()

    async def start(self) -> None:
        with contextlib.suppress(ServiceUnavailable):
            self.bump(await self._store.max_seq())
        runner = self._listen() if self._store.can_listen() else self._poll()
        self._task = asyncio.create_task(runner, name="feed-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.bump(self._latest + 1)  # release waiters so streams can end

    async def _poll(self) -> None:
        while True:
            try:
                self.bump(await self._store.max_seq())
            except ServiceUnavailable:
                log.debug("feed poll skipped: database unavailable")
            await asyncio.sleep(self._poll_seconds)

    async def _listen(self) -> None:
        def heard(payload: str) -> None:
            with contextlib.suppress(ValueError):
                self.bump(int(payload))

        while True:
            try:
                await self._store.listen(CHANNEL, heard)  # returns when the connection is lost
            except Exception as exc:  # notifications are only a hint: never let them kill the worker
                log.info("event notifications interrupted (%s); reconnecting", type(exc).__name__)
            with contextlib.suppress(ServiceUnavailable):
                self.bump(await self._store.max_seq())  # catch up on what was missed meanwhile
            await asyncio.sleep(1)
