"""Scopes, and what each user role grants.

Scopes name what a route needs (``ROUTES`` in ``web/routing.py``): ``read`` (every GET of build data),
``write`` (create, state, failure, parents), ``reset`` (reset a build), ``release`` (assign channels, revoke
and restore builds), ``admin`` (keys, users, the audit log).
A credential's granted scopes are expanded once: ``admin`` implies all others, and ``write`` implies
``reset`` (a pipeline that may fail a build may restart it). ``read`` and ``write`` are independent, so
a write-only key cannot read the feed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Literal

READ, WRITE, RESET, RELEASE, ADMIN = "read", "write", "reset", "release", "admin"

KeyScope = Literal["read", "write", "release", "admin"]
KEY_SCOPES: Final = (READ, WRITE, RELEASE, ADMIN)

Role = Literal["viewer", "operator", "admin"]
ROLE_SCOPES: Final[dict[str, frozenset[str]]] = {
    "viewer": frozenset({READ}),
    "operator": frozenset({READ, WRITE, RESET, RELEASE}),
    "admin": frozenset({READ, WRITE, RESET, RELEASE, ADMIN}),
}


def expand(granted: Iterable[str]) -> frozenset[str]:
    scopes = set(granted)
    if ADMIN in scopes:
        scopes |= {READ, WRITE, RESET, RELEASE}
    if WRITE in scopes:
        scopes.add(RESET)
    return frozenset(scopes)


def spell(scopes: Iterable[str]) -> str:
    """The OAuth2 ``scope`` string: space-separated, in a stable order."""
    order = (READ, WRITE, RESET, RELEASE, ADMIN)
    present = set(scopes)
    return " ".join(s for s in order if s in present)
