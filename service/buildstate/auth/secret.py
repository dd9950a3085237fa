"""Where the JWT signing secret comes from.

``BUILDSTATE_JWT_SECRET`` when set (at least 32 characters). In production it must be set: the service
refuses to start without it, so no image ever carries a baked-in secret. In development a secret is
generated on first start and kept in ``<data_dir>/jwt-secret`` (mode 0600), so tokens survive restarts and
every worker signs with the same one. ``buildstate serve`` resolves it before forking its workers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from pathlib import Path

from buildstate.config import Environment, Settings
from buildstate.files import private_dir

log = logging.getLogger("buildstate.auth")

MIN_SECRET_LENGTH = 32
SECRET_FILE = "jwt-secret"  # noqa: S105 - a file name


class MissingSecretError(RuntimeError):
    """Production mode without ``BUILDSTATE_JWT_SECRET``."""


def jwt_secret(settings: Settings) -> bytes:
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value().encode()
    if settings.env == Environment.PRODUCTION:
        raise MissingSecretError(
            "BUILDSTATE_JWT_SECRET is required when BUILDSTATE_ENV=production (at least 32 characters; "
            "e.g. python -c 'import secrets; print(secrets.token_urlsafe(48))')"
        )
    return _persisted(settings.data_dir / SECRET_FILE)


def _read(path: Path) -> bytes | None:
    try:
        value = path.read_bytes().strip()
    except FileNotFoundError:
        return None
    if len(value) < MIN_SECRET_LENGTH:
        raise MissingSecretError(f"{path} holds fewer than {MIN_SECRET_LENGTH} characters; delete it")
    if path.stat().st_mode & 0o077:
        log.warning("%s was readable by others; restricting it to its owner", path)
        path.chmod(0o600)
    return value


def _persisted(path: Path) -> bytes:
    existing = _read(path)
    if existing is not None:
        return existing
    private_dir(path.parent)
    # Write a private temporary file, then link it into place: the link fails if another process got
    # there first, so every process ends up with the one secret and none reads a half-written file.
    temporary = path.with_name(f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_urlsafe(48).encode())
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
            log.info("generated a JWT signing secret in %s (development mode)", path)
    finally:
        temporary.unlink(missing_ok=True)
    value = _read(path)
    if value is None:  # pragma: no cover - deleted between link and read
        raise MissingSecretError(f"{path} vanished while it was being created")
    return value
