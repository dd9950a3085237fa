"""Keys, users and the audit log on both real stores: each change commits with its audit row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from buildstate.errors import Conflict, NotFound
from buildstate.store import Store
from buildstate.store.access import AuditFilter, KeyPrefixTaken, NewApiKey
from buildstate.store.types import WriteContext

CTX = WriteContext(actor="user:root", request_id="r-1", source="127.0.0.1")


def new_key(prefix: str = "bs_0badc0de", **fields: object) -> NewApiKey:
    values: dict[str, object] = {
        "prefix": prefix,
        "key_hash": "ab" * 32,
        "name": "pipeline",
        "scopes": ("read", "write"),
        "platforms": ("aws",),
        "expires_at": None,
    }
    values.update(fields)
    return NewApiKey(**values)  # type: ignore[arg-type]


async def test_a_key_is_stored_listed_and_revoked_with_audit_rows(store: Store) -> None:
    created = await store.access.create_key(new_key(), CTX)
    assert (created.prefix, created.scopes, created.platforms) == ("bs_0badc0de", ("read", "write"), ("aws",))
    assert created.revoked_at is None and created.created_by == "user:root"
    assert await store.access.key_by_prefix("bs_0badc0de") == created
    assert await store.access.key_by_prefix("bs_00000000") is None
    assert [k.prefix for k in await store.access.list_keys(include_revoked=False)] == ["bs_0badc0de"]

    revoked = await store.access.revoke_key("bs_0badc0de", CTX)
    assert revoked.revoked_at is not None and revoked.revoked_by == "user:root"
    assert await store.access.list_keys(include_revoked=False) == []
    assert len(await store.access.list_keys(include_revoked=True)) == 1
    with pytest.raises(NotFound):
        await store.access.revoke_key("bs_00000000", CTX)

    rows = await store.access.list_audit(AuditFilter())
    assert [(r.action, r.target, r.outcome, r.status_code) for r in rows] == [
        ("key.revoke", "key:bs_00000000", "refused", 404),
        ("key.revoke", "key:bs_0badc0de", "allowed", 200),
        ("key.create", "key:bs_0badc0de", "allowed", 201),
    ]
    assert rows[2].detail == {
        "name": "pipeline",
        "scopes": ["read", "write"],
        "platforms": ["aws"],
        "expires_at": None,
    }
    assert rows[2].actor == "user:root" and rows[2].request_id == "r-1" and rows[2].source == "127.0.0.1"


async def test_a_taken_prefix_writes_nothing_so_the_caller_can_draw_again(store: Store) -> None:
    await store.access.create_key(new_key(), CTX)
    with pytest.raises(KeyPrefixTaken):
        await store.access.create_key(new_key(name="other"), CTX)
    assert len(await store.access.list_keys(include_revoked=True)) == 1
    assert [r.action for r in await store.access.list_audit(AuditFilter())] == ["key.create"]


async def test_last_used_is_written_at_most_once_per_interval(store: Store) -> None:
    key = await store.access.create_key(new_key(), CTX)
    first = datetime.now(UTC)
    await store.access.touch_key(key.id, first, first - timedelta(minutes=1))
    await store.access.touch_key(
        key.id, first + timedelta(seconds=5), first + timedelta(seconds=5) - timedelta(minutes=1)
    )
    stored = await store.access.key_by_prefix(key.prefix)
    assert stored is not None and stored.last_used_at == first


async def test_users_are_created_once_disabled_and_their_token_version_moves(store: Store) -> None:
    user = await store.access.create_user("alice", "$argon2id$fake", "operator", CTX)
    assert (user.username, user.role, user.token_version, user.disabled_at) == ("alice", "operator", 1, None)
    with pytest.raises(Conflict):
        await store.access.create_user("alice", "$argon2id$other", "admin", CTX)

    disabled = await store.access.set_user_disabled("alice", True, CTX)
    again = await store.access.set_user_disabled("alice", True, CTX)
    assert disabled.disabled_at is not None and disabled.token_version == 2
    assert again.disabled_at == disabled.disabled_at and again.token_version == 2
    enabled = await store.access.set_user_disabled("alice", False, CTX)
    assert enabled.disabled_at is None

    changed = await store.access.set_password("alice", "$argon2id$new", CTX)
    assert changed.password_hash == "$argon2id$new" and changed.token_version == 3
    with pytest.raises(NotFound):
        await store.access.set_password("bob", "$argon2id$new", CTX)
    assert [u.username for u in await store.access.list_users()] == ["alice"]
    assert await store.access.user_by_name("bob") is None

    actions = [(r.action, r.outcome) for r in await store.access.list_audit(AuditFilter())]
    assert actions == [
        ("user.password", "refused"),
        ("user.password", "allowed"),
        ("user.enable", "allowed"),
        ("user.disable", "allowed"),
        ("user.disable", "allowed"),
        ("user.create", "refused"),
        ("user.create", "allowed"),
    ]


async def test_has_admin_sees_only_usable_admin_credentials(store: Store) -> None:
    assert not await store.access.has_admin()
    await store.access.create_key(new_key("bs_00000001", scopes=("read",)), CTX)
    past = datetime.now(UTC) - timedelta(days=1)
    await store.access.create_key(new_key("bs_00000002", scopes=("admin",), expires_at=past), CTX)
    await store.access.create_user("viewer", "h", "viewer", CTX)
    assert not await store.access.has_admin()
    await store.access.create_key(new_key("bs_00000003", scopes=("admin",), platforms=None), CTX)
    assert await store.access.has_admin()
    await store.access.revoke_key("bs_00000003", CTX)
    assert not await store.access.has_admin()
    await store.access.create_user("root", "h", "admin", CTX)
    assert await store.access.has_admin()


async def test_audit_filters_and_pages_newest_first(store: Store) -> None:
    for n in range(5):
        await store.access.create_user(f"u{n}", "h", "viewer", WriteContext(actor=f"cli:op{n % 2}"))
    page = await store.access.list_audit(AuditFilter(limit=2))
    assert [r.target for r in page] == ["user:u4", "user:u3"]
    rest = await store.access.list_audit(AuditFilter(before=page[-1].id, limit=10))
    assert [r.target for r in rest] == ["user:u2", "user:u1", "user:u0"]
    by_actor = await store.access.list_audit(AuditFilter(actor="cli:op1"))
    assert [r.target for r in by_actor] == ["user:u3", "user:u1"]
    assert await store.access.list_audit(AuditFilter(action="key.create")) == []
    assert len(await store.access.list_audit(AuditFilter(outcome="allowed"))) == 5
    future = datetime.now(UTC) + timedelta(hours=1)
    assert await store.access.list_audit(AuditFilter(since=future)) == []
    assert len(await store.access.list_audit(AuditFilter(since=future - timedelta(hours=2)))) == 5
