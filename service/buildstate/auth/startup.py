"""What a server start needs from auth, once, in the master process before workers fork.

- the JWT secret: refuse to start in production without ``BUILDSTATE_JWT_SECRET``; in development generate
  and persist one now, so every worker reads the same file;
- a first-start hint: with no usable admin credential in the database, say how to create one.
"""

from __future__ import annotations

import asyncio

from buildstate import paths
from buildstate.auth.secret import jwt_secret
from buildstate.config import Settings
from buildstate.store import create_store


def first_admin_hint(command: str) -> str:
    """What to run when no admin credential exists; ``command`` is how to call buildstate from here."""
    return (
        "no admin credential exists yet. Create an admin API key (printed once) with:\n"
        f"    {command} keys create --name admin --scope admin\n"
        f"and a pipeline key with: {command} keys create --name my-pipeline --scope read --scope write\n"
        "People sign in at POST /token once a user exists: "
        f"{command} users create --username you --role admin"
    )


async def _has_admin(settings: Settings) -> bool:
    store = create_store(settings)
    await store.open()
    try:
        return await store.access.has_admin()
    finally:
        await store.close()


def prepare(settings: Settings) -> list[str]:
    """Check the secret (raises ``MissingSecretError``) and return lines worth telling the operator."""
    jwt_secret(settings)
    return [] if asyncio.run(_has_admin(settings)) else [first_admin_hint(paths.command())]
