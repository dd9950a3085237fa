"""Passwords: argon2id (argon2-cffi's RFC 9106 low-memory profile: 64 MiB, 3 passes, 4 lanes).

Hashing takes tens of milliseconds of CPU and memory on purpose, so it runs on a thread, never on the
event loop. Verifying against an unknown user still hashes (against a dummy), so response time does not
tell which usernames exist.
"""

from __future__ import annotations

import asyncio
import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from buildstate.errors import Unprocessable

MIN_LENGTH = 8
MAX_LENGTH = 1024
_HASHER = PasswordHasher()


def check_policy(password: str) -> None:
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise Unprocessable(
            f"a password must be {MIN_LENGTH} to {MAX_LENGTH} characters long", slug="weak-password"
        )


async def hash_password(password: str) -> str:
    check_policy(password)
    return await asyncio.to_thread(_HASHER.hash, password)


@functools.cache
def _dummy_hash() -> str:
    return _HASHER.hash("not a password anyone has")


def _verify(stored_hash: str | None, password: str) -> bool:
    try:
        return _HASHER.verify(stored_hash or _dummy_hash(), password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


async def verify_password(stored_hash: str | None, password: str) -> bool:
    """True only if ``stored_hash`` is a hash of ``password``; ``None`` (no such user) costs the same."""
    return await asyncio.to_thread(_verify, stored_hash, password)
