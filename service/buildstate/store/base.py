"""The one store interface (``Store``). The values that cross it are in ``store.types``.

Two implementations keep the same behaviour: ``SQLiteStore`` (the zero-configuration default) and
``PostgresStore`` (production). The tests in ``tests/store`` run every case against both.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from buildstate.models import (
    Build,
    BuildCreate,
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
from buildstate.store.access import AccessStore
from buildstate.store.artifacts import ArtifactStore
from buildstate.store.executor import Executor
from buildstate.store.release import ReleaseStore
from buildstate.store.types import (
    AuditEntry,
    BuildCursor,
    BuildFilter,
    EventFilter,
    PoolStats,
    SchemaStatus,
    WriteContext,
    WriteResult,
)


class Store(Protocol):
    """Everything the HTTP layer needs from storage. Writes are atomic and race-free across processes.

    What differs between the databases is not asked for here: a capability is a method (``pool_stats``,
    ``can_listen``), and repositories outside the store (``webhooks.store``) are written over ``executor``.
    """

    # For /ready and reports ("sqlite", "postgresql"); nothing decides anything by it.
    name: str

    @property
    def executor(self) -> Executor:
        """Runs transactions written once (``store.executor``): what repositories are written over."""
        ...

    # API keys, users and audit queries, on the same connections (``store/access.py``).
    access: AccessStore
    # What builds made: recording them with their event, reading them, the deployers' lookup
    # (``store/artifacts.py``).
    artifacts: ArtifactStore
    # Ancestry, channels and revocations (``store/release.py``).
    release: ReleaseStore

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def schema_status(self) -> SchemaStatus: ...

    async def create_build(self, request: BuildCreate, ctx: WriteContext) -> WriteResult: ...
    async def record_state(self, ref: str, request: StateChange, ctx: WriteContext) -> WriteResult: ...
    async def record_failure(self, ref: str, request: FailureReport, ctx: WriteContext) -> WriteResult: ...
    async def reset_build(self, ref: str, request: ResetRequest, ctx: WriteContext) -> WriteResult: ...

    async def get_build(self, ref: str) -> Build: ...
    async def build_detail(self, ref: str) -> BuildDetail: ...
    async def list_builds(self, where: BuildFilter, limit: int, cursor: BuildCursor | None) -> BuildPage: ...
    async def history(self, ref: str) -> History: ...
    async def list_events(
        self, where: EventFilter, *, after: int, before: int | None, limit: int, newest_first: bool
    ) -> EventPage: ...
    async def get_event(self, seq: int) -> Event: ...
    async def summary(self, window_hours: int) -> Summary: ...
    async def purge_idempotency_keys(self, older_than: datetime) -> int: ...
    async def record_audit(self, entry: AuditEntry) -> None: ...
    async def max_seq(self) -> int: ...

    def pool_stats(self) -> PoolStats | None:
        """The connection pool's sizes (in use, idle, at most), where the store has a pool."""
        ...

    def can_listen(self) -> bool:
        """Whether ``listen`` hears committed events as they commit (else readers poll ``max_seq``)."""
        ...

    async def listen(self, channel: str, heard: Callable[[str], None]) -> None:
        """Call ``heard(payload)`` for each notification on ``channel`` until the connection is lost."""
        ...
