"""``buildstate keys`` and ``buildstate users`` straight on the database, the JWT secret's origin, and the
first-start hint. These run the commands' code in-process (argparse included), without a server."""

from __future__ import annotations

import asyncio
import io
import json
import stat
import sys
from pathlib import Path
from typing import Any

import jwt
import pytest

from buildstate import paths
from buildstate.auth import keys, passwords
from buildstate.auth.secret import MissingSecretError, jwt_secret
from buildstate.auth.startup import first_admin_hint, prepare
from buildstate.cli import build_parser
from buildstate.config import Settings
from buildstate.store import Store, create_store
from buildstate.store.access import AuditFilter
from buildstate.web.app import create_app
from buildstate.web.typedefs import AUTHENTICATOR


def run(settings: Settings, *argv: str) -> int:
    args = build_parser().parse_args(list(argv))
    code: int = args.run(settings, args)
    return code


def with_store(settings: Settings, work: Any) -> Any:
    async def main() -> Any:
        store: Store = create_store(settings)
        await store.open()
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(main())


def test_keys_create_prints_a_working_key_alone_on_the_last_line(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(settings, "keys", "create", "--name", "rhel", "--scope", "read", "--scope", "write",
               "--platform", "aws", "--expires-in-days", "30") == 0  # fmt: skip
    key = capsys.readouterr().out.splitlines()[-1]
    public_id = keys.public_id(key)
    assert public_id is not None
    record = with_store(settings, lambda s: s.access.key_by_prefix(public_id))
    assert keys.matches(key, record.key_hash)
    assert (record.name, record.scopes, record.platforms) == ("rhel", ("read", "write"), ("aws",))
    assert record.expires_at is not None and record.created_by.startswith("cli:")


def test_keys_create_json_list_and_revoke(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(settings, "keys", "create", "--name", "ci", "--scope", "admin", "--json") == 0
    created = json.loads(capsys.readouterr().out)
    assert keys.public_id(created["key"]) == created["id"] and created["scopes"] == ["admin"]

    assert run(settings, "keys", "list") == 0
    listing = capsys.readouterr().out
    assert created["id"] in listing and created["key"] not in listing

    assert run(settings, "keys", "revoke", created["id"]) == 0
    assert "revoked" in capsys.readouterr().out
    assert run(settings, "keys", "list", "--json") == 0
    assert json.loads(capsys.readouterr().out) == []
    assert run(settings, "keys", "list", "--all", "--json") == 0
    assert json.loads(capsys.readouterr().out)[0]["active"] is False

    assert run(settings, "keys", "revoke", "bs_00000000") == 1
    assert "no API key" in capsys.readouterr().err
    assert run(settings, "keys", "create", "--name", "x", "--scope", "admin", "--platform", "aws") == 1
    rows = with_store(settings, lambda s: s.access.list_audit(AuditFilter(action="key.revoke")))
    assert [r.outcome for r in rows] == ["refused", "allowed"] and rows[1].actor.startswith("cli:")


def test_users_create_from_flag_or_stdin_then_disable_and_passwd(
    settings: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, password: str
) -> None:
    assert (
        run(settings, "users", "create", "--username", "alice", "--role", "operator", "--password", password)
        == 0
    )
    monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
    assert run(settings, "users", "create", "--username", "bob", "--role", "viewer") == 0
    assert (
        run(settings, "users", "create", "--username", "bob", "--role", "admin", "--password", password) == 1
    )
    assert (
        run(settings, "users", "create", "--username", "carol", "--role", "admin", "--password", "short") == 1
    )
    capsys.readouterr()

    assert run(settings, "users", "list", "--json") == 0
    users = json.loads(capsys.readouterr().out)
    assert [(u["username"], u["role"], u["disabled"]) for u in users] == [
        ("alice", "operator", False),
        ("bob", "viewer", False),
    ]
    bob = with_store(settings, lambda s: s.access.user_by_name("bob"))
    assert asyncio.run(passwords.verify_password(bob.password_hash, password))

    assert run(settings, "users", "disable", "alice") == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("a brand new password\n"))
    assert run(settings, "users", "passwd", "bob") == 0
    assert run(settings, "users", "passwd", "nobody", "--password", "whatever123") == 1
    alice = with_store(settings, lambda s: s.access.user_by_name("alice"))
    bob = with_store(settings, lambda s: s.access.user_by_name("bob"))
    assert alice.disabled_at is not None
    assert asyncio.run(passwords.verify_password(bob.password_hash, "a brand new password"))
    assert password not in capsys.readouterr().out


def test_production_refuses_to_start_without_a_jwt_secret(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    production = settings.model_copy(update={"env": "production", "jwt_secret": None})
    with pytest.raises(MissingSecretError):
        create_app(production)
    assert run(production, "serve") == 2
    assert "BUILDSTATE_JWT_SECRET is required" in capsys.readouterr().err


def test_a_short_jwt_secret_is_refused_by_the_settings(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 32"):
        Settings(jwt_secret="too-short", data_dir=tmp_path)


def test_development_generates_one_private_secret_shared_by_every_process(settings: Settings) -> None:
    development = settings.model_copy(update={"jwt_secret": None})
    first = jwt_secret(development)
    path = development.data_dir / "jwt-secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 32 and jwt_secret(development) == first
    # Tokens one worker signs, another verifies.
    one, two = create_app(development), create_app(development)
    token = one[AUTHENTICATOR].tokens.issue("alice", "read", 1)
    assert two[AUTHENTICATOR].tokens.decode(token).username == "alice"
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_first_start_says_how_to_create_an_admin_key_until_one_exists(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    [hint] = prepare(settings)
    assert hint == first_admin_hint(paths.command())
    assert f"{paths.command()} keys create --name admin --scope admin" in hint
    assert run(settings, "keys", "create", "--name", "admin", "--scope", "admin") == 0
    capsys.readouterr()
    assert prepare(settings) == []


def test_hints_name_the_command_as_it_can_be_run_from_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    installed = Path(sys.executable).parent / "buildstate"
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # .venv/bin not on PATH, as after a plain checkout
    monkeypatch.chdir(installed.parent.parent.parent)  # the checkout holding .venv
    assert paths.command() == ".venv/bin/buildstate"
    monkeypatch.chdir(tmp_path)
    assert paths.command() == str(installed)
    monkeypatch.setenv("PATH", f"{installed.parent}:/usr/bin:/bin")
    assert paths.command() == "buildstate"
