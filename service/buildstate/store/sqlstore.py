"""What the SQLite and PostgreSQL stores share: an executor, the repositories written once over it, and
every read. A store of a dialect adds its event append (the hot path) and its schema check."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from buildstate.domain import EVENT_RULES, EventType
from buildstate.models import (
    Build,
    BuildDetail,
    BuildPage,
    Event,
    EventPage,
    FailureReport,
    History,
    ResetRequest,
    StateChange,
    Summary,
)
from buildstate.store import plan
from buildstate.store.access import AccessStore
from buildstate.store.artifacts import ArtifactStore
from buildstate.store.audit import AuditLog
from buildstate.store.builds import BuildReads
from buildstate.store.executor import Executor
from buildstate.store.key_changes import KeyChanges
from buildstate.store.release import ReleaseStore
from buildstate.store.types import (
    AuditEntry,
    BuildCursor,
    BuildFilter,
    EventFilter,
    PoolStats,
    WriteContext,
    WriteResult,
)


class SqlStore:
    """The part of both stores that is the same; a subclass adds ``create_build`` and ``_transition``."""

    def __init__(self, executor: Executor, key_changes: KeyChanges) -> None:
        self.executor = executor
        # For /ready and reports only: what decides behaviour is an explicit capability (pool_stats, listen).
        self.name = executor.dialect.name
        self.audit = AuditLog(executor)
        # What lets a worker keep API keys in memory and still refuse a revoked one at once.
        self.key_changes = key_changes
        self.access = AccessStore(executor, self.audit, key_changes)
        self.reads = BuildReads(executor)
        self.release = ReleaseStore(executor, self.audit)
        self.artifacts = ArtifactStore(executor, self.audit, self.release)

    async def open(self) -> None:
        await self.executor.open()

    async def close(self) -> None:
        await self.executor.close()

    async def record_state(self, ref: str, request: StateChange, ctx: WriteContext) -> WriteResult:
        prepared = plan.prepare(request)  # here, not on the writer or under a lock
        return await self._transition(
            ref, ctx, EVENT_RULES[EventType.STATE].action, lambda b: plan.state(b, prepared)
        )

    async def record_failure(self, ref: str, request: FailureReport, ctx: WriteContext) -> WriteResult:
        prepared = plan.prepare(request)
        return await self._transition(
            ref, ctx, EVENT_RULES[EventType.FAILURE].action, lambda b: plan.failure(b, prepared)
        )

    async def reset_build(self, ref: str, request: ResetRequest, ctx: WriteContext) -> WriteResult:
        prepared = plan.prepare(request)
        return await self._transition(
            ref, ctx, EVENT_RULES[EventType.RESET].action, lambda b: plan.reset(b, prepared)
        )

    async def _transition(
        self, ref: str, ctx: WriteContext, action_name: str, decide: Callable[[Build], plan.Draft | None]
    ) -> WriteResult:
        """Lock the build ``ref`` names, let ``decide`` say what to append (None: nothing, the change is
        already true), and append it with the audit row of ``action_name``: the dialect's write path."""
        raise NotImplementedError

    async def get_build(self, ref: str) -> Build:
        return await self.reads.get_build(ref)

    async def build_detail(self, ref: str) -> BuildDetail:
        return await self.reads.build_detail(ref)

    async def list_builds(self, where: BuildFilter, limit: int, cursor: BuildCursor | None) -> BuildPage:
        return await self.reads.list_builds(where, limit, cursor)

    async def history(self, ref: str) -> History:
        return await self.reads.history(ref)

    async def list_events(
        self, where: EventFilter, *, after: int, before: int | None, limit: int, newest_first: bool
    ) -> EventPage:
        return await self.reads.list_events(
            where, after=after, before=before, limit=limit, newest_first=newest_first
        )

    async def get_event(self, seq: int) -> Event:
        return await self.reads.get_event(seq)

    async def summary(self, window_hours: int) -> Summary:
        return await self.reads.summary(window_hours)

    async def max_seq(self) -> int:
        return await self.reads.max_seq()

    async def purge_idempotency_keys(self, older_than: datetime) -> int:
        return await self.reads.purge_idempotency_keys(older_than)

    async def record_audit(self, entry: AuditEntry) -> None:
        await self.audit.record(entry)

    def pool_stats(self) -> PoolStats | None:
        """The connection pool's sizes, where there is a pool."""
        return None

    def can_listen(self) -> bool:
        """Whether ``listen`` hears committed events (else readers poll ``max_seq``)."""
        return False

    async def listen(self, channel: str, heard: Callable[[str], None]) -> None:
        raise NotImplementedError(f"{self.name} has no notifications: poll max_seq instead")
