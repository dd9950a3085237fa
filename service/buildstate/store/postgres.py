"""PostgreSQL store (asyncpg): the production store, shared by every worker of every instance.

Why the event feed never skips an event
---------------------------------------
PostgreSQL hands out sequence values at insert time, not at commit time. If writer A takes seq 41 and
writer B takes seq 42 and commits first, a reader paging with ``seq > 40`` sees 42, moves its cursor past
41, and never sees 41 once A commits. Every event append therefore takes one transaction-level advisory
lock (``FEED_LOCK``) *before* drawing its sequence value and keeps it until commit: sequence values are
drawn in commit order, so whatever a reader can see is a gap-free prefix of the feed. The lock is held
only for the final statement and the commit of a write (the build row is locked and the rules checked
before it), which costs far less than hiding rows behind the oldest running transaction's horizon on
every read. Since every append waits for that lock, its hold time bounds the write rate: the append
statement therefore writes the audit row too, and the response body is built after COMMIT, so nothing
but the statement and the commit happens while it is held (an ``Idempotency-Key`` adds the one UPDATE
that records the answer).

Group commit. Held through COMMIT, the lock let one fsync happen at a time: appends ran at the speed of
one commit each. A change without an ``Idempotency-Key`` (and a create without one, ``CREATE_BUILD``)
therefore keeps no transaction open at all: it hands its statement to the process's ``StatementGroup``,
which sends every statement waiting at that moment in one round trip (``fetchmany``: one implicit
transaction, one COMMIT, one fsync for all of them). A state change or a reset checks its rule in that
statement (``STATE_BY_ID``, ``RESET_BY_ID``, ``_change_in_one``): it locks the build row only if the rule
records the change, and answers from the row it locked, so it needs no read before. One that the rule
does not record (a replay, a 409), for no build, or whose row is held, writes nothing there and takes the
way that reads the build first: it reads the build, checks the rules, and appends in a group on
condition that the build's last event is still the one read (compare-and-set,
``APPEND_EVENT_IF_CURRENT``); if another write won the race, it takes the locking transaction instead.
The feed lock is still held from the first append of a group to its COMMIT, so the seqs a reader can
see are still a gap-free prefix; it is only held for many appends at once. The other way, not holding
the lock across COMMIT and serving readers only below the oldest writer in flight
(``pg_snapshot_xmin``), was measured too: without the lock, one statement per commit reached no more
than with it (each commit still pays its own WAL flush) and the counter rows (``status_counts``) then
deadlocked between writers, while a group of N appends costs about one commit (docs/performance.md).
``tests/store/test_feed.py`` (``test_reader_never_skips_an_event_whose_writer_commits_late``) holds one
writer's transaction open while another commits and shows the reader never skips;
``tests/store/test_pg_append_groups.py`` covers the groups.

Lock order, which keeps writers free of deadlocks: idempotency key row, a create's build_id lock, build
row, feed lock, then the
small summary tables (``status_counts``, ``combos``), which are only ever touched under the feed lock. A
group's later statements lock build rows while the group holds the feed lock: they never wait for one
(``SKIP LOCKED``: a held row makes its append fall back to the locking path).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from buildstate.domain import EVENT_RULES, RUNNING, EventType, build_uuid_of, status_at, types_where
from buildstate.errors import NotFound, Problem
from buildstate.models import Build, BuildCreate, Event, ResetRequest, StateChange
from buildstate.store import plan, sql
from buildstate.store.audit import insert as audit_row
from buildstate.store.builds import event_statement
from buildstate.store.key_changes import NotifiedKeyChanges
from buildstate.store.migrate import PostgresMigrator
from buildstate.store.postgres_executor import PostgresExecutor, StatementGroup, execute
from buildstate.store.sqlstore import SqlStore
from buildstate.store.types import (
    AuditEntry,
    Idempotency,
    PoolStats,
    SchemaStatus,
    WriteContext,
    WriteResult,
    replay,
)

FEED_LOCK = sql.FEED_LOCK  # the one advisory lock that orders event appends (the artifacts' too)
# The space of the per-build_id advisory locks (with ``hashtext(build_id)``) that creates take before they
# insert a build row: two-key advisory locks never collide with the one-key FEED_LOCK.
BUILD_ID_LOCK = 0x62696400  # "bid\0"

# The event append after the feed lock is taken (the CTE ``feed_lock``): the statements below differ
# only in how they get there. What the append writes comes from its parameters ($2-$27, ``append_args``)
# or, in ``STATE_BY_ID``/``STATE_BY_NAME``, partly from the build row the statement itself locked (the
# CTE ``guard``, as ``g``, joined where its columns are used: ``rows``); ``_APPEND_PARAMS`` names them.
_APPEND_PARAMS = (
    "build", "type", "attempt", "state_code", "from_state_code", "status", "message", "failure", "reason",
    "actor", "provenance", "previous_at", "platform_id", "os_version_id", "image_type_id", "old_status",
    "platform", "os_version", "image_type", "state_key", "other_state_key", "audit_action", "audit_target",
    "audit_status", "request_id", "source",
)  # fmt: skip


def _append_after_lock(rows: str = "", **given: str) -> str:
    """The append's CTEs, with each of ``_APPEND_PARAMS`` as ``given`` (default: its parameter, $2-$27)
    and ``rows`` joined to each CTE that reads them."""
    v = {name: given.pop(name, f"${n}") for n, name in enumerate(_APPEND_PARAMS, start=2)}
    if given:  # pragma: no cover - a misspelt name
        raise TypeError(f"not a parameter of the append: {sorted(given)}")
    failures = sql.types_in(types_where(lambda rule: rule.records_failure))
    creates = sql.types_in(types_where(lambda rule: rule.creates_build))
    return f"""
ev AS (
    INSERT INTO events (seq, build_uuid, type, attempt, state_code, from_state_code, status, message,
                        failure, reason, actor, provenance, duration_ms,
                        platform_id, os_version_id, image_type_id, recorded_at)
    SELECT nextval('events_seq'), {v["build"]}, {v["type"]}, {v["attempt"]}, {v["state_code"]}, \
{v["from_state_code"]}, {v["status"]}, {v["message"]}, {v["failure"]}::jsonb, {v["reason"]}, {v["actor"]}, \
{v["provenance"]}::jsonb,
           (EXTRACT(EPOCH FROM clock_timestamp() - {v["previous_at"]}::timestamptz) * 1000)::bigint,
           {v["platform_id"]}, {v["os_version_id"]}, {v["image_type_id"]}, clock_timestamp()
    FROM feed_lock{rows}
    RETURNING seq, recorded_at, duration_ms
),
build_update AS (
    UPDATE builds SET state_code = {v["state_code"]}, status = {v["status"]}, attempt = {v["attempt"]}, \
message = {v["message"]},
                      failure = {v["failure"]}::jsonb, updated_at = ev.recorded_at, last_event_seq = ev.seq
    FROM ev{rows} WHERE builds.id = {v["build"]}
),
counts AS (
    UPDATE status_counts
    SET n = n + (CASE WHEN status_counts.status = {v["status"]} THEN 1 ELSE 0 END)
              - (CASE WHEN status_counts.status = {v["old_status"]} THEN 1 ELSE 0 END)
    FROM ev{rows} WHERE status_counts.status IN ({v["status"]}, {v["old_status"]}) \
AND {v["status"]} IS DISTINCT FROM {v["old_status"]}
),
failure_row AS (
    INSERT INTO failures (seq, build_uuid, error_message, error_code, component, details, recorded_at)
    SELECT ev.seq, {v["build"]}, {v["failure"]}::jsonb->>'error_message', \
{v["failure"]}::jsonb->>'error_code',
           {v["failure"]}::jsonb->>'component', {v["failure"]}::jsonb->'details', ev.recorded_at
    FROM ev{rows} WHERE {v["type"]} IN {failures}
),
combo AS (
    INSERT INTO combos (platform_id, os_version_id, image_type_id)
    SELECT {v["platform_id"]}, {v["os_version_id"]}, {v["image_type_id"]} FROM ev{rows} \
WHERE {v["type"]} IN {creates}
    ON CONFLICT DO NOTHING
),
outbox AS (
    INSERT INTO webhook_deliveries (webhook_id, event_seq, message_id, status, next_attempt_at, created_at)
    SELECT w.id, ev.seq, 'msg_' || ev.seq || '_' || w.id, 'pending', ev.recorded_at, ev.recorded_at
    FROM ev{rows} JOIN webhooks w ON w.enabled
        AND (w.platform IS NULL OR w.platform = {v["platform"]})
        AND (w.os_version IS NULL OR w.os_version = {v["os_version"]})
        AND (w.image_type IS NULL OR w.image_type = {v["image_type"]})
        AND (w.event_types IS NULL OR w.event_types LIKE '%,' || {v["type"]} || ',%')
        AND (w.states IS NULL OR w.states LIKE '%,' || {v["state_key"]} || ',%' \
OR w.states LIKE '%,' || {v["other_state_key"]} || ',%')
),
audit AS (
    INSERT INTO audit_log (actor, action, target, outcome, status_code, request_id, source)
    SELECT {v["actor"]}, {v["audit_action"]}, {v["audit_target"]}, 'allowed', {v["audit_status"]}, \
{v["request_id"]}, {v["source"]} FROM ev WHERE {v["audit_action"]}::text IS NOT NULL
),
wake AS (SELECT pg_notify('buildstate_events', seq::text) FROM ev)
"""


_APPEND_AFTER_LOCK = _append_after_lock()

APPEND_EVENT = (
    "WITH feed_lock AS (SELECT pg_advisory_xact_lock($1::bigint)),"
    + _APPEND_AFTER_LOCK
    + "SELECT ev.seq, ev.recorded_at, ev.duration_ms FROM ev CROSS JOIN wake"
)
# The same append, on one condition: the build's last event is still the one its rules were checked
# against ($28); $29 is its place in its group (``StatementGroup``), returned as ``slot``. The build row
# is locked first (the lock order above), and SKIP LOCKED: a statement of a group never waits for a
# row lock while the group holds the feed lock (a transaction holding that row may be waiting for the
# feed lock: a deadlock). If another write got there first, or holds the row, the statement does
# nothing and returns no row; the caller then takes the locking path.
APPEND_EVENT_IF_CURRENT = (
    "WITH guard AS (SELECT 1 FROM builds WHERE id = $2 AND last_event_seq = $28::bigint"
    " FOR UPDATE SKIP LOCKED),"
    " feed_lock AS (SELECT pg_advisory_xact_lock($1::bigint) FROM guard),"
    + _APPEND_AFTER_LOCK
    + "SELECT $29::int AS slot, ev.seq, ev.recorded_at, ev.duration_ms FROM ev CROSS JOIN wake"
)

# A create in one statement (``create_build`` without an Idempotency-Key, platform, OS and image type
# already known): the event appended as above, then the build row written with it, as it is after its
# first event (the append's UPDATE of the build sees no row: the row is this statement's own). Only if no
# build has this build_id ($28; labels $29, place in its group $31); if one does, no row comes back and
# the create takes the locking path, which answers a repeat or a conflict. A build made by a concurrent
# create after this statement's snapshot fails it on the unique build_id: then too. The build_id's own
# lock ($30, ``BUILD_ID_LOCK``) is only tried: a create on the locking path that holds it (and may have
# inserted the row, which this INSERT would wait for while holding the feed lock: a deadlock) makes this
# one take the locking path too.
CREATE_BUILD = (
    "WITH guard AS (SELECT 1 WHERE pg_try_advisory_xact_lock($30::int, hashtext($28))"
    " AND NOT EXISTS (SELECT 1 FROM builds WHERE build_id = $28)),"
    " feed_lock AS (SELECT pg_advisory_xact_lock($1::bigint) FROM guard),"
    + _APPEND_AFTER_LOCK
    + """, new_build AS (
    INSERT INTO builds (id, build_id, platform_id, os_version_id, image_type_id, state_code, status, attempt,
                        labels, message, failure, created_at, updated_at, last_event_seq)
    SELECT $2, $28, $14, $15, $16, $5, $7, $4, $29::jsonb, $8, $9::jsonb,
           ev.recorded_at, ev.recorded_at, ev.seq
    FROM ev
)
SELECT $31::int AS slot, ev.seq, ev.recorded_at, ev.duration_ms FROM ev CROSS JOIN wake"""
)


def _change_in_one(event_type: EventType, condition: str, attempt: str, reason: str) -> tuple[str, str]:
    """A change of a build's state without an Idempotency-Key in one statement, its rule checked in it
    (``condition``): the build row is locked only if the rule records the change, and the event copies
    what it needs of the build (attempt, from_state_code, lookups) from that row. $2 the build's id (the
    first statement) or its build_id (the second), $3 the new code, $4 the status it gives, $5 the
    message, $6 actor, $7 provenance, $8-$9 the ``states`` tokens, $10-$13 the audit row, $14 the place
    in the group. It returns the build as it was (``g.*``) with the event's seq and time; no row when the
    rule records nothing (a replay, a 409), for no build, or when the row is held (SKIP LOCKED, as
    above): then nothing was written, and the caller takes the way that reads the build first and
    answers each of those as before."""
    statement = (
        f"""WITH guard AS (
    SELECT {sql.BUILD_COLUMNS}, b.platform_id, b.os_version_id, b.image_type_id {sql.BUILD_FROM}
    WHERE {{ref}}{condition} FOR UPDATE OF b SKIP LOCKED
),
feed_lock AS (SELECT pg_advisory_xact_lock($1::bigint) FROM guard),"""
        + _append_after_lock(
            ", guard g",
            build="g.id",
            type=f"'{event_type.value}'",
            attempt=attempt,
            state_code="$3",
            from_state_code="g.state_code",
            status="$4",
            message="$5",
            failure="NULL",
            reason=reason,
            actor="$6",
            provenance="$7",
            previous_at="g.updated_at",
            platform_id="g.platform_id",
            os_version_id="g.os_version_id",
            image_type_id="g.image_type_id",
            old_status="g.status",
            platform="g.platform",
            os_version="g.os_version",
            image_type="g.image_type",
            state_key="$8",
            other_state_key="$9",
            audit_action="$10",
            audit_target="$11",
            audit_status="200",
            request_id="$12",
            source="$13",
        )
        + "SELECT $14::int AS slot, ev.seq AS event_seq, ev.recorded_at, ev.duration_ms, g.*"
        " FROM ev CROSS JOIN wake CROSS JOIN guard g"
    )
    return statement.replace("{ref}", "b.id = $2::uuid"), statement.replace("{ref}", "b.build_id = $2::text")


# A state change records an event exactly when the build runs below the new code (``domain.moves_forward``).
STATE_BY_ID, STATE_BY_NAME = _change_in_one(
    EventType.STATE, f" AND b.status = '{RUNNING}' AND b.state_code < $3::int", "g.attempt", "NULL"
)
# A reset always does (``domain.decide_reset``): the next attempt at 0; its reason is its message.
RESET_BY_ID, RESET_BY_NAME = _change_in_one(EventType.RESET, "", "g.attempt + 1", "$5")

_READ_BUILD = f"""
SELECT {sql.BUILD_COLUMNS}, b.platform_id, b.os_version_id, b.image_type_id
{sql.BUILD_FROM} WHERE {{ref}}
"""
_LOCK_BUILD = _READ_BUILD + " FOR UPDATE OF b"
# Compare-and-set attempts of a write without an Idempotency-Key before it takes the locking path.
UNLOCKED_ATTEMPTS = 2

_INSERT_BUILD = """
INSERT INTO builds (id, build_id, platform_id, os_version_id, image_type_id, state_code, status,
                    attempt, labels, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, 0, 'running', 1, $6::jsonb, clock_timestamp(), clock_timestamp())
ON CONFLICT (build_id) DO NOTHING
RETURNING created_at
"""

_DIALECT = sql.PostgresDialect()
# The type of a build's first event (what a repeated create answers with).
_FIRST = sql.types_in(types_where(lambda rule: rule.creates_build))


@dataclass(frozen=True, slots=True)
class Appended:
    """An event appended in the open transaction; its response is built once the transaction is done."""

    build: Build
    draft: plan.Draft
    actor: str
    seq: int
    recorded_at: datetime
    duration_ms: int | None

    def result(self) -> WriteResult:
        written = plan.result(
            self.build,
            self.draft,
            actor=self.actor,
            seq=self.seq,
            recorded_at=self.recorded_at,
            duration_ms=self.duration_ms,
        )
        return WriteResult.of(written, created=EVENT_RULES[self.draft.type].creates_build)


def append_args(
    draft: plan.Draft,
    actor: str,
    *,
    build_uuid: uuid.UUID,
    platform: str,
    os_version: str,
    image_type: str,
    lookup_ids: Sequence[int],
    old_status: str | None,
    previous_at: datetime | None,
    audit: AuditEntry | None,
) -> list[Any]:
    """``APPEND_EVENT``'s parameters $1-$27 (``APPEND_EVENT_IF_CURRENT`` adds the expected seq as $28):
    the build, its platform, OS and image-type ids (``lookup_ids``), the event, and the audit row of the
    write (none: the caller writes its own)."""
    return [
        FEED_LOCK,
        build_uuid,
        draft.type,
        draft.attempt,
        draft.state_code,
        draft.from_state_code,
        draft.status,
        draft.message,
        draft.failure,
        draft.reason,
        actor,
        draft.provenance,
        previous_at,
        *lookup_ids,
        old_status,
        platform,
        os_version,
        image_type,
        *plan.state_tokens(draft),
        audit.action if audit else None,
        audit.target if audit else None,
        201 if EVENT_RULES[draft.type].creates_build else 200,
        audit.request_id if audit else None,
        audit.source if audit else None,
    ]


class PostgresStore(SqlStore):
    executor: PostgresExecutor

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 4,
        timeout: float = 5.0,
    ) -> None:
        executor = PostgresExecutor(dsn, min_size=min_size, max_size=max_size, timeout=timeout)
        super().__init__(executor, NotifiedKeyChanges(executor))
        self._lookup_ids: dict[tuple[str, str], int] = {}
        # The compare-and-set appends of this process, committed in groups (the module's docstring).
        self._appends = StatementGroup(self.executor, APPEND_EVENT_IF_CURRENT)
        self._creates = StatementGroup(self.executor, CREATE_BUILD)
        # The state changes and resets that need no read first (``_change_in_one``): by id, by build_id.
        self._states = (
            StatementGroup(self.executor, STATE_BY_ID),
            StatementGroup(self.executor, STATE_BY_NAME),
        )
        self._resets = (
            StatementGroup(self.executor, RESET_BY_ID),
            StatementGroup(self.executor, RESET_BY_NAME),
        )

    @property
    def pool(self) -> asyncpg.Pool:
        return self.executor.pool

    def pool_stats(self) -> PoolStats | None:
        return self.executor.pool_stats()

    def can_listen(self) -> bool:
        return True

    async def listen(self, channel: str, heard: Callable[[str], None]) -> None:
        await self.executor.listen(channel, heard)

    async def _with_conn(self, work: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Any:
        return await self.executor.run(work)

    async def schema_status(self) -> SchemaStatus:
        async def work(conn: asyncpg.Connection) -> SchemaStatus:
            return await PostgresMigrator.status_on(conn)

        result: SchemaStatus = await self._with_conn(work)
        return result

    # ------------------------------------------------------------------ writes

    async def _write(
        self,
        ctx: WriteContext,
        action_name: str,
        target: str,
        action: Callable[[asyncpg.Connection, AuditEntry], Awaitable[WriteResult | Appended]],
    ) -> WriteResult:
        """Run one write in one transaction, with its idempotency record and its audit row.

        ``action`` gets the audit entry of a successful write; an append writes it in its own statement.
        """
        idem = ctx.idem

        async def work(conn: asyncpg.Connection) -> WriteResult | Appended:
            async with conn.transaction():
                replayed = await self._claim(conn, idem) if idem is not None else None
                if replayed is not None:
                    entry = AuditEntry.of(ctx, action_name, target, replayed.status_code, "replayed")
                    await execute(conn, audit_row(entry))
                    return replayed
                outcome = await action(conn, AuditEntry.of(ctx, action_name, target, 200, "allowed"))
                if isinstance(outcome, Appended):
                    if idem is None:
                        return outcome  # the body is built after COMMIT, with the feed lock released
                    outcome = outcome.result()
                else:  # nothing appended (the current state again): the audit row is still to write
                    kind = "replayed" if outcome.replayed else "allowed"
                    entry = AuditEntry.of(ctx, action_name, target, outcome.status_code, kind)
                    await execute(conn, audit_row(entry))
                if idem is not None:
                    await conn.execute(
                        "UPDATE idempotency_keys SET status_code = $3, body = $4 "
                        "WHERE actor = $1 AND key = $2",
                        idem.actor,
                        idem.key,
                        outcome.status_code,
                        outcome.body.decode(),
                    )
                return outcome

        try:
            done: WriteResult | Appended = await self._with_conn(work)
        except Problem as refused:
            await self.audit.refused(ctx, action_name, target, refused)
            raise
        return done.result() if isinstance(done, Appended) else done

    async def _claim(self, conn: asyncpg.Connection, idem: Idempotency) -> WriteResult | None:
        """Take the key for this transaction, or return the response first recorded under it.

        A concurrent request with the same key waits on the row until the first one commits (then replays
        its answer) or rolls back (then proceeds as the first).
        """
        claimed = await conn.fetchval(
            "INSERT INTO idempotency_keys (actor, key, fingerprint) VALUES ($1, $2, $3) "
            "ON CONFLICT DO NOTHING RETURNING 1",
            idem.actor,
            idem.key,
            idem.fingerprint,
        )
        if claimed:
            return None
        row = await conn.fetchrow(
            "SELECT fingerprint, status_code, body FROM idempotency_keys WHERE actor = $1 AND key = $2",
            idem.actor,
            idem.key,
        )
        return replay(idem, row["fingerprint"], row["status_code"], row["body"])

    async def _lookup_id(self, conn: asyncpg.Connection, column: str, name: str) -> int:
        cached = self._lookup_ids.get((column, name))
        if cached is not None:
            return cached
        table = sql.LOOKUP_TABLES[column]
        ident = await conn.fetchval(
            f"INSERT INTO {table} (name) VALUES ($1) ON CONFLICT (name) DO NOTHING RETURNING id",
            name,
        )
        if ident is not None:
            # Our own insert: it may still roll back (a 409, a lost connection), so it is not cached;
            # the next lookup finds the committed row below.
            return int(ident)
        ident = await conn.fetchval(f"SELECT id FROM {table} WHERE name = $1", name)
        self._lookup_ids[(column, name)] = ident
        return int(ident)

    async def _append_event(
        self,
        conn: asyncpg.Connection,
        row: asyncpg.Record,
        build: Build,
        draft: plan.Draft,
        actor: str,
        *,
        old_status: str | None,
        previous_at: datetime | None,
        audit: AuditEntry | None = None,
    ) -> Appended:
        """Append ``draft``'s event (and ``audit``'s row, with the status a new event answers with) in
        the open transaction, which holds the build's row lock."""
        args = self._append_args(row, build, draft, actor, old_status, previous_at, audit)
        appended = await conn.fetchrow(APPEND_EVENT, *args)
        return Appended(
            build, draft, actor, appended["seq"], appended["recorded_at"], appended["duration_ms"]
        )

    @staticmethod
    def _append_args(  # noqa: PLR0917 - the parts of one append
        row: asyncpg.Record,
        build: Build,
        draft: plan.Draft,
        actor: str,
        old_status: str | None,
        previous_at: datetime | None,
        audit: AuditEntry | None,
    ) -> list[Any]:
        return append_args(
            draft,
            actor,
            build_uuid=build.id,
            platform=build.platform,
            os_version=build.os_version,
            image_type=build.image_type,
            lookup_ids=(row["platform_id"], row["os_version_id"], row["image_type_id"]),
            old_status=old_status,
            previous_at=previous_at,
            audit=audit,
        )

    async def create_build(self, request: BuildCreate, ctx: WriteContext) -> WriteResult:
        prepared = plan.prepare(request)
        if ctx.idem is None:
            created = await self._create_in_one(request, prepared, ctx)
            if created is not None:
                return created

        async def action(conn: asyncpg.Connection, audit: AuditEntry) -> WriteResult | Appended:
            ids = [await self._lookup_id(conn, col, getattr(request, col)) for col in sql.LOOKUP_TABLES]
            # The build_id's lock before its row, as CREATE_BUILD tries it (the lock order).
            await conn.execute(
                "SELECT pg_advisory_xact_lock($1::int, hashtext($2))", BUILD_ID_LOCK, request.build_id
            )
            inserted = await conn.fetchval(
                _INSERT_BUILD, uuid.uuid4(), request.build_id, *ids, request.labels
            )
            # The build with this very build_id, never one its text may spell (an id): a create
            # never appends to, or answers with, another build.
            row = await self._lock_build(conn, request.build_id, by_build_id=True)
            build = sql.decode_build(_DIALECT, row)
            if inserted is None:
                plan.same_build(build, request)
                created_event = await self._first_event(conn, build.id)
                return WriteResult.of(plan.with_event(build, created_event))
            return await self._append_event(
                conn,
                row,
                build,
                plan.created(prepared),
                ctx.actor,
                old_status=None,
                previous_at=None,
                audit=audit,
            )

        return await self._write(ctx, EVENT_RULES[EventType.CREATED].action, request.build_id, action)

    async def _create_in_one(
        self, request: BuildCreate, prepared: plan.Prepared, ctx: WriteContext
    ) -> WriteResult | None:
        """A new build and its first event in one statement (``CREATE_BUILD``), sent with this process's
        other creates of the moment: one round trip, one COMMIT. None (nothing written) when the lookup
        ids are not known yet or a build has this build_id: the caller takes the transaction instead."""
        ids = [self._lookup_ids.get((column, getattr(request, column))) for column in sql.LOOKUP_TABLES]
        known = [ident for ident in ids if ident is not None]
        if len(known) != len(ids):
            return None
        action_name = EVENT_RULES[EventType.CREATED].action
        draft = plan.created(prepared)
        build_uuid = uuid.uuid4()
        args = append_args(
            draft,
            ctx.actor,
            build_uuid=build_uuid,
            platform=request.platform,
            os_version=request.os_version,
            image_type=request.image_type,
            lookup_ids=known,
            old_status=None,
            previous_at=None,
            audit=AuditEntry.of(ctx, action_name, request.build_id, 201, "allowed"),
        )
        try:
            row = await self._creates.fetchrow(*args, request.build_id, request.labels, BUILD_ID_LOCK)
        except asyncpg.UniqueViolationError:
            return None  # made by a concurrent create a moment ago
        except Problem as refused:
            await self.audit.refused(ctx, action_name, request.build_id, refused)
            raise
        if row is None:
            return None
        build = Build(
            id=build_uuid,
            build_id=request.build_id,
            platform=request.platform,
            os_version=request.os_version,
            image_type=request.image_type,
            state_code=draft.state_code,
            status=draft.status,
            attempt=draft.attempt,
            labels=request.labels,
            message=None,
            failure=None,
            created_at=row["recorded_at"],
            updated_at=row["recorded_at"],
            last_event_seq=row["seq"],
        )
        return Appended(build, draft, ctx.actor, row["seq"], row["recorded_at"], row["duration_ms"]).result()

    async def record_state(self, ref: str, request: StateChange, ctx: WriteContext) -> WriteResult:
        prepared = plan.prepare(request)
        if ctx.idem is None and prepared.state_code is not None:
            done = await self._in_one(
                self._states, ref, ctx, EventType.STATE, prepared, prepared.state_code,
                lambda b: plan.state(b, prepared),
            )  # fmt: skip
            if done is not None:
                return done
        action_name = EVENT_RULES[EventType.STATE].action
        return await self._transition(ref, ctx, action_name, lambda b: plan.state(b, prepared))

    async def reset_build(self, ref: str, request: ResetRequest, ctx: WriteContext) -> WriteResult:
        prepared = plan.prepare(request)
        if ctx.idem is None and prepared.reason == prepared.message:
            done = await self._in_one(
                self._resets, ref, ctx, EventType.RESET, prepared, 0, lambda b: plan.reset(b, prepared)
            )
            if done is not None:
                return done
        action_name = EVENT_RULES[EventType.RESET].action
        return await self._transition(ref, ctx, action_name, lambda b: plan.reset(b, prepared))

    async def _in_one(  # noqa: PLR0917 - the parts of one change
        self,
        groups: tuple[StatementGroup, StatementGroup],
        ref: str,
        ctx: WriteContext,
        event_type: EventType,
        prepared: plan.Prepared,
        code: int,
        decide: Callable[[Build], plan.Draft | None],
    ) -> WriteResult | None:
        """A change that the rules record, in one statement (``_change_in_one``) sent with this
        process's other such changes of the moment: one round trip, one COMMIT, the rule checked in the
        statement. None (nothing written) when the rule records nothing (a replay, a 409), there is no
        such build, or its row is held: the caller then takes the way that reads the build and judges
        the change (``_transition``), which answers each of those as before. ``decide`` makes the answer
        from the build as the statement found it: the same rule, so the same event."""
        action_name = EVENT_RULES[event_type].action
        build_uuid = build_uuid_of(ref)
        status = status_at(code)
        audit = AuditEntry.of(ctx, action_name, ref, 200, "allowed")
        try:
            row = await groups[build_uuid is None].fetchrow(
                FEED_LOCK,
                ref if build_uuid is None else build_uuid,
                code,
                status,
                prepared.message,
                ctx.actor,
                prepared.provenance,
                *plan.tokens(event_type, code),
                audit.action,
                audit.target,
                audit.request_id,
                audit.source,
            )
        except Problem as refused:
            await self.audit.refused(ctx, action_name, ref, refused)
            raise
        if row is None:
            return None
        build = sql.decode_build(_DIALECT, row)  # as it was: what the rule judged the change against
        draft = decide(build)
        if draft is None or (draft.state_code, draft.status) != (code, status):  # pragma: no cover
            raise RuntimeError(f"the statement changed build {ref!r} where the rules would not")
        return Appended(
            build, draft, ctx.actor, row["event_seq"], row["recorded_at"], row["duration_ms"]
        ).result()

    async def _transition(
        self,
        ref: str,
        ctx: WriteContext,
        action_name: str,
        decide: Callable[[Build], plan.Draft | None],
    ) -> WriteResult:
        if ctx.idem is None:
            for _ in range(UNLOCKED_ATTEMPTS):
                done = await self._transition_unlocked(ref, ctx, action_name, decide)
                if done is not None:
                    return done

        async def action(conn: asyncpg.Connection, audit: AuditEntry) -> WriteResult | Appended:
            row = await self._lock_build(conn, ref)
            build = sql.decode_build(_DIALECT, row)
            draft = decide(build)
            if draft is None:
                current = await self._event(conn, build.last_event_seq)
                return WriteResult.of(plan.with_event(build, current))
            return await self._append_event(
                conn, row, build, draft, ctx.actor,
                old_status=build.status, previous_at=build.updated_at, audit=audit,
            )  # fmt: skip

        return await self._write(ctx, action_name, ref, action)

    async def _transition_unlocked(
        self,
        ref: str,
        ctx: WriteContext,
        action_name: str,
        decide: Callable[[Build], plan.Draft | None],
    ) -> WriteResult | None:
        """A change without an ``Idempotency-Key`` in two round trips instead of four: read the build,
        check the rules, then append in one statement on condition that the build's last event is still
        the one read (compare-and-set), sent with the other such appends of this process waiting at the
        same moment (``StatementGroup``): one implicit transaction, one COMMIT for the group. The feed
        lock is then held for the group's statements and its commit only, never across a round trip to
        this process, and one fsync serves the whole group. A change that is no change (the current
        state again) is answered with the build's current event, as the locking path does. None when
        another write got there first: the caller then takes the locking path, which judges the change
        again against the build as it is now."""
        audit = AuditEntry.of(ctx, action_name, ref, 200, "allowed")

        async def read(conn: asyncpg.Connection) -> WriteResult | tuple[asyncpg.Record, Build, plan.Draft]:
            row = await self._lock_build(conn, ref, lock=False)
            build = sql.decode_build(_DIALECT, row)
            draft = decide(build)
            if draft is None:  # event rows never change: the build's last one is still its last one read
                current = await self._event(conn, build.last_event_seq)
                await execute(conn, audit_row(AuditEntry.of(ctx, action_name, ref, 200, "replayed")))
                return WriteResult.of(plan.with_event(build, current))
            return row, build, draft

        try:
            seen: WriteResult | tuple[asyncpg.Record, Build, plan.Draft] = await self._with_conn(read)
            if isinstance(seen, WriteResult):
                return seen
            row, build, draft = seen
            appended = await self._append_if_current(
                row, build, draft, ctx.actor,
                old_status=build.status, previous_at=build.updated_at, audit=audit,
            )  # fmt: skip
        except Problem as refused:
            await self.audit.refused(ctx, action_name, ref, refused)
            raise
        return None if appended is None else appended.result()

    async def _append_if_current(
        self,
        row: asyncpg.Record,
        build: Build,
        draft: plan.Draft,
        actor: str,
        *,
        old_status: str | None,
        previous_at: datetime | None,
        audit: AuditEntry | None,
    ) -> Appended | None:
        """Append ``draft``'s event (and ``audit``'s row) in this process's next group of appends, only
        if the build's last event is still ``build.last_event_seq`` and no transaction holds its row
        (else None: nothing written, no seq drawn)."""
        args = self._append_args(row, build, draft, actor, old_status, previous_at, audit)
        appended = await self._appends.fetchrow(*args, build.last_event_seq)
        if appended is None:
            return None
        return Appended(
            build, draft, actor, appended["seq"], appended["recorded_at"], appended["duration_ms"]
        )

    async def _lock_build(
        self, conn: asyncpg.Connection, ref: str, *, lock: bool = True, by_build_id: bool = False
    ) -> asyncpg.Record:
        """The row of the build ``ref`` names (``by_build_id``: the build with exactly that ``build_id``,
        as a create looks for it) with its lookup ids, locked for this transaction (``lock=False``: just
        read)."""
        p = sql.Params(_DIALECT)
        query = _LOCK_BUILD if lock else _READ_BUILD
        condition = sql.build_id_condition(p, ref) if by_build_id else sql.ref_condition(p, ref)
        row = await conn.fetchrow(query.format(ref=condition), *p.values)
        if row is None:
            raise NotFound(f"no build {ref!r}", slug="build-not-found")
        return row

    async def _event(self, conn: asyncpg.Connection, seq: int) -> Event:
        rows = await execute(conn, event_statement(_DIALECT, seq))
        if not rows:
            raise NotFound(f"no event {seq}", slug="event-not-found")
        return sql.decode_event(_DIALECT, rows[0])

    async def _first_event(self, conn: asyncpg.Connection, build_uuid: uuid.UUID) -> Event:
        seq = await conn.fetchval(
            f"SELECT min(seq) FROM events WHERE build_uuid = $1 AND type IN {_FIRST}", build_uuid
        )
        return await self._event(conn, seq)
