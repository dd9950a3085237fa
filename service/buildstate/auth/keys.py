"""API keys: ``bs_<8 hex>_<secret>``, the secret being 32 random bytes (43 URL-safe characters).

The ``bs_<8 hex>`` part is the key's public id: it is stored in clear to find the row, shown in lists and
recorded as the actor (``key:bs_1a2b3c4d``). The whole key is stored only as its SHA-256 digest: a key has
256 bits of entropy, so a fast hash is as safe as a slow one and costs nothing per request. The digest
comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

SECRET_BYTES = 32
_KEY = re.compile(r"(bs_[0-9a-f]{8})_[A-Za-z0-9_-]{43}")
PUBLIC_ID = re.compile(r"bs_[0-9a-f]{8}")


@dataclass(frozen=True, slots=True)
class GeneratedKey:
    key: str  # shown once, never stored
    public_id: str
    digest: str

    def __repr__(self) -> str:  # never let the key reach a log line through a repr
        return f"GeneratedKey(public_id={self.public_id!r})"


def generate() -> GeneratedKey:
    public_id = f"bs_{secrets.token_hex(4)}"
    key = f"{public_id}_{secrets.token_urlsafe(SECRET_BYTES)}"
    return GeneratedKey(key=key, public_id=public_id, digest=digest(key))


def public_id(presented: str) -> str | None:
    """The public id of a well-formed key, or None for anything else."""
    match = _KEY.fullmatch(presented)
    return match.group(1) if match else None


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def matches(presented: str, stored_digest: str) -> bool:
    return hmac.compare_digest(digest(presented), stored_digest)
