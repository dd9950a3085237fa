"""Subscriptions, the delivery outbox and its attempt log, on either database.

Everything here is plain SQL over the store's executor (``executor.run_batch``): each call is one
transaction, and the statements are written once with ``sql.Params`` so that SQLite and PostgreSQL run the
same text (PostgreSQL adds ``FOR UPDATE SKIP LOCKED`` to the claim so that dispatchers in many processes
never take the same row). The audit rows are ``store.audit``'s.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from buildstate.errors import NotFound
from buildstate.redaction import redact
from buildstate.store import Store
from buildstate.store.audit import insert as audit_row
from buildstate.store.executor import batch
from buildstate.store.sql import Params
from buildstate.store.types import AuditEntry, WriteContext
from buildstate.webhooks.models import Delivery, DeliveryAttempt, DeliveryPage, Webhook, WebhookKind

# A query assembled with the given parameters (a condition used in more than one statement).
Query = Callable[[Params], str]
WEBHOOK_COLUMNS = (
    "id, name, url, url_sealed, kind, platform, os_version, image_type, states, event_types, "
    "secret_encrypted, enabled, disabled_reason, consecutive_failures, created_at, created_by"
)
DELIVERY_COLUMNS = (
    "id, webhook_id, event_seq, message_id, status, attempts, next_attempt_at, last_status_code, "
    "last_error, last_duration_ms, created_at, delivered_at"
)


def _as_list(value: str | None) -> list[str] | None:
    return None if value is None else [item for item in value.split(",") if item]


def _as_text(values: list[str] | None) -> str | None:
    return None if values is None else "," + ",".join(values) + ","


@dataclass(frozen=True, slots=True)
class StoredWebhook:
    """``public`` is what answers show: its URL with credential-shaped query values masked
    (``?token=***``), like the Concourse token that is never shown. Deliveries go to ``url_sealed`` opened
    with the webhook key (``Dispatcher.target``), or to ``url`` for a row made before URLs were sealed."""

    public: Webhook
    secret_encrypted: str
    url: str
    url_sealed: str | None


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery this dispatcher now holds, until ``lease_until``."""

    id: int
    webhook_id: int
    event_seq: int
    message_id: str
    attempt: int
    created_at: datetime


class WebhookStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.dialect = store.executor.dialect

    def _params(self) -> Params:
        return Params(self.dialect)

    def _webhook(self, row: Any) -> StoredWebhook:
        public = Webhook(
            id=row["id"],
            name=row["name"],
            url=redact(row["url"]),
            kind=WebhookKind(row["kind"]),
            platform=row["platform"],
            os_version=row["os_version"],
            image_type=row["image_type"],
            states=_as_list(row["states"]),
            event_types=_as_list(row["event_types"]),
            enabled=bool(row["enabled"]),
            disabled_reason=row["disabled_reason"],
            consecutive_failures=row["consecutive_failures"],
            created_at=self.dialect.time_value(row["created_at"]),
            created_by=row["created_by"],
        )
        return StoredWebhook(public, row["secret_encrypted"], row["url"], row["url_sealed"])

    def _delivery(self, row: Any) -> Delivery:
        time = self.dialect.time_value
        return Delivery(
            id=row["id"],
            webhook_id=row["webhook_id"],
            event_seq=row["event_seq"],
            message_id=row["message_id"],
            status=row["status"],
            attempts=row["attempts"],
            next_attempt_at=time(row["next_attempt_at"]),
            last_status_code=row["last_status_code"],
            last_error=row["last_error"],
            last_duration_ms=row["last_duration_ms"],
            created_at=time(row["created_at"]),
            delivered_at=None if row["delivered_at"] is None else time(row["delivered_at"]),
        )

    def _audit(
        self, ctx: WriteContext, action: str, target: str, now: datetime, status: int = 200
    ) -> tuple[str, Mapping[str, Any] | Sequence[Any]]:
        """The change's ``allowed`` audit row (``store.audit``'s one insert), for its own batch."""
        statement = audit_row(AuditEntry.of(ctx, action, target, status, "allowed"), at=now)
        return statement.sql, statement.params

    def _audit_if(
        self, ctx: WriteContext, action: str, target: str, now: datetime, *, found: Query, missing: NotFound
    ) -> tuple[str, list[Any]]:
        """The audit row of a change that applies only to the rows ``found`` selects: ``allowed`` (200)
        when there are any, ``refused`` (404, with the reason) when there are none, in the change's own
        transaction. ``found`` must select a row after the change exactly when it did before."""
        p = self._params()  # values bind in the order their placeholders appear (SQLite's "?")
        query = (
            "INSERT INTO audit_log (at, actor, action, target, outcome, status_code, request_id, source, "
            f"detail) SELECT {p.time(now)}, {p(ctx.actor)}, {p(action)}, {p(target)}, "
            f"CASE WHEN EXISTS ({found(p)}) THEN 'allowed' ELSE 'refused' END, "
            f"CASE WHEN EXISTS ({found(p)}) THEN 200 ELSE {p(missing.status)} END, "
            f"{p(ctx.request_id)}, {p(ctx.source)}, "
        )
        query += f"CASE WHEN EXISTS ({found(p)}) THEN NULL ELSE "
        detail = {"reason": missing.detail}
        query += (
            f"{p(detail)}::jsonb END" if self.dialect.name == "postgresql" else f"{p(json.dumps(detail))} END"
        )
        return query, p.values

    def _lock(self, found: Query) -> list[tuple[str, list[Any]]]:
        """PostgreSQL: hold the rows ``found`` selects for the transaction, so that ``_audit_if`` sees
        what the change saw (SQLite's writer already holds the whole database)."""
        if self.dialect.name != "postgresql":
            return []
        p = self._params()
        return [(f"{found(p)} FOR UPDATE", p.values)]

    async def audited_get(self, webhook_id: int, action: str, ctx: WriteContext) -> StoredWebhook:
        """``get``, with a ``refused`` audit row for ``action`` when there is no such webhook."""
        try:
            return await self.get(webhook_id)
        except NotFound as missing:
            await self.store.record_audit(
                AuditEntry(
                    ctx.actor, action, f"webhook:{webhook_id}", "refused", missing.status, ctx.request_id,
                    ctx.source, {"reason": missing.detail},
                )
            )  # fmt: skip
            raise

    # ------------------------------------------------------------------ subscriptions

    async def create(
        self,
        *,
        name: str,
        url: str,
        url_sealed: str,
        kind: WebhookKind,
        filters: dict[str, Any],
        secret_encrypted: str,
        ctx: WriteContext,
        now: datetime,
    ) -> StoredWebhook:
        """``url`` is sealed in ``url_sealed``; the ``url`` column keeps only its shown (redacted) form."""
        p = self._params()
        query = (
            "INSERT INTO webhooks (name, url, url_sealed, kind, platform, os_version, image_type, states, "
            "event_types, secret_encrypted, enabled, consecutive_failures, created_at, created_by) VALUES ("
            f"{p(name)}, {p(redact(url))}, {p(url_sealed)}, {p(kind.value)}, {p(filters.get('platform'))}, "
            f"{p(filters.get('os_version'))}, {p(filters.get('image_type'))}, "
            f"{p(_as_text(filters.get('states')))}, {p(_as_text(filters.get('event_types')))}, "
            f"{p(secret_encrypted)}, true, 0, {p.time(now)}, {p(ctx.actor)}) RETURNING {WEBHOOK_COLUMNS}"
        )
        [rows, _] = await self.store.executor.run_batch(
            [(query, p.values), self._audit(ctx, "webhook.create", f"webhook:{name}", now, status=201)]
        )
        return self._webhook(rows[0])

    async def all(self) -> list[StoredWebhook]:
        [rows] = await self.store.executor.run_batch(
            [(f"SELECT {WEBHOOK_COLUMNS} FROM webhooks ORDER BY id", [])], write=False
        )
        return [self._webhook(row) for row in rows]

    async def get(self, webhook_id: int) -> StoredWebhook:
        p = self._params()
        [rows] = await self.store.executor.run_batch(
            [(f"SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = {p(webhook_id)}", p.values)], write=False
        )
        if not rows:
            raise NotFound(f"no webhook {webhook_id}", slug="webhook-not-found")
        return self._webhook(rows[0])

    async def set_enabled(
        self, webhook_id: int, *, enabled: bool, reason: str | None, ctx: WriteContext, now: datetime
    ) -> StoredWebhook:
        p = self._params()
        query = (
            f"UPDATE webhooks SET enabled = {p(enabled)}, disabled_reason = {p(reason)}, "
            f"consecutive_failures = 0 WHERE id = {p(webhook_id)} RETURNING {WEBHOOK_COLUMNS}"
        )
        action = "webhook.enable" if enabled else "webhook.disable"
        missing = NotFound(f"no webhook {webhook_id}", slug="webhook-not-found")

        def found(q: Params) -> str:
            return f"SELECT 1 FROM webhooks WHERE id = {q(webhook_id)}"

        *_, rows, _ = await self.store.executor.run_batch(
            [
                *self._lock(found),
                (query, p.values),
                self._audit_if(ctx, action, f"webhook:{webhook_id}", now, found=found, missing=missing),
            ]
        )
        if not rows:
            raise missing
        return self._webhook(rows[0])

    # ------------------------------------------------------------------ deliveries

    @staticmethod
    def _due(p: Params, now: datetime) -> str:
        """What a dispatcher may take at ``now``: due deliveries, and those whose holder's lease ran out."""
        return (
            "FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id "
            f"WHERE w.enabled AND ((d.status = 'pending' AND d.next_attempt_at <= {p.time(now)}) "
            f"OR (d.status = 'delivering' AND d.lease_until < {p.time(now)}))"
        )

    async def any_due(self, *, now: datetime) -> bool:
        """Whether ``claim`` would take anything: one read (no transaction on PostgreSQL, no writer's lock on
        SQLite), so that a dispatcher woken by every move of the feed writes only when there is work."""
        p = self._params()
        query = f"SELECT 1 AS due {self._due(p, now)} LIMIT 1"
        [rows] = await self.store.executor.read(batch([(query, p.values)]))
        return bool(rows)

    async def claim(self, *, now: datetime, lease: timedelta, limit: int) -> list[Claimed]:
        """Take up to ``limit`` due deliveries (or ones whose holder's lease ran out) for this process."""
        p = self._params()
        lock = " FOR UPDATE OF d SKIP LOCKED" if self.dialect.name == "postgresql" else ""
        query = (
            f"UPDATE webhook_deliveries SET status = 'delivering', attempts = attempts + 1, "
            f"lease_until = {p.time(now + lease)} WHERE id IN ("
            f"SELECT d.id {self._due(p, now)} "
            f"ORDER BY d.next_attempt_at LIMIT {p(limit)}{lock}"
            ") RETURNING id, webhook_id, event_seq, message_id, attempts, created_at"
        )
        [rows] = await self.store.executor.run_batch([(query, p.values)])
        return [
            Claimed(
                id=row["id"],
                webhook_id=row["webhook_id"],
                event_seq=row["event_seq"],
                message_id=row["message_id"],
                attempt=row["attempts"],
                created_at=self.dialect.time_value(row["created_at"]),
            )
            for row in rows
        ]

    async def finish(
        self,
        claimed: Claimed,
        *,
        now: datetime,
        delivered: bool,
        next_attempt_at: datetime | None,
        status_code: int | None,
        error: str | None,
        duration_ms: int,
        disable_reason: str | None,
        disable_after_failures: int,
    ) -> None:
        """Record one attempt's outcome; only the holder of this attempt can record it."""
        status = "delivered" if delivered else ("pending" if next_attempt_at is not None else "dead")
        p = self._params()
        update = (
            f"UPDATE webhook_deliveries SET status = {p(status)}, "
            f"next_attempt_at = {p.time(next_attempt_at or now)}, lease_until = NULL, "
            f"last_status_code = {p(status_code)}, last_error = {p(error)}, "
            f"last_duration_ms = {p(duration_ms)}, "
            f"delivered_at = {p.time(now) if delivered else 'NULL'} "
            f"WHERE id = {p(claimed.id)} AND attempts = {p(claimed.attempt)} AND status = 'delivering'"
        )
        statements = [(update, p.values)]
        p = self._params()
        statements.append(
            (
                "INSERT INTO webhook_attempts (delivery_id, attempt, at, status_code, duration_ms, error) "
                f"VALUES ({p(claimed.id)}, {p(claimed.attempt)}, {p.time(now)}, {p(status_code)}, "
                f"{p(duration_ms)}, {p(error)})",
                p.values,
            )
        )
        p = self._params()
        if delivered:
            counter = f"UPDATE webhooks SET consecutive_failures = 0 WHERE id = {p(claimed.webhook_id)}"
        else:
            counter = (
                "UPDATE webhooks SET consecutive_failures = consecutive_failures + 1 "
                f"WHERE id = {p(claimed.webhook_id)}"
            )
        statements.append((counter, p.values))
        if not delivered:
            p = self._params()
            reason = disable_reason or f"{disable_after_failures} deliveries failed in a row"
            statements.append(
                (
                    f"UPDATE webhooks SET enabled = false, disabled_reason = {p(reason)} "
                    f"WHERE id = {p(claimed.webhook_id)} AND enabled AND "
                    f"(consecutive_failures >= {p(disable_after_failures)} "
                    f"OR {p(disable_reason is not None)})",
                    p.values,
                )
            )
        await self.store.executor.run_batch(statements)

    async def deliveries(
        self, webhook_id: int, *, status: str | None, before: int | None, limit: int
    ) -> DeliveryPage:
        p = self._params()
        conditions = [f"webhook_id = {p(webhook_id)}"]
        if status is not None:
            conditions.append(f"status = {p(status)}")
        if before is not None:
            conditions.append(f"id < {p(before)}")
        query = (
            f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE {' AND '.join(conditions)} "
            f"ORDER BY id DESC LIMIT {p(limit + 1)}"
        )
        [rows] = await self.store.executor.run_batch([(query, p.values)], write=False)
        page = [self._delivery(row) for row in rows[:limit]]
        return DeliveryPage(deliveries=page, next_before=page[-1].id if len(rows) > limit else None)

    async def delivery(self, webhook_id: int, delivery_id: int) -> Delivery:
        p = self._params()
        found = (
            f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries "
            f"WHERE id = {p(delivery_id)} AND webhook_id = {p(webhook_id)}"
        )
        q = self._params()
        attempts = (
            "SELECT attempt, at, status_code, duration_ms, error FROM webhook_attempts "
            f"WHERE delivery_id = {q(delivery_id)} ORDER BY attempt, id"
        )
        [rows, attempt_rows] = await self.store.executor.run_batch(
            [(found, p.values), (attempts, q.values)], write=False
        )
        if not rows:
            raise NotFound(f"no delivery {delivery_id} for webhook {webhook_id}", slug="delivery-not-found")
        log = [
            DeliveryAttempt(
                attempt=row["attempt"],
                at=self.dialect.time_value(row["at"]),
                status_code=row["status_code"],
                duration_ms=row["duration_ms"],
                error=row["error"],
            )
            for row in attempt_rows
        ]
        return self._delivery(rows[0]).model_copy(update={"attempt_log": log})

    async def redeliver(self, webhook_id: int, delivery_id: int, *, ctx: WriteContext, now: datetime) -> None:
        """Queue a delivery again now, keeping its webhook-id so receivers can still de-duplicate."""
        p = self._params()
        query = (
            f"UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = {p.time(now)}, "
            f"lease_until = NULL WHERE id = {p(delivery_id)} AND webhook_id = {p(webhook_id)} "
            "AND status <> 'delivering' RETURNING id"
        )
        missing = NotFound(
            f"no finished delivery {delivery_id} for webhook {webhook_id} (in flight ones cannot be "
            "redelivered)",
            slug="delivery-not-found",
        )

        def found(q: Params) -> str:
            # After the update the row is 'pending', so this selects it after exactly when it did before.
            return (
                f"SELECT 1 FROM webhook_deliveries WHERE id = {q(delivery_id)} "
                f"AND webhook_id = {q(webhook_id)} AND status <> 'delivering'"
            )

        target = f"delivery:{delivery_id}"
        *_, rows, _ = await self.store.executor.run_batch(
            [
                *self._lock(found),
                (query, p.values),
                self._audit_if(ctx, "webhook.redeliver", target, now, found=found, missing=missing),
            ]
        )
        if not rows:
            raise missing
