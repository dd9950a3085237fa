"""The audit log, written once: the one insert, and ``AuditLog.audited``, the one way a change is audited.

Every outcome goes through here: ``allowed`` (a change and its row commit together), ``refused`` (a rule said
no: 4xx, recorded on its own with the reason), ``replayed`` and ``denied`` (the auth middleware, through
``Store.record_audit``). The build writes' hot paths put ``insert``'s statement into their own transaction.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeVar

from buildstate.errors import Problem
from buildstate.store.executor import Executor, Json, Statement, Transaction, one
from buildstate.store.queries import Queries
from buildstate.store.types import AuditEntry, WriteContext

T = TypeVar("T")
AUDIT = Queries("audit")


def insert(entry: AuditEntry, at: datetime | None = None) -> Statement:
    """The statement that records ``entry`` (in whatever transaction runs it)."""
    return AUDIT.statement(
        "insert",
        at=at or datetime.now(UTC),
        actor=entry.actor,
        action=entry.action,
        target=entry.target,
        outcome=entry.outcome,
        status_code=entry.status_code,
        request_id=entry.request_id,
        source=entry.source,
        detail=Json(entry.detail),
        repeat_key=entry.repeat_key,
    )


def _then_audit(work: Transaction[T], entry: AuditEntry) -> Transaction[T]:
    result = yield from work
    yield insert(entry)
    return result


def refusal(ctx: WriteContext, action: str, target: str | None, problem: Problem) -> AuditEntry:
    return AuditEntry(
        ctx.actor, action, target, "refused", problem.status, ctx.request_id, ctx.source,
        {"reason": problem.detail},
    )  # fmt: skip


class AuditLog:
    def __init__(self, executor: Executor) -> None:
        self._executor = executor

    async def record(self, entry: AuditEntry) -> None:
        await self._executor.write(one(insert(entry)))

    async def audited(
        self,
        ctx: WriteContext,
        action: str,
        target: str | None,
        work: Transaction[T],
        *,
        status_code: int = 200,
        detail: dict[str, Any] | None = None,
    ) -> T:
        """``work`` and its ``allowed`` row in one transaction. A refusal (a 4xx problem) is recorded as
        ``refused`` on its own, since the change's transaction rolled back."""
        allowed = AuditEntry(
            ctx.actor, action, target, "allowed", status_code, ctx.request_id, ctx.source, detail
        )
        try:
            return await self._executor.write(_then_audit(work, allowed))
        except Problem as refused:
            await self.refused(ctx, action, target, refused)
            raise

    async def refused(self, ctx: WriteContext, action: str, target: str | None, problem: Problem) -> None:
        """Record that a rule refused ``action`` (nothing for a 5xx: the service failed, not the rule)."""
        if problem.status < 500:
            await self.record(refusal(ctx, action, target, problem))
