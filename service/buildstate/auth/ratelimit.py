"""Token buckets: per API key and per user for every request, and for failed sign-ins.

A bucket holds up to ``burst`` tokens and refills at ``rate`` per second; a request takes one. Without
Redis each process keeps its own buckets (so N workers allow N times the rate). With
``BUILDSTATE_REDIS_URL`` every worker of every instance shares them: one Lua script reads, refills, takes
and writes a bucket atomically on the Redis server, using the server's clock, so instances with skewed
clocks still agree. If Redis is unreachable the process falls back to its own buckets (and says so in the
log once a minute) rather than failing every request or dropping the limit.

Responses carry the IETF ``RateLimit-Policy`` and ``RateLimit`` fields (draft-ietf-httpapi-ratelimit-
headers): ``"default";q=<burst>;w=<seconds to refill from empty>`` and ``"default";r=<left>;t=<seconds
until full>``; a refusal adds ``Retry-After``.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

log = logging.getLogger("buildstate.auth")


@dataclass(frozen=True, slots=True)
class Bucket:
    name: str
    rate: float  # tokens per second
    burst: int
    # The ``RateLimit-Policy`` field: the same for every request that takes from this bucket.
    policy: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "policy", f'"{self.name}";q={self.burst};w={self.window}')

    @property
    def window(self) -> int:
        return max(1, math.ceil(self.burst / self.rate))


def client_key(source: str | None) -> str:
    """Who a per-client limit counts: the address, except that an IPv6 address counts as its /64 (one
    host holds a whole /64 and could otherwise take a fresh bucket for every request) and an IPv4-mapped
    one as the IPv4 address."""
    if not source:
        return "unknown"
    try:
        address = ipaddress.ip_address(source)
    except ValueError:
        return source[:100]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class Decision(NamedTuple):
    """One take from a bucket (a named tuple: one is made per request, and tuples are made fast)."""

    allowed: bool
    tokens: float  # left after this call
    bucket: Bucket
    cost: int = 1

    @property
    def remaining(self) -> int:
        return max(0, math.floor(self.tokens))

    @property
    def retry_after(self) -> int:
        """Whole seconds until the refused request could pass (at least 1)."""
        missing = max(self.cost, 1) - self.tokens
        return max(1, math.ceil(missing / self.bucket.rate))

    @property
    def reset_after(self) -> int:
        return max(0, math.ceil((self.bucket.burst - self.tokens) / self.bucket.rate))

    def headers(self) -> dict[str, str]:
        bucket = self.bucket
        fields = {
            "RateLimit-Policy": bucket.policy,
            "RateLimit": f'"{bucket.name}";r={self.remaining};t={self.reset_after}',
        }
        if not self.allowed:
            fields["Retry-After"] = str(self.retry_after)
        return fields


def settle(tokens: float, bucket: Bucket, cost: int) -> tuple[bool, float]:
    """Apply ``cost`` to a refilled bucket: > 0 takes if there is enough, 0 only looks (is one left?),
    < 0 gives back (a refund)."""
    if cost < 0:
        return True, min(float(bucket.burst), tokens - cost)
    if tokens >= max(cost, 1):
        return True, tokens - cost
    return False, tokens


class Limiter(Protocol):
    async def take(self, key: str, bucket: Bucket, cost: int = 1) -> Decision: ...
    async def close(self) -> None: ...


class LocalLimiter:
    """Buckets in this process's memory."""

    _PRUNE_EVERY = 1024

    def __init__(self) -> None:
        # key -> (tokens, when last updated (monotonic), when it will be full again)
        self._buckets: dict[str, tuple[float, float, float]] = {}
        self._calls = 0

    async def take(self, key: str, bucket: Bucket, cost: int = 1) -> Decision:
        now = time.monotonic()
        tokens, updated, _ = self._buckets.get(key, (float(bucket.burst), now, now))
        tokens = min(float(bucket.burst), tokens + (now - updated) * bucket.rate)
        allowed, tokens = settle(tokens, bucket, cost)
        self._buckets[key] = (tokens, now, now + (bucket.burst - tokens) / bucket.rate)
        self._calls += 1
        if self._calls % self._PRUNE_EVERY == 0:
            self._prune(now)
        return Decision(allowed, tokens, bucket, cost)

    def _prune(self, now: float) -> None:
        """Forget full buckets: a missing bucket is a full one."""
        for key in [k for k, (_, _, full_at) in self._buckets.items() if full_at <= now]:
            del self._buckets[key]

    async def close(self) -> None:
        self._buckets.clear()


# KEYS[1] bucket; ARGV rate, burst, cost. Returns {allowed (0/1), tokens as a string (Lua numbers become
# integers on the way out)}. TIME before a write is fine with effects replication (Redis >= 5).
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
if cost < 0 then
  tokens = math.min(burst, tokens - cost)
  allowed = 1
elseif tokens >= math.max(cost, 1) then
  tokens = tokens - cost
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return {allowed, tostring(tokens)}
"""


class RedisLimiter:
    """Buckets in Redis, shared by every process that uses the same URL and prefix."""

    _WARN_EVERY = 60.0

    def __init__(self, url: str, prefix: str) -> None:
        import redis.asyncio  # noqa: PLC0415 - only needed when Redis is configured

        self._client: Any = redis.asyncio.from_url(
            url, socket_timeout=0.5, socket_connect_timeout=0.5, health_check_interval=30
        )
        self._script: Any = self._client.register_script(_TAKE)
        self._prefix = prefix
        self._fallback = LocalLimiter()
        self._warned_at = -math.inf

    async def take(self, key: str, bucket: Bucket, cost: int = 1) -> Decision:
        import redis  # noqa: PLC0415

        try:
            allowed, tokens = await self._script(
                keys=[f"{self._prefix}rl:{key}"], args=[bucket.rate, bucket.burst, cost]
            )
        except (redis.RedisError, OSError) as exc:
            now = time.monotonic()
            if now - self._warned_at >= self._WARN_EVERY:
                self._warned_at = now
                log.warning(
                    "Redis unreachable (%s): rate limits are per process until it returns", type(exc).__name__
                )
            return await self._fallback.take(key, bucket, cost)
        return Decision(bool(allowed), float(tokens), bucket, cost)

    async def close(self) -> None:
        await self._client.aclose()
        await self._fallback.close()


def create_limiter(redis_url: str | None, prefix: str) -> Limiter:
    return RedisLimiter(redis_url, prefix) if redis_url else LocalLimiter()
