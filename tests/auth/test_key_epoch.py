"""The key cache on by default: a worker keeps the keys it checked in memory and reads no row for them,
until a key is revoked anywhere (``store/key_changes.py``: NOTIFY on PostgreSQL, a file beside the database
on SQLite); then every worker reads again and refuses the revoked key at once. Expiry is checked against
the clock. The two-instance, real-worker version under load is ``tests/cluster``."""

from __future__ import annotations

import asyncio
import errno
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from buildstate.auth import keys
from buildstate.auth.service import Authenticator, build_authenticator
from buildstate.config import Settings
from buildstate.store import Store
from buildstate.store.access import AccessStore, NewApiKey
from buildstate.store.key_changes import FileKeyChanges, KeyChanges, NotifiedKeyChanges
from buildstate.store.postgres import PostgresStore
from buildstate.store.types import WriteContext
from buildstate.web.typedefs import AUTHENTICATOR

CTX = WriteContext(actor="test:epoch")


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every key row read, by any app of the test (the real method still runs)."""
    seen: list[str] = []
    read = AccessStore.key_by_prefix

    async def counted(self: AccessStore, prefix: str) -> Any:
        seen.append(prefix)
        return await read(self, prefix)

    monkeypatch.setattr(AccessStore, "key_by_prefix", counted)
    return seen


async def watching(client: TestClient[Any, Any]) -> Authenticator:
    """The app's authenticator once its key epoch can be told (PostgreSQL: its LISTEN is up)."""
    authenticator: Authenticator = client.app[AUTHENTICATOR]
    for _ in range(200):  # bounded: 10 s
        if authenticator.key_changes.epoch() is not None:
            return authenticator
        await asyncio.sleep(0.05)
    raise AssertionError("the key epoch never became known")


async def cached_worker(make_client: Any, key: str, reads: list[str]) -> TestClient[Any, Any]:
    """A worker that has checked ``key`` once and now answers it from memory."""
    worker: TestClient[Any, Any] = await make_client(headers={"X-API-Key": key})
    await watching(worker)
    assert (await worker.get("/builds")).status == 200
    before = len(reads)
    for _ in range(5):
        assert (await worker.get("/builds")).status == 200
    assert len(reads) == before, "the key's row was read again: not cached"
    return worker


async def test_the_cache_is_on_by_default(settings: Settings) -> None:
    assert settings.key_cache is True
    assert settings.key_cache_seconds == 0  # not the grace mode


async def test_a_revoked_key_is_dropped_from_every_workers_memory_before_the_revocation_is_answered(
    client: TestClient[Any, Any], make_client: Any, make_key: Any, reads: list[str]
) -> None:
    key = await make_key("read", name="cached then revoked")
    await watching(client)
    workers = [await cached_worker(make_client, key, reads) for _ in range(2)]
    assert (await client.post(f"/admin/keys/{key[:11]}/revoke")).status == 200
    for worker in workers:
        refused = await worker.get("/builds")
        assert refused.status == 401
        assert (await refused.json())["type"].endswith("/key-revoked")


async def test_a_revocation_made_without_a_listener_reaches_every_worker(
    make_client: Any, make_key: Any, store: Store, reads: list[str]
) -> None:
    """The CLI revokes from a process of its own (no LISTEN, no echo to wait for): the workers still hear
    it (PostgreSQL delivers the NOTIFY at COMMIT; SQLite's file is replaced before it returns)."""
    key = await make_key("read")
    workers = [await cached_worker(make_client, key, reads) for _ in range(2)]
    await store.access.revoke_key(key[:11], CTX)
    for worker in workers:
        for _ in range(100):  # bounded: 5 s, far more than a NOTIFY takes
            status = (await worker.get("/builds")).status
            if status == 401:
                break
            await asyncio.sleep(0.05)
        assert status == 401


async def test_another_keys_revocation_costs_one_read_and_the_key_stays_valid(
    client: TestClient[Any, Any], make_client: Any, make_key: Any, reads: list[str]
) -> None:
    kept, dropped = await make_key("read"), await make_key("read")
    await watching(client)
    worker = await cached_worker(make_client, kept, reads)
    assert (await client.post(f"/admin/keys/{dropped[:11]}/revoke")).status == 200
    before = len(reads)
    assert (await worker.get("/builds")).status == 200
    assert reads[before:] == [kept[:11]]  # read once under the new epoch, then from memory again
    assert (await worker.get("/builds")).status == 200
    assert len(reads) == before + 1


async def test_a_cached_key_stops_working_when_it_expires(
    make_client: Any, store: Store, reads: list[str]
) -> None:
    new = keys.generate()
    expires = datetime.now(UTC) + timedelta(seconds=2)
    await store.access.create_key(
        NewApiKey(prefix=new.public_id, key_hash=new.digest, name="brief", scopes=("read",), platforms=None,
                  expires_at=expires),
        CTX,
    )  # fmt: skip
    worker = await cached_worker(make_client, new.key, reads)
    await asyncio.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.1)
    refused = await worker.get("/builds")
    assert refused.status == 401
    assert (await refused.json())["type"].endswith("/key-expired")


async def test_without_a_known_epoch_every_request_reads_its_row(
    settings: Settings, store: Store, make_key: Any, reads: list[str]
) -> None:
    key = await make_key("read")
    authenticator = build_authenticator(settings, store)
    authenticator.key_changes = KeyChanges()  # cannot tell: like a worker whose LISTEN is down
    for _ in range(3):
        await authenticator.identify({"X-API-Key": key})
    assert reads == [key[:11]] * 3
    off = build_authenticator(settings.model_copy(update={"key_cache": False}), store)
    await off.identify({"X-API-Key": key})
    await off.identify({"X-API-Key": key})
    assert reads == [key[:11]] * 5
    await authenticator.limiter.close()
    await off.limiter.close()


async def test_a_lost_listen_connection_stops_the_cache_until_it_is_back(pg_url: str) -> None:
    """A NOTIFY sent while the LISTEN connection is down is never delivered: the epoch is unknown
    meanwhile, and a new one once the connection is back, so nothing read before is trusted."""
    store = PostgresStore(pg_url)
    await store.open()
    changes = store.key_changes
    assert isinstance(changes, NotifiedKeyChanges)
    watch = asyncio.create_task(changes.watch())
    try:
        for _ in range(200):
            if changes.epoch() is not None:
                break
            await asyncio.sleep(0.05)
        first = changes.epoch()
        assert first is not None
        admin = await asyncpg.connect(pg_url)
        try:
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
            )
        finally:
            await admin.close()
        assert killed == 1
        for _ in range(200):
            if changes.epoch() is None:
                break
            await asyncio.sleep(0.01)
        assert changes.epoch() is None
        for _ in range(500):  # it reconnects after a second
            if changes.epoch() is not None:
                break
            await asyncio.sleep(0.02)
        assert changes.epoch() not in (None, first)
    finally:
        watch.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watch
        await store.close()


async def test_the_feed_and_the_key_cache_share_one_listen_connection_per_worker(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    await store.open()
    heard: dict[str, list[str]] = {"feed_a": [], "keys_b": []}
    ready = {name: asyncio.Event() for name in heard}
    tasks = [
        asyncio.create_task(store.executor.listen(name, heard[name].append, ready=ready[name].set))
        for name in heard
    ]
    conn = await asyncpg.connect(pg_url)
    try:
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in ready.values())), 10)
        backends = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND application_name = ''"
        )
        assert backends == 1  # both channels on one connection, outside the pool
        await conn.execute("SELECT pg_notify('feed_a', '1'), pg_notify('keys_b', '2')")
        for _ in range(200):
            if all(heard.values()):
                break
            await asyncio.sleep(0.01)
        assert heard == {"feed_a": ["1"], "keys_b": ["2"]}
    finally:
        await conn.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await store.close()


async def test_the_sqlite_epoch_never_comes_back_to_one_a_worker_cached_under(tmp_path: Path) -> None:
    """Each change renames a new file over the old one: the file system reuses the freed inode at the
    next change, and its clock moves in ticks of milliseconds, so (inode, mtime, size) after two more
    changes within one tick is the first one's again (seen on ext4), and a key cached under it and
    revoked since would still be trusted. The file system's clock not moving is set by hand here."""
    changes = FileKeyChanges(tmp_path / "buildstate.db")
    async with changes.signalling():
        pass
    cached_under = changes.epoch()
    first = changes.path.stat()
    for _ in range(2):
        async with changes.signalling():
            pass
        os.utime(changes.path, ns=(first.st_atime_ns, first.st_mtime_ns))  # the same tick
    assert changes.epoch() != cached_under


async def test_a_sqlite_change_that_cannot_write_its_token_still_moves_every_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk when the new token is written: the old file is removed instead (the epoch becomes
    "never changed"), so no worker keeps trusting what it read under the old token for 60 s."""
    changes = FileKeyChanges(tmp_path / "buildstate.db")
    async with changes.signalling():
        pass
    cached_under = changes.epoch()

    def full(_descriptor: int, _data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    async with changes.signalling():
        pass
    monkeypatch.undo()
    assert changes.epoch() != cached_under
    assert [p.name for p in tmp_path.iterdir()] == []  # nor a half-written file left behind


async def test_a_sqlite_change_that_cannot_be_signalled_at_all_is_not_answered_as_done(
    client: TestClient[Any, Any], make_client: Any, make_key: Any, settings: Settings
) -> None:
    """Nothing beside the database can be replaced (here a directory where the file goes): the
    revocation is recorded, and answered 503 so that the admin retries, not 200 while other workers may
    still accept the key."""
    if settings.database_url.startswith("postgresql"):
        pytest.skip("the file is SQLite's signal")
    key = await make_key("read", name="revoked, not signalled")
    authenticator = await watching(client)
    changes = authenticator.key_changes
    assert isinstance(changes, FileKeyChanges)
    changes.path.unlink(missing_ok=True)
    changes.path.mkdir()
    (changes.path / "in the way").touch()
    refused = await client.post(f"/admin/keys/{key[:11]}/revoke")
    assert refused.status == 503
    assert (await refused.json())["type"].endswith("/key-change-not-signalled")
    holder = await make_client(headers={"X-API-Key": key})
    after = await holder.get("/builds")
    assert after.status == 401  # recorded: a worker that cannot read a token reads the row
    assert (await after.json())["type"].endswith("/key-revoked")


async def test_a_sqlite_database_named_through_a_symlink_shares_its_key_epoch(tmp_path: Path) -> None:
    """The service opens the database through a symlink (``current.db`` -> a release's file), the CLI
    by its real path: a revocation by either is the other's change, the same ``.keys`` file."""
    (tmp_path / "v2").mkdir()
    real = tmp_path / "v2" / "buildstate.db"
    real.touch()
    (tmp_path / "current.db").symlink_to(real)
    service, cli = FileKeyChanges(tmp_path / "current.db"), FileKeyChanges(real)
    cached_under = service.epoch()
    async with cli.signalling():
        pass
    assert service.epoch() != cached_under
    cached_under = cli.epoch()
    async with service.signalling():
        pass
    assert cli.epoch() != cached_under
