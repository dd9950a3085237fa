"""``Principal``: who a request comes from, once its credential has been checked."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    # What events and audit rows record: "key:bs_1a2b3c4d" or "user:alice".
    actor: str
    scopes: frozenset[str]
    # None: every platform. Otherwise writes to builds of other platforms are refused.
    platforms: frozenset[str] | None = None

    def has(self, scope: str) -> bool:
        return scope in self.scopes

    def may_touch(self, platform: str) -> bool:
        return self.platforms is None or platform in self.platforms
