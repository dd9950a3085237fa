"""Sends queued webhook deliveries: claim, sign, POST, record, retry with backoff, give up after 24 h.

Every worker of every instance runs one dispatcher. A claim marks deliveries as ``delivering`` with a lease
in one statement (PostgreSQL adds ``FOR UPDATE SKIP LOCKED``; SQLite serialises writers), so two dispatchers
never hold the same attempt. A dispatcher that dies mid-delivery leaves the lease to expire and another takes
the delivery over: delivery is at-least-once, and the unchanged ``webhook-id`` lets receivers de-duplicate.

What an attempt records and answers (``webhook_attempts.error``, ``last_error``, ``/test``) is one of a few
fixed texts, never an exception's: aiohttp's error texts can hold the whole target URL (a Concourse
``webhook_token`` with it), and telling "connection refused" from "timed out" would make ``/test`` a port
scanner. The exception's own text, redacted of the webhook's secret and URL, goes only to the service log.

A delivery that can never succeed as things stand (the webhook's secret cannot be decrypted or read, its URL
cannot be parsed, the event's payload cannot be built) ends ``dead`` with the reason, logged once without a
traceback; when the webhook itself is at fault it is disabled with that reason, so its other deliveries wait
for an admin instead of failing one by one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import aiohttp
from aiohttp.abc import AbstractResolver
from yarl import URL

from buildstate.config import Settings
from buildstate.errors import NotFound, ServiceUnavailable, Unprocessable
from buildstate.models import Event
from buildstate.numbers import ascii_int
from buildstate.redaction import redact
from buildstate.store import Store
from buildstate.webhooks import payloads
from buildstate.webhooks.models import WebhookKind
from buildstate.webhooks.secrets import SecretBox, check_signing_secret
from buildstate.webhooks.store import Claimed, StoredWebhook, WebhookStore
from buildstate.webhooks.targets import ALLOWED_HOSTS_SETTING, REFUSED, TargetPolicy, TargetRefused
from buildstate.webhooks.watch import FeedWatcher

log = logging.getLogger("buildstate.webhooks")
MAX_BACKOFF = timedelta(hours=1)
RESPONSE_READ_LIMIT = 64 * 1024


# The only texts an attempt's error can be, besides "HTTP <status>" and REFUSED (targets.py).
NO_ANSWER = "could not connect, or no answer in time"
REDIRECTED = "redirect not followed"
NOT_LISTED = f"refused by policy: the host is not in {ALLOWED_HOSTS_SETTING}"
UNPARSABLE = "its URL cannot be parsed or used (check the host and the port)"


class Undeliverable(Exception):
    """A delivery that cannot succeed as things stand; ``webhook_fault`` when every delivery of the webhook
    would fail the same way (its secret or URL), not only this one (its event)."""

    def __init__(self, reason: str, *, webhook_fault: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.webhook_fault = webhook_fault


def _refused_by_policy(exc: BaseException) -> bool:
    """Whether a failed connect was the target policy's refusal (aiohttp wraps it in its own errors)."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, TargetRefused):
            return True
        pending += [getattr(current, "os_error", None), current.__cause__, current.__context__]
    return False


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one POST came to: the answer's status, or a fixed error text (and, for the log only, the
    exception's own text, redacted)."""

    status: int | None
    error: str | None
    duration_ms: int
    retry_after: float | None = None
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


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
    # The exponent is capped: attempts keep counting across redeliveries and lease take-overs, and a float
    # times 2**1100 overflows, which failed the delivery's bookkeeping on every round, forever.
    ceiling = min(base_seconds * 2.0 ** min(attempt - 1, 64), MAX_BACKOFF.total_seconds())
    delay = rng.uniform(ceiling / 2, ceiling)
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_BACKOFF.total_seconds()))
    when = now + timedelta(seconds=delay)
    return None if when - created_at > max_age else when


class Dispatcher:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        watcher: FeedWatcher | None = None,
        *,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self.store = store
        self.hooks = WebhookStore(store)
        self.settings = settings
        self.watcher = watcher
        self.policy = TargetPolicy.from_settings(settings)
        # aiohttp's own resolver when None; tests give a stub, so that no name is ever looked up for real.
        self.resolver = resolver
        self.source = settings.public_url or "urn:buildstate"
        self._rng = random.Random()  # noqa: S311 - retry jitter, not a secret
        self._box: SecretBox | None = None

    @property
    def box(self) -> SecretBox:
        if self._box is None:
            self._box = SecretBox.from_settings(self.settings)
        return self._box

    def session(self) -> aiohttp.ClientSession:
        """Every connection it makes goes through the target policy's socket factory."""
        timeout = aiohttp.ClientTimeout(total=self.settings.webhook_timeout_seconds)
        connector = aiohttp.TCPConnector(resolver=self.resolver, socket_factory=self.policy.socket_factory)
        return aiohttp.ClientSession(
            timeout=timeout, connector=connector, headers={"User-Agent": "buildstate-webhooks"}
        )

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
        """Claim due deliveries and send them; ``session`` must come from ``self.session()``."""
        # Long enough for one delivery and its bookkeeping; a dead holder delays a retry by this much.
        lease = timedelta(seconds=self.settings.webhook_timeout_seconds * 2 + 5)
        now = datetime.now(UTC)
        # Woken by every move of the feed: most moves queue no delivery, and a read costs far less than the
        # claim's write transaction (on SQLite it would queue behind the service's writes for its lock).
        if not await self.hooks.any_due(now=now):
            return 0
        claimed = await self.hooks.claim(now=now, lease=lease, limit=16)
        by_hook: dict[int, list[Claimed]] = {}
        for delivery in claimed:
            by_hook.setdefault(delivery.webhook_id, []).append(delivery)
        sends = []
        for webhook_id, deliveries in by_hook.items():
            hook = await self.hooks.get(webhook_id)
            try:
                secret = self.usable_secret(hook)
            except Undeliverable as fault:
                await self._give_up(hook, deliveries, fault)
                continue
            sends += [self._deliver(session, delivery, hook, secret) for delivery in deliveries]
        await asyncio.gather(*sends)
        return len(claimed)

    def target(self, hook: StoredWebhook) -> str:
        """Where the webhook's deliveries go (its sealed URL, opened; ``usable_secret`` checked it opens)."""
        return self.box.open(hook.url_sealed) if hook.url_sealed is not None else hook.url

    def usable_secret(self, hook: StoredWebhook) -> str:
        """The webhook's secret, once it is sure that it and the URL can be used at all."""
        try:
            secret = self.box.open(hook.secret_encrypted)
            url = self.target(hook)
        except ServiceUnavailable as exc:
            if exc.type_slug != "webhook-key-mismatch":
                raise  # no key at all (production without BUILDSTATE_WEBHOOK_KEY): every webhook waits
            raise Undeliverable(
                "its secret cannot be decrypted with BUILDSTATE_WEBHOOK_KEY (was the key changed?)",
                webhook_fault=True,
            ) from None
        if hook.public.kind != WebhookKind.CONCOURSE:
            try:
                check_signing_secret(secret)
            except Unprocessable:
                raise Undeliverable(
                    "its signing secret is not whsec_ and base64, so nothing can be signed with it",
                    webhook_fault=True,
                ) from None
        try:
            URL(url).port  # noqa: B018 - yarl checks the port only when asked for it
        except (ValueError, TypeError):
            raise Undeliverable(UNPARSABLE, webhook_fault=True) from None
        return secret

    async def _give_up(self, hook: StoredWebhook, deliveries: list[Claimed], fault: Undeliverable) -> None:
        """Every claimed delivery of a webhook that cannot deliver ends dead; the webhook is disabled."""
        log.warning(
            "webhook %s disabled: %s (%d deliveries dead)", hook.public.id, fault.reason, len(deliveries)
        )
        for delivery in deliveries:
            await self._record(
                delivery, Attempt(None, fault.reason, 0), dead=True, disable_reason=fault.reason
            )

    async def _deliver(
        self, session: aiohttp.ClientSession, claimed: Claimed, hook: StoredWebhook, secret: str
    ) -> None:
        try:
            request = self._request(hook, secret, await self._event(claimed), claimed.message_id)
            attempt = await self.send(session, request, secret)
        except Undeliverable as fault:
            log.warning(
                "webhook %s delivery %s cannot be delivered: %s",
                hook.public.id,
                claimed.message_id,
                fault.reason,
            )
            disable = fault.reason if fault.webhook_fault else None
            await self._record(claimed, Attempt(None, fault.reason, 0), dead=True, disable_reason=disable)
            return
        log.info(
            "webhook %s delivery %s attempt %s: %s in %d ms%s",
            hook.public.id, claimed.message_id, claimed.attempt,
            "delivered" if attempt.ok else attempt.error, attempt.duration_ms,
            f" ({attempt.detail})" if attempt.detail else "",
        )  # fmt: skip
        gone = attempt.status == 410
        await self._record(
            claimed, attempt, dead=gone, disable_reason="the receiver answered 410 Gone" if gone else None
        )

    async def _event(self, claimed: Claimed) -> Event:
        try:
            return await self.store.get_event(claimed.event_seq)
        except NotFound:
            raise Undeliverable(
                f"its event {claimed.event_seq} does not exist", webhook_fault=False
            ) from None

    def _request(self, hook: StoredWebhook, secret: str, event: Event, message_id: str) -> payloads.Request:
        try:
            return payloads.build_request(
                hook.public.kind, self.target(hook), secret, event, message_id, source=self.source
            )
        except Exception as exc:  # whatever the event holds, one delivery must not stop the dispatcher
            raise Undeliverable(
                f"its payload cannot be built ({type(exc).__name__})", webhook_fault=False
            ) from None

    async def _record(
        self, claimed: Claimed, attempt: Attempt, *, dead: bool, disable_reason: str | None
    ) -> None:
        now = datetime.now(UTC)
        next_at = None
        if not attempt.ok and not dead:
            next_at = next_attempt(
                attempt=claimed.attempt, now=now, created_at=claimed.created_at,
                base_seconds=self.settings.webhook_retry_base_seconds,
                max_age=timedelta(hours=self.settings.webhook_max_age_hours),
                retry_after=attempt.retry_after, rng=self._rng,
            )  # fmt: skip
        await self.hooks.finish(
            claimed,
            now=now,
            delivered=attempt.ok,
            next_attempt_at=next_at,
            status_code=attempt.status,
            error=attempt.error,
            duration_ms=attempt.duration_ms,
            disable_reason=disable_reason,
            disable_after_failures=self.settings.webhook_disable_after_failures,
        )

    async def send(self, session: aiohttp.ClientSession, request: payloads.Request, secret: str) -> Attempt:
        """POST ``request`` once, under the target policy; what came of it, in words safe to store."""
        started = time.monotonic()
        try:
            # The allow-list may have changed since the webhook was made; the address is checked at connect.
            url = self.policy.check_url(request.url)
        except Unprocessable as refused:
            if refused.type_slug == "bad-webhook-url":
                raise Undeliverable(UNPARSABLE, webhook_fault=True) from None
            return Attempt(None, REFUSED if refused.type_slug == "webhook-target-refused" else NOT_LISTED, 0)
        status: int | None = None
        retry_after: float | None = None
        error: str | None = None
        detail: str | None = None
        try:
            with self.policy.sending_to(url.host or ""):
                async with session.post(
                    url, data=request.body, headers=request.headers, allow_redirects=False
                ) as response:
                    status = response.status
                    await response.content.read(RESPONSE_READ_LIMIT)
                    retry_after = retry_after_seconds(response.headers.get("Retry-After"), datetime.now(UTC))
            if not 200 <= status < 300:
                error = REDIRECTED if 300 <= status < 400 else f"HTTP {status}"
        except aiohttp.InvalidURL:
            raise Undeliverable(UNPARSABLE, webhook_fault=True) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = REFUSED if _refused_by_policy(exc) else NO_ANSWER
            detail = redact(f"{type(exc).__name__}: {exc}"[:500], secret, request.url, str(url))
        duration_ms = int((time.monotonic() - started) * 1000)
        return Attempt(status, error, duration_ms, retry_after, detail)

    async def send_test(self, hook: StoredWebhook) -> Attempt:
        """Send a signed test message now, outside the outbox."""
        try:
            secret = self.usable_secret(hook)
            if hook.public.kind == WebhookKind.CONCOURSE:
                request = payloads.Request(url=payloads.with_token(self.target(hook), secret), body=b"")
            else:
                message_id = f"msg_test_{int(time.time() * 1000)}"
                request = payloads.test_request(self.target(hook), secret, message_id, hook.public.id)
            async with self.session() as session:
                attempt = await self.send(session, request, secret)
        except Undeliverable as fault:
            return Attempt(None, fault.reason, 0)
        outcome = f"HTTP {attempt.status}" if attempt.status is not None else attempt.error
        log.info(
            "webhook %s test: %s in %d ms%s", hook.public.id, outcome, attempt.duration_ms,
            f" ({attempt.detail})" if attempt.detail else "",
        )  # fmt: skip
        return attempt
