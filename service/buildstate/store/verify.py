"""``buildstate verify``: the tables kept up to date on every write, checked against what they are kept from.

The event log is the truth: events are only ever appended, each in the transaction that changes its build.
Everything else that a write maintains can drift if a write path is wrong, and a drift is silent (the
dashboard's counts, the failure groups, a build's state). ``verify`` recomputes each from the truth:

- ``status_counts``: the number of builds in each status;
- ``combos``: one row per platform x OS version x image type that has a build, and no other;
- ``failures``: one row per failure event, with that event's build and failure;
- ``builds``: each build row equals its last event that changes state (state code, status, attempt,
  message, failure, ``updated_at``, ``last_event_seq``) and its events carry its platform, OS version and
  image type;
- ``history``: each build's first event is its one ``created`` event, and its events replayed through the
  rules (``domain``) reach exactly the states they recorded, one after another (an event that changes no
  state, ``artifact``, copies the state it was recorded in);
- ``artifacts``: each artifact row was recorded by an ``artifact`` event of its build and attempt, and each
  such event lists exactly the rows that carry its seq (the two are written together, never changed);
- ``ref_conflicts``: builds whose ``build_id`` reads as a UUID, recorded by migration 0005 (they are not
  drift: an operator has to look at them, see docs/operations.md).

Every check is a single statement (one snapshot on either store, so a live service's writes cannot make
a check disagree with itself), except the replay, which pages through events up to the last ``seq`` seen
at the start: events never change, so pages read at different moments still fit together. The SQL is the
same for both stores (``Params`` writes each store's placeholders); only the decoding differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from buildstate import domain
from buildstate.domain import EVENT_RULES, EventType, types_where
from buildstate.errors import Conflict
from buildstate.store.base import Store
from buildstate.store.sql import Params, types_in

# Findings listed per check at most (the count is always complete).
SHOWN = 50
REPLAY_PAGE = 5000


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    subject: str
    detail: str


@dataclass(slots=True)
class Report:
    store: str
    checked: dict[str, int] = field(default_factory=dict)
    drift: list[Finding] = field(default_factory=list)
    drift_count: int = 0
    conflicts: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.drift_count == 0 and not self.conflicts

    def add(self, finding: Finding) -> None:
        self.drift_count += 1
        if sum(1 for shown in self.drift if shown.check == finding.check) < SHOWN:
            self.drift.append(finding)

    def as_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "ok": self.ok,
            "checked": self.checked,
            "drift_count": self.drift_count,
            "drift": [asdict(f) for f in self.drift],
            "ref_conflicts": [asdict(f) for f in self.conflicts],
        }


def _name_columns(alias: str) -> str:
    return f"""
        COALESCE(p.name, '#' || CAST({alias}.platform_id AS TEXT)) AS platform,
        COALESCE(o.name, '#' || CAST({alias}.os_version_id AS TEXT)) AS os_version,
        COALESCE(t.name, '#' || CAST({alias}.image_type_id AS TEXT)) AS image_type
    """


def _names_join(alias: str) -> str:
    return f"""
        LEFT JOIN platforms p ON p.id = {alias}.platform_id
        LEFT JOIN os_versions o ON o.id = {alias}.os_version_id
        LEFT JOIN image_types t ON t.id = {alias}.image_type_id
    """


STATUS_COUNTS = """
    SELECT s.status, s.n AS recorded, (SELECT COUNT(*) FROM builds b WHERE b.status = s.status) AS actual
    FROM status_counts s ORDER BY s.status
"""
MISSING_COMBOS = f"""
    SELECT {_name_columns("b")} FROM (SELECT DISTINCT platform_id, os_version_id, image_type_id FROM builds) b
    {_names_join("b")}
    WHERE NOT EXISTS (SELECT 1 FROM combos c WHERE c.platform_id = b.platform_id
                      AND c.os_version_id = b.os_version_id AND c.image_type_id = b.image_type_id)
"""
EXTRA_COMBOS = f"""
    SELECT {_name_columns("c")} FROM combos c {_names_join("c")}
    WHERE NOT EXISTS (SELECT 1 FROM builds b WHERE b.platform_id = c.platform_id
                      AND b.os_version_id = c.os_version_id AND b.image_type_id = c.image_type_id)
"""
MISSING_FAILURES = """
    SELECT e.seq FROM events e
    WHERE e.type = 'failure' AND NOT EXISTS (SELECT 1 FROM failures f WHERE f.seq = e.seq) ORDER BY e.seq
"""
STRAY_FAILURES = """
    SELECT f.seq FROM failures f
    WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.seq = f.seq AND e.type = 'failure') ORDER BY f.seq
"""
_CHANGING = types_in(types_where(lambda rule: rule.changes_state))
BUILD_VS_LAST_EVENT = f"""
    SELECT b.id, b.build_id, b.state_code, b.status, b.attempt, b.last_event_seq,
           e.seq AS e_seq, e.state_code AS e_state_code, e.status AS e_status, e.attempt AS e_attempt
    FROM builds b
    LEFT JOIN events e ON e.seq = (
        SELECT MAX(e2.seq) FROM events e2 WHERE e2.build_uuid = b.id AND e2.type IN {_CHANGING}
    )
    WHERE e.seq IS NULL OR b.last_event_seq <> e.seq OR b.state_code <> e.state_code
       OR b.status <> e.status OR b.attempt <> e.attempt OR b.message IS DISTINCT FROM e.message
       OR b.failure IS DISTINCT FROM e.failure OR b.updated_at <> e.recorded_at
    ORDER BY b.created_at
"""
EVENTS_OF_OTHER_COMBO = """
    SELECT e.seq, b.build_id FROM events e JOIN builds b ON b.id = e.build_uuid
    WHERE e.platform_id <> b.platform_id OR e.os_version_id <> b.os_version_id
       OR e.image_type_id <> b.image_type_id
    ORDER BY e.seq
"""
CREATED_EVENTS = """
    SELECT b.id, b.build_id, h.created, h.first_seq, h.first_created_seq
    FROM builds b JOIN (
        SELECT build_uuid, SUM(CASE WHEN type = 'created' THEN 1 ELSE 0 END) AS created,
               MIN(seq) AS first_seq, MIN(CASE WHEN type = 'created' THEN seq END) AS first_created_seq
        FROM events GROUP BY build_uuid
    ) h ON h.build_uuid = b.id
    WHERE h.created <> 1 OR h.first_created_seq <> h.first_seq
    ORDER BY b.created_at
"""
STRAY_ARTIFACTS = """
    SELECT a.id, a.event_seq, b.build_id FROM artifacts a JOIN builds b ON b.id = a.build
    LEFT JOIN events e ON e.seq = a.event_seq
    WHERE e.seq IS NULL OR e.type <> 'artifact' OR e.build_uuid <> a.build OR e.attempt <> a.attempt
    ORDER BY a.id
"""
COUNTS = """
    SELECT (SELECT COUNT(*) FROM builds) AS builds, (SELECT COUNT(*) FROM events) AS events,
           (SELECT COUNT(*) FROM failures) AS failures, (SELECT COUNT(*) FROM artifacts) AS artifacts,
           (SELECT COALESCE(MAX(seq), 0) FROM events) AS max_seq
"""
CONFLICTS = """
    SELECT c.build_uuid, c.build_id, c.spells_uuid, c.named_build_uuid FROM build_ref_conflicts c
    ORDER BY c.build_id
"""


def _failure_page(p: Params, after: int, upto: int) -> str:
    return f"""
        SELECT e.seq, e.build_uuid, e.failure, f.build_uuid AS f_build_uuid, f.error_message, f.error_code,
               f.component, f.details
        FROM failures f JOIN events e ON e.seq = f.seq
        WHERE f.seq > {p(after)} AND f.seq <= {p(upto)} ORDER BY f.seq LIMIT {p(REPLAY_PAGE)}
    """


def _artifact_event_page(p: Params, after: int, upto: int) -> str:
    return f"""
        SELECT e.seq, e.detail FROM events e
        WHERE e.type = 'artifact' AND e.seq > {p(after)} AND e.seq <= {p(upto)} ORDER BY e.seq
        LIMIT {p(REPLAY_PAGE)}
    """


def _artifact_rows(p: Params, first: int, last: int) -> str:
    return f"""
        SELECT a.event_seq, a.platform, a.region, a.kind, a.external_id, a.labels FROM artifacts a
        WHERE a.event_seq >= {p(first)} AND a.event_seq <= {p(last)}
    """


def _event_page(p: Params, after: int, upto: int) -> str:
    return f"""
        SELECT e.seq, e.build_uuid, e.type, e.attempt, e.state_code, e.from_state_code, e.status, e.failure
        FROM events e WHERE e.seq > {p(after)} AND e.seq <= {p(upto)} ORDER BY e.seq LIMIT {p(REPLAY_PAGE)}
    """


async def _rows(store: Store, query: str, values: Sequence[Any] = ()) -> list[Any]:
    [rows] = await store.executor.run_batch([(query, list(values))], write=False)
    return rows


async def verify(store: Store) -> Report:
    """Every check above, on an open store; nothing is written."""
    report = Report(store=store.name)
    [counts] = await _rows(store, COUNTS)
    report.checked = {
        name: int(counts[name]) for name in ("builds", "events", "failures", "artifacts", "max_seq")
    }
    await _check_tables(store, report)
    await _check_failures(store, report, report.checked["max_seq"])
    await _check_artifacts(store, report, report.checked["max_seq"])
    await _replay(store, report, report.checked["max_seq"])
    for row in await _rows(store, CONFLICTS):
        named = row["named_build_uuid"]
        report.conflicts.append(
            Finding(
                "ref_conflicts",
                f"build {row['build_uuid']}",
                f"its build_id {row['build_id']!r} reads as the UUID {row['spells_uuid']}, so that build_id "
                + (f"now names build {named}" if named is not None else "names no build")
                + "; it is still reached by its own id",
            )
        )
    return report


async def _check_tables(store: Store, report: Report) -> None:
    for row in await _rows(store, STATUS_COUNTS):
        if int(row["recorded"]) != int(row["actual"]):
            report.add(
                Finding(
                    "status_counts",
                    row["status"],
                    f"status_counts says {row['recorded']}, {row['actual']} builds are {row['status']}",
                )
            )
    for query, what in ((MISSING_COMBOS, "has builds but no combos row"), (EXTRA_COMBOS, "has no build")):
        for row in await _rows(store, query):
            combo = f"{row['platform']} / {row['os_version']} / {row['image_type']}"
            report.add(Finding("combos", combo, f"the combination {what}"))
    for row in await _rows(store, MISSING_FAILURES):
        report.add(Finding("failures", f"event {row['seq']}", "a failure event without a failures row"))
    for row in await _rows(store, STRAY_FAILURES):
        report.add(Finding("failures", f"event {row['seq']}", "a failures row without a failure event"))
    for row in await _rows(store, BUILD_VS_LAST_EVENT):
        subject = f"build {row['build_id']!r} ({row['id']})"
        if row["e_seq"] is None:
            report.add(Finding("builds", subject, "the build has no event"))
            continue
        report.add(
            Finding(
                "builds",
                subject,
                f"the row says state {row['state_code']} {row['status']} attempt {row['attempt']} "
                f"last_event_seq {row['last_event_seq']}; its last event {row['e_seq']} says state "
                f"{row['e_state_code']} {row['e_status']} attempt {row['e_attempt']} (or message, failure, "
                "updated_at differ)",
            )
        )
    for row in await _rows(store, EVENTS_OF_OTHER_COMBO):
        report.add(
            Finding(
                "builds",
                f"event {row['seq']}",
                f"the event names another platform, OS version or image type than build {row['build_id']!r}",
            )
        )
    for row in await _rows(store, CREATED_EVENTS):
        report.add(
            Finding(
                "history",
                f"build {row['build_id']!r} ({row['id']})",
                f"{row['created']} created event(s); its first event is {row['first_seq']}, its first "
                f"created event {row['first_created_seq']}",
            )
        )


async def _check_failures(store: Store, report: Report, upto: int) -> None:
    """Each failures row holds what its event recorded (the two are written together, never changed)."""
    dialect = store.executor.dialect
    after = 0
    while True:
        p = Params(dialect)
        rows = await _rows(store, _failure_page(p, after, upto), p.values)
        for row in rows:
            recorded = dialect.json_value(row["failure"]) or {}
            kept = {
                "error_message": row["error_message"],
                "error_code": row["error_code"],
                "component": row["component"],
                "details": dialect.json_value(row["details"]),
            }
            same_build = str(row["build_uuid"]) == str(row["f_build_uuid"])
            if not same_build or kept != {name: recorded.get(name) for name in kept}:
                report.add(
                    Finding("failures", f"event {row['seq']}", "the failures row differs from its event")
                )
        if len(rows) < REPLAY_PAGE:
            return
        after = rows[-1]["seq"]


async def _check_artifacts(store: Store, report: Report, upto: int) -> None:
    """Each artifact row belongs to an artifact event of its build and attempt, and each artifact event
    lists exactly the rows recorded with its seq."""
    for row in await _rows(store, STRAY_ARTIFACTS):
        report.add(
            Finding(
                "artifacts",
                f"artifact {row['id']} of build {row['build_id']!r}",
                f"its event {row['event_seq']} is not an artifact event of its build and attempt",
            )
        )
    dialect = store.executor.dialect
    after = 0
    while True:
        p = Params(dialect)
        events = await _rows(store, _artifact_event_page(p, after, upto), p.values)
        if not events:
            return
        p = Params(dialect)
        recorded: dict[int, list[Any]] = {}
        query = _artifact_rows(p, events[0]["seq"], events[-1]["seq"])
        for row in await _rows(store, query, p.values):
            labels = dialect.json_value(row["labels"])
            key = (row["platform"], row["region"], row["kind"], row["external_id"], labels)
            recorded.setdefault(row["event_seq"], []).append(key)
        for event in events:
            listed = (dialect.json_value(event["detail"]) or {}).get("artifacts") or []
            keys = [(a.get("platform"), a.get("region"), a.get("kind"), a.get("external_id"), a.get("labels"))
                    for a in listed if isinstance(a, dict)]  # fmt: skip
            kept = recorded.get(event["seq"], [])
            if len(keys) != len(kept) or any(key not in kept for key in keys):
                report.add(
                    Finding(
                        "artifacts",
                        f"event {event['seq']}",
                        f"the event lists {len(keys)} artifact(s), {len(kept)} row(s) carry its seq, "
                        "and they differ",
                    )
                )
        if len(events) < REPLAY_PAGE:
            return
        after = events[-1]["seq"]


async def _replay(store: Store, report: Report, upto: int) -> None:
    """Each build's events, replayed through ``domain``'s rules: each must be the change the rules make
    from the state before it (a created event first; no move backwards, after success or on a failed
    build; a reset one attempt on)."""
    dialect = store.executor.dialect
    current: dict[str, domain.Current] = {}
    after = 0
    while True:
        p = Params(dialect)
        rows = await _rows(store, _event_page(p, after, upto), p.values)
        for row in rows:
            build = str(row["build_uuid"])
            problem = _replay_one(current, build, row, dialect.json_value(row["failure"]))
            if problem is not None:
                report.add(Finding("history", f"event {row['seq']} of build {build}", problem))
        if len(rows) < REPLAY_PAGE:
            return
        after = rows[-1]["seq"]


def _replay_one(
    current: dict[str, domain.Current], build: str, row: Any, failure: dict[str, Any] | None
) -> str | None:
    """Apply one event to its build's replayed state; what is wrong with it, if anything."""
    recorded = (row["type"], row["state_code"], row["status"], row["attempt"], row["from_state_code"])
    before = current.get(build)
    if row["type"] == "created" or before is None:
        if row["type"] != "created" or before is not None:
            problem = "a created event after the build's first event" if before else "not a created event"
            # Carry on from what the event says, so that one bad event is one finding.
            current[build] = domain.Current(build, row["state_code"], row["status"], row["attempt"], failure)
            return f"the build's history is broken here: {problem}"
        expected: tuple[Any, ...] = ("created", 0, domain.RUNNING, 1, None)
    elif not EVENT_RULES[EventType(row["type"])].changes_state:
        # It copies the build's state as it was (and leaves the replayed state as it is).
        expected = (row["type"], before.state_code, before.status, before.attempt, before.state_code)
        if recorded != expected:
            return f"recorded {recorded}, the build was {expected} (type, state, status, attempt, from)"
        return None
    else:
        try:
            if row["type"] == "state":
                change = domain.decide_state(before, row["state_code"])
            elif row["type"] == "failure":
                change = domain.decide_failure(before, failure or {})
            else:
                change = domain.decide_reset(before)
        except Conflict as refused:
            change = None
            rule: str | None = refused.detail
        else:
            rule = None if change is not None else "it repeats the state the build was already in"
        if change is None:
            current[build] = domain.Current(build, row["state_code"], row["status"], row["attempt"], failure)
            return f"the rules refuse this {row['type']} event: {rule}"
        expected = (change.type, change.state_code, change.status, change.attempt, change.from_state_code)
    current[build] = domain.Current(build, row["state_code"], row["status"], row["attempt"], failure)
    if recorded != expected:
        return f"recorded {recorded}, the rules give {expected} (type, state, status, attempt, from)"
    return None
