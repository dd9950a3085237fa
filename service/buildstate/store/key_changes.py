"""How every worker of every instance learns at once that an API key changed, without a read per request.

A worker may keep the keys it checked in memory (``auth.service.Authenticator``) only while it can tell,
for nothing, that no key has changed since it read their rows. Each store gives it an ``epoch``: a value
that changes whenever a key is revoked anywhere, read without touching the database. A cached key counts
only under the epoch it was read in; ``None`` means "cannot tell", and then every request reads its row.

- PostgreSQL: the revoke statement itself sends ``NOTIFY buildstate_keys`` (delivered at its COMMIT, so
  never for a revocation that rolled back), and each worker LISTENs (on the connection its feed watcher
  shares, outside the pool): the epoch
  is a counter of what it heard, and ``None`` while that connection is not up (at start, after a loss:
  a revocation sent meanwhile would be missed). The revoking worker waits, up to a second, to hear its
  own notification, and a tenth of a second more, before it answers: by then PostgreSQL has sent it to
  every listener.
- SQLite: the revocation replaces the file ``<database>.keys`` after its COMMIT with a new one holding a
  random token; the epoch is that token, one small read per check, and every process on the database's
  host sees the same file. Not the file's inode and mtime: the freed inode is reused by the next change
  and the mtime moves in ticks of milliseconds, so three changes within a tick would give the first
  one's (inode, mtime, size) back.

Keys are only ever created or revoked (a new key is never cached before its row exists, so creating
one needs no signal); a change made to ``api_keys`` by hand, outside the service, is not signalled: a
worker trusts its cached keys for at most ``MAX_AGE`` seconds whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import AsyncIterator, Hashable
from pathlib import Path
from typing import TYPE_CHECKING

from buildstate.errors import ServiceUnavailable

if TYPE_CHECKING:
    from buildstate.store.postgres_executor import PostgresExecutor

log = logging.getLogger("buildstate.store")

CHANNEL = "buildstate_keys"
# The longest a worker trusts a key it read, signal or not (a change made outside the service).
MAX_AGE = 60.0
# How long a revoking worker waits to hear its own notification before it answers anyway, and then a
# little longer: PostgreSQL signals every listener at the same COMMIT, but each one's backend sends the
# notification on its own, so the others' may arrive a moment after this one's.
ECHO_SECONDS = 1.0
SETTLE_SECONDS = 0.1
# The random token of each change (hex: twice as many characters).
_TOKEN_BYTES = 8


class KeyChanges:
    """No way to tell (the default): no key is ever cached."""

    def epoch(self) -> Hashable | None:
        """What identifies the current state of every key, or None when it cannot be told."""
        return None

    @contextlib.asynccontextmanager
    async def signalling(self) -> AsyncIterator[str]:
        """Around a change of keys: the token its transaction notifies with (PostgreSQL), and once the
        change has committed, every worker's epoch made to move on before this returns."""
        token = secrets.token_hex(_TOKEN_BYTES)
        yield token
        await self._changed(token)

    async def _changed(self, token: str) -> None:
        """After the COMMIT of a change of keys."""

    async def watch(self) -> None:
        """Keep the epoch current (runs until cancelled)."""
        await asyncio.Event().wait()


class FileKeyChanges(KeyChanges):
    """SQLite: a file beside the database, replaced on every change."""

    def __init__(self, database: Path) -> None:
        # Beside the file the database really is: a service that opens it through a symlink and a CLI
        # that names its real path (or the other way round) must share one signal.
        real = database.resolve()
        self.path = real.with_name(real.name + ".keys")

    def epoch(self) -> Hashable | None:
        try:
            descriptor = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return "never changed"
        except OSError:
            return None
        try:
            token = os.read(descriptor, _TOKEN_BYTES * 2 + 1)
        except OSError:
            return None
        finally:
            os.close(descriptor)
        # Each change writes a fresh random token before its file is renamed into place: never a partial
        # one, never an earlier one's again.
        return token or None

    async def _changed(self, token: str) -> None:
        # A new file renamed over the old one: never a partial token seen.
        fresh = self.path.with_name(f"{self.path.name}.{secrets.token_hex(4)}")
        try:
            descriptor = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(descriptor, token.encode())
            finally:
                os.close(descriptor)
            fresh.replace(self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                fresh.unlink()
            # No new token (a full disk, a directory in the way): removing the old one moves every
            # worker's epoch too, to "never changed" (an unlink needs no space).
            try:
                self.path.unlink()
            except OSError:
                log.warning("key change not signalled: %s cannot be replaced (%s)", self.path, exc)
                raise ServiceUnavailable(
                    "the key is revoked, but other workers may accept it for up to "
                    f"{MAX_AGE:.0f} s: {self.path.name} beside the database cannot be replaced; "
                    "retry the revocation",
                    slug="key-change-not-signalled",
                ) from exc
            log.warning("key change signalled by removing %s (%s)", self.path, exc)


class NotifiedKeyChanges(KeyChanges):
    """PostgreSQL: LISTEN on the worker's shared LISTEN connection (``PostgresExecutor.listen``)."""

    def __init__(self, executor: PostgresExecutor) -> None:
        self._executor = executor
        self._generation = 0
        self._live = False
        self._echoes: dict[str, asyncio.Future[None]] = {}

    def epoch(self) -> Hashable | None:
        return self._generation if self._live else None

    def _heard(self, payload: str) -> None:
        self._generation += 1
        echo = self._echoes.get(payload)
        if echo is not None and not echo.done():
            echo.set_result(None)

    def _ready(self) -> None:
        self._generation += 1  # nothing read before this moment may be trusted: it may have missed one
        self._live = True

    @contextlib.asynccontextmanager
    async def signalling(self) -> AsyncIterator[str]:
        """The revoking transaction notifies with the token; this worker then waits (at most
        ``ECHO_SECONDS``) until its own listener hears it back, by which time PostgreSQL has sent it to
        every other listener too. The echo is expected before the transaction starts, so that one heard
        before COMMIT returns here is not missed."""
        token = secrets.token_hex(_TOKEN_BYTES)
        if not self._live:  # no listener here (a CLI, or the connection is down): nothing to wait for
            yield token
            return
        echo = self._echoes[token] = asyncio.get_running_loop().create_future()
        try:
            yield token
            try:
                async with asyncio.timeout(ECHO_SECONDS):
                    await echo
            except TimeoutError:
                log.warning("a key change was not heard back within %s s", ECHO_SECONDS)
            else:
                await asyncio.sleep(SETTLE_SECONDS)
        finally:
            self._echoes.pop(token, None)

    async def watch(self) -> None:
        while True:
            try:
                await self._executor.listen(CHANNEL, self._heard, ready=self._ready)
            except ServiceUnavailable as exc:
                log.info("key change notifications interrupted (%s); reconnecting", exc.detail)
            finally:
                self._live = False
                self._generation += 1
            await asyncio.sleep(1)
