"""Webhook secrets, encrypted at rest with a key from the environment.

Unlike API keys and passwords, a signing secret must be read back to sign each delivery, so it cannot be
hashed. It is encrypted with Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) under
``BUILDSTATE_WEBHOOK_KEY``. In development a key is generated once and kept in the data directory
(mode 0600); production refuses to store or use webhook secrets without the environment key.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets as random_secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from standardwebhooks import Webhook as Signer
from standardwebhooks.webhooks import EmptyWebhookSecretError

from buildstate.config import Environment, Settings
from buildstate.errors import ServiceUnavailable, Unprocessable
from buildstate.files import private_dir

KEY_FILE = "webhook.key"
SIGNING_PREFIX = "whsec_"
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        if settings.webhook_key is not None:
            return cls(settings.webhook_key.get_secret_value().encode())
        if settings.env == Environment.PRODUCTION:
            raise ServiceUnavailable(
                "BUILDSTATE_WEBHOOK_KEY is not set: webhooks are unavailable in production without it",
                slug="webhook-key-missing",
            )
        return cls(_development_key(settings.data_dir))

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken as exc:
            raise ServiceUnavailable(
                "a webhook secret cannot be decrypted: BUILDSTATE_WEBHOOK_KEY changed?",
                slug="webhook-key-mismatch",
            ) from exc


def _development_key(data_dir: Path) -> bytes:
    path = data_dir / KEY_FILE
    if not path.exists():
        private_dir(data_dir)
        key = Fernet.generate_key()
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(key)
    return path.read_bytes().strip()


def new_signing_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(random_secrets.token_bytes(32)).decode()


def check_signing_secret(secret: str) -> None:
    """422 unless ``secret`` is a Standard Webhooks secret: ``whsec_`` (optional) and canonical base64.

    Checked by the signer that will use it, and strictly, so that every receiver's library reads the same
    key; a secret that cannot be read would otherwise fail every delivery of the webhook, forever."""
    encoded = secret.removeprefix(SIGNING_PREFIX)
    problem = "a signing secret is whsec_ followed by base64 (as new webhooks get when none is given)"
    if not _BASE64.fullmatch(encoded):
        raise Unprocessable(problem, slug="bad-webhook-secret")
    try:
        Signer(secret)
    except (binascii.Error, ValueError, EmptyWebhookSecretError):
        raise Unprocessable(problem, slug="bad-webhook-secret") from None
