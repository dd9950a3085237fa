"""Creating and changing keys and users: the one code path for the CLI and the admin routes.

Each function validates its input, turns secrets into what may be stored (a key digest, a password
hash), and hands the change to ``store.access``, which writes it with its audit row.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from buildstate.auth import keys, passwords
from buildstate.auth.scopes import ADMIN, KEY_SCOPES, ROLE_SCOPES
from buildstate.errors import Unprocessable
from buildstate.store import Store
from buildstate.store.access import ApiKeyRecord, KeyPrefixTaken, NewApiKey, UserRecord
from buildstate.store.types import WriteContext

USERNAME = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")
PLATFORM = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_DRAWS = 5


def normalise_username(username: str) -> str:
    """Usernames are case-insensitive: stored and compared in lower case."""
    name = username.strip().lower()
    if not USERNAME.fullmatch(name):
        raise Unprocessable(
            "a username is 1 to 64 characters: letters, digits, '.', '_', '@' and '-'",
            slug="bad-username",
        )
    return name


def check_role(role: str) -> str:
    if role not in ROLE_SCOPES:
        raise Unprocessable(f"role must be one of {', '.join(ROLE_SCOPES)}", slug="bad-role")
    return role


def check_key_request(
    name: str, scopes: Iterable[str], platforms: Iterable[str] | None
) -> tuple[str, tuple[str, ...], tuple[str, ...] | None]:
    name = name.strip()
    if not 1 <= len(name) <= 100 or not name.isprintable():
        raise Unprocessable("a key name is 1 to 100 printable characters", slug="bad-key-name")
    wanted = tuple(dict.fromkeys(scopes))
    if not wanted or any(scope not in KEY_SCOPES for scope in wanted):
        raise Unprocessable(f"scopes must be one or more of {', '.join(KEY_SCOPES)}", slug="bad-scope")
    only = tuple(dict.fromkeys(platforms)) if platforms is not None else None
    if only is not None:
        if not only or any(not PLATFORM.fullmatch(p) for p in only):
            raise Unprocessable("platforms must be one or more platform slugs", slug="bad-platform")
        if ADMIN in wanted:
            raise Unprocessable(
                "an admin key manages keys and users for every platform: it cannot be platform-bound",
                slug="bad-scope",
            )
    return name, wanted, only


async def create_api_key(
    store: Store,
    *,
    name: str,
    scopes: Iterable[str],
    platforms: Iterable[str] | None,
    expires_in_days: int | None,
    ctx: WriteContext,
) -> tuple[str, ApiKeyRecord]:
    """Returns the key itself (to show once) and its stored record."""
    name, wanted, only = check_key_request(name, scopes, platforms)
    if expires_in_days is not None and not 1 <= expires_in_days <= 3650:
        raise Unprocessable("expires_in_days must be 1 to 3650", slug="bad-expiry")
    expires_at = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None
    for _ in range(_DRAWS):
        new = keys.generate()
        record = NewApiKey(
            prefix=new.public_id,
            key_hash=new.digest,
            name=name,
            scopes=wanted,
            platforms=only,
            expires_at=expires_at,
        )
        try:
            return new.key, await store.access.create_key(record, ctx)
        except KeyPrefixTaken:
            continue
    raise RuntimeError(f"{_DRAWS} random key prefixes in a row were taken")  # pragma: no cover


def check_key_id(key_id: str) -> str:
    if not keys.PUBLIC_ID.fullmatch(key_id):
        raise Unprocessable("a key is named by its id, bs_ and 8 hex digits", slug="bad-key-id")
    return key_id


async def create_user(
    store: Store, *, username: str, role: str, password: str, ctx: WriteContext
) -> UserRecord:
    name = normalise_username(username)
    check_role(role)
    return await store.access.create_user(name, await passwords.hash_password(password), role, ctx)


async def change_password(store: Store, *, username: str, password: str, ctx: WriteContext) -> UserRecord:
    name = normalise_username(username)
    return await store.access.set_password(name, await passwords.hash_password(password), ctx)


async def set_disabled(store: Store, *, username: str, disabled: bool, ctx: WriteContext) -> UserRecord:
    return await store.access.set_user_disabled(normalise_username(username), disabled, ctx)
