"""Sends queued webhook deliveries: claim, sign, POST, record, retry with backoff, give up after 24 h.

Every worker of every instance runs one dispatcher. A claim marks deliveries as ``delivering`` with a lease
in one statement (PostgreSQL adds ``FOR UPDATE SKIP LOCKED``; SQLite serialises writers), so two dispatchers
never hold the same attempt. A dispatcher that dies mid-delivery leaves the lease to expire and another takes
the delivery over: delivery is at-least-once, and the unchanged ``webhook-id`` lets receivers de-duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import aiohttp

from buildstate.config import Settings
from buildstate.errors import NotFound, ServiceUnavailable, Unprocessable
from buildstate.numbers import ascii_int
from buildstate.store import Store
from buildstate.webhooks import payloads
from buildstate.webhooks.models import WebhookKind
from buildstate.webhooks.secrets import SecretBox
from buildstate.webhooks.store import Claimed, StoredWebhook, WebhookStore
from buildstate.webhooks.watch import FeedWatcher

log = logging.getLogger("buildstate.webhooks")
MAX_BACKOFF = timedelta(hours=1)
RESPONSE_READ_LIMIT = 64 * 1024


def validate_target(url: str, allowed_hosts: list[str]) -> None:
    """http(s) only, a host, no credentials in the URL, and on the allow-list when there is one."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise Unprocessable("a webhook URL must be http:// or https:// with a host", slug="bad-webhook-url")
    if parts.username or parts.password:
        raise Unprocessable("put credentials in the webhook secret, not in the URL", slug="bad-webhook-url")
    host = parts.hostname.lower()
    if allowed_hosts and not any(
        host == allowed or (allowed.startswith("*.") and host.endswith(allowed[1:]))
        for allowed in (a.lower() for a in allowed_hosts)
    ):
        raise Unprocessable(
            f"webhook host {host!r} is not in BUILDSTATE_WEBHOOK_ALLOWED_HOSTS", slug="webhook-host-denied"
        )


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    if not value:
        return None
    seconds = ascii_int(value.strip())
    if seconds is not None:
        return float(seconds)
    with contextlib.suppress(TypeError, ValueError):
        return max(0.0, (parsedate_to_datetime(value) - now).total_seconds())
    return None


def next_attempt(
    *, attempt: int, now: datetime, created_at: datetime, base_seconds: float, max_age: timedelta,
    retry_after: float | None, rng: random.Random,
) -> datetime | None:  # fmt: skip
    """Exponential backoff with jitter, at least ``Retry-After``; ``None`` once past ``max_age``."""
    ceiling = min(base_seconds * 2 ** (attempt - 1), MAX_BACKOFF.total_seconds())
    delay = rng.uniform(ceiling / 2, ceiling)
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_BACKOFF.total_seconds()))
    when = now + timedelta(seconds=delay)
    return None if when - created_at > max_age else when


class Dispatcher:
    def __init__(self, store: Store, settings: Settings, watcher: FeedWatcher | None = None) -> None:
        self.store = store
        self.hooks = WebhookStore(store)
        self.settings = settings
        self.watcher = watcher
        self.source = settings.public_url or "urn:buildstate"
        self._rng = random.Random()  # noqa: S311 - retry jitter, not a secret
        self._box: SecretBox | None = None

    @property
    def box(self) -> SecretBox:
        if self._box is None:
            self._box = SecretBox.from_settings(self.settings)
        return self._box

    def session(self) -> aiohttp.ClientSession:
        timeout = aiohttp.ClientTimeout(total=self.settings.webhook_timeout_seconds)
        return aiohttp.ClientSession(timeout=timeout, headers={"User-Agent": "buildstate-webhooks"})

    async def run(self) -> None:
        async with self.session() as session:
            while True:
                try:
                    handled = await self.run_once(session)
                except ServiceUnavailable as exc:
                    log.info("webhook dispatch paused: %s", exc.detail)
                    handled = 0
                except Exception:
                    log.exception("webhook dispatch round failed")
                    handled = 0
                if handled == 0:
                    poll = self.settings.webhook_poll_seconds
                    if self.watcher is not None:
                        await self.watcher.wait(self.watcher.latest, poll)
                    else:
                        await asyncio.sleep(poll)

    async def run_once(self, session: aiohttp.ClientSession) -> int:
        # Long enough for one delivery and its bookkeeping; a dead holder delays a retry by this much.
        lease = timedelta(seconds=self.settings.webhook_timeout_seconds * 2 + 5)
        claimed = await self.hooks.claim(now=datetime.now(UTC), lease=lease, limit=16)
        hooks: dict[int, StoredWebhook] = {}
        for webhook_id in {c.webhook_id for c in claimed}:
            hooks[webhook_id] = await self.hooks.get(webhook_id)
        await asyncio.gather(*(self._deliver(session, c, hooks[c.webhook_id]) for c in claimed))
        return len(claimed)

    async def _deliver(self, session: aiohttp.ClientSession, claimed: Claimed, hook: StoredWebhook) -> None:
        status: int | None = None
        error: str | None = None
        retry_after: float | None = None
        started = time.monotonic()
        try:
            event = await self.store.get_event(claimed.event_seq)
            request = payloads.build_request(
                hook.public.kind, hook.public.url, self.box.open(hook.secret_encrypted), event,
                claimed.message_id, source=self.source,
            )  # fmt: skip
            async with session.post(
                request.url, data=request.body, headers=request.headers, allow_redirects=False
            ) as response:
                status = response.status
                await response.content.read(RESPONSE_READ_LIMIT)
                retry_after = retry_after_seconds(response.headers.get("Retry-After"), datetime.now(UTC))
            if not 200 <= status < 300:
                error = "redirect not followed" if 300 <= status < 400 else f"HTTP {status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:500] if str(exc) else type(exc).__name__
        except NotFound as exc:
            error = exc.detail
        duration_ms = int((time.monotonic() - started) * 1000)
        now = datetime.now(UTC)
        delivered = status is not None and 200 <= status < 300
        gone = status == 410
        next_at = None
        if not delivered and not gone:
            next_at = next_attempt(
                attempt=claimed.attempt, now=now, created_at=claimed.created_at,
                base_seconds=self.settings.webhook_retry_base_seconds,
                max_age=timedelta(hours=self.settings.webhook_max_age_hours),
                retry_after=retry_after, rng=self._rng,
            )  # fmt: skip
        log.info(
            "webhook %s delivery %s attempt %s: %s in %d ms",
            hook.public.id, claimed.message_id, claimed.attempt,
            "delivered" if delivered else (error or "failed"), duration_ms,
        )  # fmt: skip
        await self.hooks.finish(
            claimed,
            now=now,
            delivered=delivered,
            next_attempt_at=next_at,
            status_code=status,
            error=error,
            duration_ms=duration_ms,
            disable_reason="the receiver answered 410 Gone" if gone else None,
            disable_after_failures=self.settings.webhook_disable_after_failures,
        )

    async def send_test(self, hook: StoredWebhook) -> tuple[int | None, int, str | None]:
        """Send a signed test message now, outside the outbox; returns (status, duration_ms, error)."""
        message_id = f"msg_test_{int(time.time() * 1000)}"
        secret = self.box.open(hook.secret_encrypted)
        if hook.public.kind == WebhookKind.CONCOURSE:
            request = payloads.Request(url=payloads.with_token(hook.public.url, secret), body=b"")
        else:
            request = payloads.test_request(hook.public.url, secret, message_id, hook.public.id)
        started = time.monotonic()
        try:
            async with (
                self.session() as session,
                session.post(
                    request.url, data=request.body, headers=request.headers, allow_redirects=False
                ) as response,
            ):
                await response.content.read(RESPONSE_READ_LIMIT)
                status: int | None = response.status
                error = None if 200 <= response.status < 300 else f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            status, error = None, f"{type(exc).__name__}: {exc}"[:500]
        return status, int((time.monotonic() - started) * 1000), error
