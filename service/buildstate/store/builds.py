"""Builds and events, read the same way on both databases: one repository over the store's executor.

The queries are ``store/sql.py``'s (their filters are assembled from the request, with ``sql.Params``);
only the dashboard's step samples have a dialect variant. A build's artifacts, read with it for its page
and its history, are ``store/queries/artifacts.sql``'s (their writes and the lookup:
``store/artifacts.py``). The writes are per dialect (``sqlite.py``,
``postgres.py``): the event append is the hot path, and each database's way of making it fast differs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from buildstate.domain import EVENT_RULES
from buildstate.errors import NotFound
from buildstate.models import Artifact, Build, BuildDetail, BuildPage, Event, EventPage, History, Summary
from buildstate.store import plan, sql
from buildstate.store.executor import Executor, Json, Row, Statement, Transaction, one
from buildstate.store.queries import Queries
from buildstate.store.types import BuildCursor, BuildFilter, EventFilter

# One branch per state code, each with the code as a literal: the planner then sees from the column's
# statistics which codes are common (read backwards along the primary key, the newest rows are the ones
# wanted) and which are rare or unused (events_steps finds them, or finds none, at once). A single lateral
# join with a parameter gets one generic plan, and for an unused code that plan walks the whole table.
# SQLite takes no ORDER BY/LIMIT inside a UNION's branches: it runs one statement per code.
STEP_SAMPLES = " UNION ALL ".join(
    f"(SELECT {code} AS state_code, state_code AS to_state_code, duration_ms FROM events "
    f"WHERE type = 'state' AND from_state_code = {code} AND duration_ms IS NOT NULL "
    f"ORDER BY seq DESC LIMIT {sql.STEP_SAMPLES})"
    for code in range(0, 100, 5)
)
_STEP_SAMPLE_SQLITE = (
    "SELECT {code} AS state_code, state_code AS to_state_code, duration_ms FROM events WHERE type = 'state' "
    "AND from_state_code = {code} AND duration_ms IS NOT NULL ORDER BY seq DESC LIMIT {limit}"
)


def event_statement(dialect: sql.Dialect, seq: int) -> Statement:
    p = sql.Params(dialect)
    return Statement(sql.event_query(p, seq), p.values)


def build_statement(dialect: sql.Dialect, ref: str) -> Statement:
    p = sql.Params(dialect)
    return Statement(sql.build_query(p, ref), p.values)


ARTIFACTS = Queries("artifacts")
EVENTS = Queries("events")


def append_side_event(dialect: sql.Dialect, event: plan.SideEvent) -> Transaction[Row]:
    """Append ``event`` (one that leaves its build as it is) and its webhook deliveries, in the caller's
    transaction; its ``seq`` and ``recorded_at``. On PostgreSQL the feed lock is held from here to COMMIT:
    a transaction appends its events last."""
    build = event.build
    rows = yield EVENTS.statement(
        "append_side",
        dialect,
        feed_lock=sql.FEED_LOCK,
        build=build.id,
        type=event.type.value,
        reason=event.reason,
        actor=event.actor,
        provenance=Json(event.provenance),
        detail=Json(event.detail),
        now=datetime.now(UTC),
    )
    yield EVENTS.statement(
        "outbox",
        seq=rows[0]["seq"],
        platform=build.platform,
        os_version=build.os_version,
        image_type=build.image_type,
        word=EVENT_RULES[event.type].state_word,
    )
    return rows[0]


def artifacts_of(dialect: sql.Dialect, build: Build) -> Transaction[list[Artifact]]:
    """A build's artifacts, in the order they were recorded."""
    rows = yield ARTIFACTS.statement("of_build", build=build.id)
    return [sql.decode_artifact(dialect, row) for row in rows]


class BuildReads:
    def __init__(self, executor: Executor) -> None:
        self._executor = executor
        self._dialect = executor.dialect

    def _build(self, rows: list[Any], ref: str) -> Build:
        if not rows:
            raise NotFound(f"no build {ref!r}", slug="build-not-found")
        return sql.decode_build(self._dialect, rows[0])

    async def get_build(self, ref: str) -> Build:
        return self._build(await self._executor.read(one(build_statement(self._dialect, ref))), ref)

    async def build_detail(self, ref: str) -> BuildDetail:
        """The build and its artifacts, as of one moment."""
        if self._dialect.name == "postgresql":  # one statement: one round trip, no transaction
            p = sql.Params(self._dialect)
            rows = await self._executor.read(one(Statement(sql.build_detail_query(p, ref), p.values)))
            if not rows:
                raise NotFound(f"no build {ref!r}", slug="build-not-found")
            return sql.decode_detail(self._dialect, rows[0])

        def work() -> Transaction[BuildDetail]:
            rows = yield build_statement(self._dialect, ref)
            if not rows:
                raise NotFound(f"no build {ref!r}", slug="build-not-found")
            fields = sql.build_fields(self._dialect, rows[0])
            found = yield ARTIFACTS.statement("of_build", build=fields["id"])
            artifacts = [sql.decode_artifact(self._dialect, row) for row in found]
            return BuildDetail(**fields, artifacts=artifacts)  # validated once

        return await self._executor.read(work(), snapshot=True)

    async def list_builds(self, where: BuildFilter, limit: int, cursor: BuildCursor | None) -> BuildPage:
        p = sql.Params(self._dialect)
        statement = Statement(sql.build_list_query(p, where, limit + 1, cursor), p.values)
        rows = await self._executor.read(one(statement))
        builds = [sql.decode_build(self._dialect, row) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            next_cursor = BuildCursor(builds[-1].updated_at, builds[-1].id).encode()
        return BuildPage(builds=builds, next_cursor=next_cursor)

    async def history(self, ref: str) -> History:
        def work() -> Transaction[History]:
            build = self._build((yield build_statement(self._dialect, ref)), ref)
            p = sql.Params(self._dialect)
            rows = yield Statement(sql.history_query(p, self._dialect.uuid_param(build.id)), p.values)
            events = [sql.decode_event(self._dialect, row) for row in rows]
            artifacts = yield from artifacts_of(self._dialect, build)
            return History(build=build, events=events, artifacts=artifacts)

        # The build, its events and its artifacts, one state.
        return await self._executor.read(work(), snapshot=True)

    async def list_events(
        self, where: EventFilter, *, after: int, before: int | None, limit: int, newest_first: bool
    ) -> EventPage:
        p = sql.Params(self._dialect)
        query = sql.event_list_query(
            p, where, after=after, before=before, limit=limit + 1, newest_first=newest_first
        )
        rows = await self._executor.read(one(Statement(query, p.values)))
        events = [sql.decode_event(self._dialect, row) for row in rows[:limit]]
        return EventPage(
            events=events, next_after=events[-1].seq if events else after, has_more=len(rows) > limit
        )

    async def get_event(self, seq: int) -> Event:
        rows = await self._executor.read(one(event_statement(self._dialect, seq)))
        if not rows:
            raise NotFound(f"no event {seq}", slug="event-not-found")
        return sql.decode_event(self._dialect, rows[0])

    async def summary(self, window_hours: int) -> Summary:
        since = datetime.now(UTC) - timedelta(hours=window_hours)

        def work() -> Transaction[Summary]:
            counts = yield Statement("SELECT status, n FROM status_counts")
            matrix = yield Statement(sql.MATRIX_QUERY)
            regions = yield Statement(sql.MATRIX_ARTIFACTS_QUERY)
            revocations = yield Statement(sql.MATRIX_REVOCATIONS_QUERY)
            p = sql.Params(self._dialect)
            groups = yield Statement(sql.failure_groups_query(p, since), p.values)
            steps: list[Any] = []
            if self._dialect.name == "postgresql":
                steps = yield Statement(STEP_SAMPLES)
            else:
                for code in range(0, 100, 5):
                    query = _STEP_SAMPLE_SQLITE.format(code=code, limit=sql.STEP_SAMPLES)
                    steps.extend((yield Statement(query)))
            return sql.build_summary(
                self._dialect, counts, matrix, regions, revocations, groups, steps, window_hours
            )

        return await self._executor.read(work(), snapshot=True)

    async def max_seq(self) -> int:
        rows = await self._executor.read(one(Statement("SELECT COALESCE(max(seq), 0) AS seq FROM events")))
        return int(rows[0]["seq"])

    async def purge_idempotency_keys(self, older_than: datetime) -> int:
        statement = Statement(
            "DELETE FROM idempotency_keys WHERE created_at < :older_than RETURNING 1",
            {"older_than": older_than},
        )
        return len(await self._executor.write(one(statement)))
