"""SQL shared by both stores: the read queries, their filters, and row decoding.

Each store supplies a ``Dialect``: how a bound parameter is written (``?`` or ``$n``) and how JSON, times and
UUIDs come back from its driver. Values are always bound parameters; only fixed fragments are joined.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from buildstate.domain import EVENT_RULES, MAX_STATE, SUCCEEDED, EventType, build_uuid_of, types_where
from buildstate.models import (
    Artifact,
    Build,
    BuildDetail,
    BuildIdent,
    CellRevocation,
    Event,
    EventBuild,
    Failure,
    FailureGroup,
    MatrixCell,
    StepDuration,
    Summary,
    TransitionDuration,
)
from buildstate.store.types import BuildCursor, BuildFilter, EventFilter

Row = Mapping[str, Any]
# PostgreSQL's transaction-level advisory lock that every event append takes before it draws its seq and
# holds until COMMIT, so that seq order is commit order (store/postgres.py says why): "build" in ASCII.
FEED_LOCK = 0x6275696C64


class Dialect:
    """Placeholder style and value conversions of one driver."""

    # Which SQL variant a repository picks (``queries.Queries``), and the store's name in /ready.
    name: str = ""
    numbered: bool = False

    def time_param(self, value: datetime) -> Any:
        return value

    def uuid_param(self, value: UUID) -> Any:
        return value

    def json_value(self, value: Any) -> Any:
        return value

    def time_value(self, value: Any) -> datetime:
        return value  # type: ignore[no-any-return]  # drivers with native timestamps

    def uuid_value(self, value: Any) -> UUID:
        return value if isinstance(value, UUID) else UUID(str(value))


class SqliteDialect(Dialect):
    name = "sqlite"
    numbered = False

    def time_param(self, value: datetime) -> str:
        return format_time(value)

    def uuid_param(self, value: UUID) -> str:
        return str(value)

    def json_value(self, value: Any) -> Any:
        return None if value is None else json.loads(value)

    def time_value(self, value: Any) -> datetime:
        return datetime.fromisoformat(value)


class PostgresDialect(Dialect):
    name = "postgresql"
    numbered = True


def format_time(value: datetime) -> str:
    """Fixed-width ISO-8601 in UTC, so that SQLite's text comparison orders times correctly: converted to
    UTC first (a time with another offset compared as if it were UTC before), and with four year digits
    (``strftime("%Y")`` writes the year 1 as ``1``)."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


class Params:
    """Collects bound values while a query is assembled."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.values: list[Any] = []

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}" if self.dialect.numbered else "?"

    def time(self, value: datetime) -> str:
        return self(self.dialect.time_param(value))


BUILD_COLUMNS = """
    b.id, b.build_id, p.name AS platform, o.name AS os_version, t.name AS image_type,
    b.state_code, b.status, b.attempt, b.labels, b.message, b.failure,
    b.created_at, b.updated_at, b.last_event_seq
"""
BUILD_FROM = """
    FROM builds b
    JOIN platforms p ON p.id = b.platform_id
    JOIN os_versions o ON o.id = b.os_version_id
    JOIN image_types t ON t.id = b.image_type_id
"""
EVENT_COLUMNS = """
    e.seq, e.type, e.recorded_at, e.attempt, e.state_code, e.from_state_code, e.status,
    e.message, e.failure, e.reason, e.actor, e.provenance, e.duration_ms, e.detail,
    b.id AS b_id, b.build_id AS b_build_id, p.name AS b_platform, o.name AS b_os_version,
    t.name AS b_image_type, b.labels AS b_labels, b.created_at AS b_created_at
"""
EVENT_FROM = """
    FROM events e
    JOIN builds b ON b.id = e.build_uuid
    JOIN platforms p ON p.id = e.platform_id
    JOIN os_versions o ON o.id = e.os_version_id
    JOIN image_types t ON t.id = e.image_type_id
"""
LOOKUP_TABLES = {"platform": "platforms", "os_version": "os_versions", "image_type": "image_types"}


def ref_condition(p: Params, ref: str, alias: str = "b") -> str:
    """The one build a reference names: by its id if the reference reads as a UUID, else by its
    ``build_id`` (``domain.build_uuid_of``); never either of two builds."""
    build_uuid = build_uuid_of(ref)
    if build_uuid is None:
        return build_id_condition(p, ref, alias)
    return f"{alias}.id = {p(p.dialect.uuid_param(build_uuid))}"


def build_id_condition(p: Params, build_id: str, alias: str = "b") -> str:
    """The build with exactly this ``build_id``: what a create looks for, whatever the text spells."""
    return f"{alias}.build_id = {p(build_id)}"


def locked_build_query(p: Params, ref: str) -> str:
    """The build ``ref`` names with its lookup ids, locked for the transaction on PostgreSQL (SQLite's
    write transaction holds the database's write lock already)."""
    lock = " FOR UPDATE OF b" if p.dialect.numbered else ""
    return (
        f"SELECT {BUILD_COLUMNS}, b.platform_id, b.os_version_id, b.image_type_id "
        f"{BUILD_FROM} WHERE {ref_condition(p, ref)}{lock}"
    )


def _lookup_conditions(p: Params, alias: str, where: BuildFilter | EventFilter) -> list[str]:
    conditions = []
    for attr, table in LOOKUP_TABLES.items():
        value = getattr(where, attr)
        if value is not None:
            conditions.append(f"{alias}.{attr}_id = (SELECT id FROM {table} WHERE name = {p(value)})")
    return conditions


def build_list_query(p: Params, where: BuildFilter, limit: int, cursor: BuildCursor | None) -> str:
    conditions = _lookup_conditions(p, "b", where)
    if where.status is not None:
        conditions.append(f"b.status = {p(where.status)}")
    if where.min_state is not None:
        conditions.append(f"b.state_code >= {p(where.min_state)}")
    if where.max_state is not None:
        conditions.append(f"b.state_code <= {p(where.max_state)}")
    if where.updated_since is not None:
        conditions.append(f"b.updated_at >= {p.time(where.updated_since)}")
    if cursor is not None:
        # Each placeholder binds once: "?" cannot be reused the way "$n" can.
        before, same = p.time(cursor.updated_at), p.time(cursor.updated_at)
        ident = p(p.dialect.uuid_param(cursor.id))
        conditions.append(f"(b.updated_at < {before} OR (b.updated_at = {same} AND b.id < {ident}))")
    where_sql = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    return (
        f"SELECT {BUILD_COLUMNS} {BUILD_FROM} {where_sql} "
        f"ORDER BY b.updated_at DESC, b.id DESC LIMIT {p(limit)}"
    )


def types_in(types: Sequence[EventType]) -> str:
    """``('created', 'state')``: event types as an SQL list (fixed names from the enum, never input)."""
    return "(" + ", ".join(f"'{t.value}'" for t in types) + ")"


# What a ``states`` token matches (``domain.EVENT_RULES``): a type's word, succeeded, or a state code that
# the types without a word are recorded at (never an event that changes no state, such as ``artifact``).
_TYPE_OF_WORD = {rule.state_word: t for t, rule in EVENT_RULES.items() if rule.state_word is not None}
_BY_CODE = types_in(types_where(lambda rule: rule.state_word is None and rule.changes_state))


def _state_condition(p: Params, state: int | str) -> str:
    if state in _TYPE_OF_WORD:
        return f"e.type = '{_TYPE_OF_WORD[str(state)].value}'"
    if state == SUCCEEDED:
        return f"(e.type IN {_BY_CODE} AND e.state_code = {MAX_STATE})"
    return f"(e.type IN {_BY_CODE} AND e.state_code = {p(int(state))})"


def event_list_query(
    p: Params,
    where: EventFilter,
    *,
    after: int,
    before: int | None,
    limit: int,
    newest_first: bool,
) -> str:
    conditions = _lookup_conditions(p, "e", where)
    if after:
        conditions.append(f"e.seq > {p(after)}")
    if before is not None:
        conditions.append(f"e.seq < {p(before)}")
    if where.build_id is not None:
        conditions.append(
            f"e.build_uuid = (SELECT b2.id FROM builds b2 WHERE {ref_condition(p, where.build_id, 'b2')})"
        )
    if where.status is not None:
        conditions.append(f"e.status = {p(where.status)}")
    if where.types:
        conditions.append(f"e.type IN ({', '.join(p(t) for t in where.types)})")
    if where.states:
        conditions.append(f"({' OR '.join(_state_condition(p, s) for s in where.states)})")
    if where.min_state is not None:
        conditions.append(f"e.state_code >= {p(where.min_state)}")
    if where.max_state is not None:
        conditions.append(f"e.state_code <= {p(where.max_state)}")
    if where.updated_since is not None:
        conditions.append(f"e.recorded_at >= {p.time(where.updated_since)}")
    where_sql = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    order = "DESC" if newest_first else "ASC"
    return f"SELECT {EVENT_COLUMNS} {EVENT_FROM} {where_sql} ORDER BY e.seq {order} LIMIT {p(limit)}"


def history_query(p: Params, build_uuid: Any) -> str:
    return f"SELECT {EVENT_COLUMNS} {EVENT_FROM} WHERE e.build_uuid = {p(build_uuid)} ORDER BY e.seq"


def event_query(p: Params, seq: int) -> str:
    return f"SELECT {EVENT_COLUMNS} {EVENT_FROM} WHERE e.seq = {p(seq)}"


def build_query(p: Params, ref: str) -> str:
    return f"SELECT {BUILD_COLUMNS} {BUILD_FROM} WHERE {ref_condition(p, ref)}"


# A build's artifacts as one column of its row (PostgreSQL): an array of anonymous records in the order
# of ``artifacts.sql``'s ``of_build``, their fields ``ARTIFACT_FIELDS`` (labels as text: asyncpg's jsonb
# codec is not applied inside a record).
ARTIFACT_FIELDS = (
    "platform", "region", "kind", "external_id", "labels", "attempt", "event_seq", "recorded_at", "actor",
)  # fmt: skip
_ARTIFACT_RECORD = ", ".join(
    f"a.{name}::text" if name == "labels" else f"a.{name}" for name in ARTIFACT_FIELDS
)


def build_detail_query(p: Params, ref: str) -> str:
    """The build ``ref`` names with its artifacts (``decode_detail``): one statement, so one state of the
    database, where the build and then its artifacts would take a snapshot transaction (PostgreSQL)."""
    artifacts = f"ARRAY(SELECT ROW({_ARTIFACT_RECORD}) FROM artifacts a WHERE a.build = b.id ORDER BY a.id)"
    return f"SELECT {BUILD_COLUMNS}, {artifacts} AS artifacts {BUILD_FROM} WHERE {ref_condition(p, ref)}"


MATRIX_QUERY = f"""
    SELECT {BUILD_COLUMNS} {BUILD_FROM}
    JOIN combos c ON b.id = (
        SELECT b2.id FROM builds b2
        WHERE b2.platform_id = c.platform_id AND b2.os_version_id = c.os_version_id
          AND b2.image_type_id = c.image_type_id
        ORDER BY b2.created_at DESC, b2.id DESC LIMIT 1
    )
    ORDER BY p.name, o.name, t.name
"""
# The latest build of each combination (as MATRIX_QUERY finds it), for what the matrix shows beside it.
_MATRIX_LATEST = """
    WITH latest AS (
        SELECT (
            SELECT b2.id FROM builds b2
            WHERE b2.platform_id = c.platform_id AND b2.os_version_id = c.os_version_id
              AND b2.image_type_id = c.image_type_id
            ORDER BY b2.created_at DESC, b2.id DESC LIMIT 1
        ) AS build
        FROM combos c
    )
"""
# How many artifacts those builds hold per region ('' for region-less ones), through the unique index's
# first column.
MATRIX_ARTIFACTS_QUERY = f"""{_MATRIX_LATEST}
    SELECT a.build, a.region, COUNT(*) AS n
    FROM latest l JOIN artifacts a ON a.build = l.build
    GROUP BY a.build, a.region
"""
# The revocations in force of those builds, own ones first (revocations_live).
MATRIX_REVOCATIONS_QUERY = f"""{_MATRIX_LATEST}
    SELECT r.build_uuid AS build, r.reason, r.cause_id, r.revoked_by, rb.build_id AS revoked_by_build_id
    FROM latest l JOIN revocations r ON r.build_uuid = l.build
    JOIN builds rb ON rb.id = r.revoked_by
    WHERE r.fired_at IS NOT NULL AND r.lifted_at IS NULL
    ORDER BY r.build_uuid, CASE WHEN r.cause_id IS NULL THEN 0 ELSE 1 END, r.id
"""
RECENT_FAILURES_LIMIT = 1000
STEP_SAMPLES = 500


def failure_groups_query(p: Params, since: datetime) -> str:
    """Failures of the window grouped by component and code, over at most the newest 1000."""
    return f"""
        SELECT component, error_code, COUNT(*) AS n, MAX(recorded_at) AS last_seen,
               MAX(seq) AS last_seq
        FROM (SELECT * FROM failures WHERE recorded_at >= {p.time(since)}
              ORDER BY seq DESC LIMIT {p(RECENT_FAILURES_LIMIT)}) recent
        GROUP BY component, error_code
        ORDER BY n DESC, last_seq DESC
        LIMIT 50
    """


def decode_failure(dialect: Dialect, value: Any) -> Failure | None:
    data = dialect.json_value(value)
    return None if data is None else Failure(**data)


def build_fields(dialect: Dialect, row: Row) -> dict[str, Any]:
    return {
        "id": dialect.uuid_value(row["id"]),
        "build_id": row["build_id"],
        "platform": row["platform"],
        "os_version": row["os_version"],
        "image_type": row["image_type"],
        "state_code": row["state_code"],
        "status": row["status"],
        "attempt": row["attempt"],
        "labels": dialect.json_value(row["labels"]),
        "message": row["message"],
        "failure": decode_failure(dialect, row["failure"]),
        "created_at": dialect.time_value(row["created_at"]),
        "updated_at": dialect.time_value(row["updated_at"]),
        "last_event_seq": row["last_event_seq"],
    }


def decode_build(dialect: Dialect, row: Row) -> Build:
    return Build(**build_fields(dialect, row))


def decode_detail(dialect: Dialect, row: Row) -> BuildDetail:
    """A row of ``build_detail_query``: the build with its artifacts, validated once."""
    artifacts = []
    for item in row["artifacts"]:
        fields = dict(zip(ARTIFACT_FIELDS, item, strict=True))
        fields["labels"] = json.loads(fields["labels"])
        artifacts.append(Artifact(**fields))
    return BuildDetail(**build_fields(dialect, row), artifacts=artifacts)


def decode_event(dialect: Dialect, row: Row) -> Event:
    return Event(
        seq=row["seq"],
        type=row["type"],
        recorded_at=dialect.time_value(row["recorded_at"]),
        attempt=row["attempt"],
        state_code=row["state_code"],
        from_state_code=row["from_state_code"],
        status=row["status"],
        message=row["message"],
        failure=decode_failure(dialect, row["failure"]),
        reason=row["reason"],
        actor=row["actor"],
        provenance=dialect.json_value(row["provenance"]),
        duration_ms=row["duration_ms"],
        detail=dialect.json_value(row["detail"]),
        build=EventBuild(
            id=dialect.uuid_value(row["b_id"]),
            build_id=row["b_build_id"],
            platform=row["b_platform"],
            os_version=row["b_os_version"],
            image_type=row["b_image_type"],
            labels=dialect.json_value(row["b_labels"]),
            created_at=dialect.time_value(row["b_created_at"]),
        ),
    )


def decode_artifact(dialect: Dialect, row: Row) -> Artifact:
    return Artifact(
        platform=row["platform"],
        region=row["region"],
        kind=row["kind"],
        external_id=row["external_id"],
        labels=dialect.json_value(row["labels"]),
        attempt=row["attempt"],
        event_seq=row["event_seq"],
        recorded_at=dialect.time_value(row["recorded_at"]),
        actor=row["actor"],
    )


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[middle])
    return (ordered[middle - 1] + ordered[middle]) / 2


def build_summary(  # noqa: PLR0917 - one row set per part of the summary
    dialect: Dialect,
    counts: Sequence[Row],
    matrix: Sequence[Row],
    regions: Sequence[Row],
    revocations: Sequence[Row],
    groups: Sequence[Row],
    steps: Sequence[Row],
    window_hours: int,
) -> Summary:
    by_status = dict.fromkeys(("running", "failed", "succeeded"), 0)
    by_status.update({row["status"]: int(row["n"]) for row in counts})
    samples: dict[int, list[int]] = {}
    pairs: dict[tuple[int, int], list[int]] = {}
    for row in steps:
        samples.setdefault(row["state_code"], []).append(row["duration_ms"])
        pairs.setdefault((row["state_code"], row["to_state_code"]), []).append(row["duration_ms"])
    by_region: dict[str, dict[str, int]] = {}
    for row in regions:
        by_region.setdefault(str(row["build"]), {})[row["region"]] = int(row["n"])
    revoked: dict[str, CellRevocation] = {}
    for row in revocations:
        revoked.setdefault(
            str(row["build"]),
            CellRevocation(
                reason=row["reason"],
                inherited=row["cause_id"] is not None,
                revoked_by=BuildIdent(
                    id=dialect.uuid_value(row["revoked_by"]), build_id=row["revoked_by_build_id"]
                ),
            ),
        )
    cells = []
    for row in matrix:
        build = decode_build(dialect, row)
        cells.append(
            MatrixCell(
                platform=build.platform,
                os_version=build.os_version,
                image_type=build.image_type,
                build=build,
                artifacts_by_region=by_region.get(str(build.id), {}),
                revocation=revoked.get(str(build.id)),
            )
        )
    return Summary(
        counts=by_status,
        total=sum(by_status.values()),
        matrix=cells,
        failures=[
            FailureGroup(
                component=row["component"],
                error_code=row["error_code"],
                count=row["n"],
                last_seen=dialect.time_value(row["last_seen"]),
                last_seq=row["last_seq"],
            )
            for row in groups
        ],
        step_durations=[
            StepDuration(state_code=code, median_ms=median(values), samples=len(values))
            for code, values in sorted(samples.items())
        ],
        transition_durations=[
            TransitionDuration(
                from_state_code=start, state_code=end, median_ms=median(values), samples=len(values)
            )
            for (start, end), values in sorted(pairs.items())
        ],
        window_hours=window_hours,
        generated_at=datetime.now(UTC),
    )
