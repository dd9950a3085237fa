"""The data directory and what it holds are their owner's only: 0700 and 0600 whatever the umask
(issue 13, finding 9), for the SQLite files (database, -wal, -shm, writers' lock) and the development
secrets (JWT secret, webhook key) of either store."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from buildstate.auth.secret import jwt_secret
from buildstate.config import Settings
from buildstate.store import create_store, migrate
from buildstate.store.types import AuditEntry
from buildstate.webhooks.secrets import SecretBox


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The widest umask a careless service account might have."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


async def test_the_sqlite_files_and_the_data_dir_are_private(tmp_path: Path, open_umask: None) -> None:
    data = tmp_path / "fresh" / "data"
    settings = Settings(data_dir=data, jwt_secret=None)
    migrate(settings)
    store = create_store(settings)
    await store.open()
    try:
        await store.record_audit(AuditEntry("test", "x", None, "allowed"))  # a write: -wal and -shm
        database = data / "buildstate.db"
        files = [database, *(data / f"buildstate.db{suffix}" for suffix in ("-wal", "-shm", ".write-lock"))]
        assert mode(data) == 0o700
        for path in files:  # while the store is open: SQLite deletes -wal and -shm when the last closes
            assert path.exists(), path
            assert mode(path) == 0o600, (path, oct(mode(path)))
    finally:
        await store.close()


def test_the_development_secrets_and_their_folder_are_private(
    database_url: str, tmp_path: Path, open_umask: None
) -> None:
    data = tmp_path / "secrets"
    settings = Settings(database_url=database_url, data_dir=data, jwt_secret=None, webhook_key=None)
    jwt_secret(settings)
    SecretBox.from_settings(settings)
    assert mode(data) == 0o700
    assert mode(data / "jwt-secret") == 0o600
    assert mode(data / "webhook.key") == 0o600


def test_a_database_file_left_readable_by_others_is_tightened(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    database = tmp_path / "old.db"
    settings = Settings(database_url=f"sqlite:///{database}", data_dir=tmp_path)
    migrate(settings)
    for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
        if path.exists():
            path.chmod(0o644)
    migrate(settings)
    assert mode(database) == 0o600
    assert "restricting it to its owner" in caplog.text
