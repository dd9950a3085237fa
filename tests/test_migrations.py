"""Migrations: applied once, safe under concurrent starts, and workers refuse a schema they do not expect."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from buildstate.config import Settings
from buildstate.store import create_store, migrate
from buildstate.store.migrate import expected_version, load
from buildstate.web.app import SchemaMismatchError, create_app

ROOT = Path(__file__).resolve().parents[1]
CLI = str(ROOT / ".venv/bin/buildstate")


def test_both_stores_have_the_same_numbered_migrations() -> None:
    sqlite, postgres = load("sqlite"), load("postgres")
    assert [(m.version, m.name) for m in sqlite] == [(m.version, m.name) for m in postgres]
    assert expected_version("sqlite") == len(sqlite) >= 2


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_concurrent_migrate_commands_apply_each_migration_once(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if kind == "postgresql":
        # An empty database: drop what the template put there by making a new one.
        from tests.conftest import _pg_url, pg_admin

        name = f"bs_mig_{os.getpid()}"
        pg_admin(f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"')
        request.addfinalizer(lambda: pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        url = _pg_url(name)
    else:
        url = f"sqlite:///{tmp_path / 'fresh.db'}"
    env = {**os.environ, "BUILDSTATE_DATABASE_URL": url}
    runs = [
        subprocess.Popen([CLI, "migrate"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outputs = [run.communicate(timeout=60) for run in runs]
    assert all(run.returncode == 0 for run in runs), outputs
    applied = [out for out, _ in outputs if out.startswith("applied")]
    assert len(applied) == 1, outputs  # one process did the work, the others found it done
    assert all("up to date" in out for out, _ in outputs if not out.startswith("applied"))
    assert migrate(Settings(database_url=url)) == []


async def test_a_worker_refuses_a_database_behind_its_schema(tmp_path: Path) -> None:
    import sqlite3

    url = f"sqlite:///{tmp_path / 'old.db'}"
    settings = Settings(database_url=url)
    migrate(settings)
    with sqlite3.connect(tmp_path / "old.db") as conn:
        conn.execute(
            "DELETE FROM schema_migrations WHERE version = (SELECT max(version) FROM schema_migrations)"
        )
    app = create_app(settings, create_store(settings))
    context = app.cleanup_ctx[0](app)
    with pytest.raises(SchemaMismatchError, match="run `buildstate migrate`"):
        await context.__anext__()


def test_cli_help_explains_each_command() -> None:
    for args, words in [
        ([], "serve"),
        (["serve"], "gunicorn"),
        (["migrate"], "migrations"),
    ]:
        out = subprocess.run([CLI, *args, "--help"], capture_output=True, text=True, check=True).stdout
        assert words in out
    version = subprocess.run(
        [sys.executable, "-m", "buildstate", "--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.startswith("buildstate ")
