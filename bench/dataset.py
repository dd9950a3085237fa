"""Realistic build history, loaded fast: COPY on PostgreSQL, executemany in one transaction on SQLite.

Build ``i`` of a load of ``n`` was created ``(n - i) * SPACING`` ago and has about eight events (created,
state codes, sometimes a failure and a reset), so 1M builds span 30 days and 10k the last seven hours. The
maintained summaries (``status_counts``, ``combos``, ``failures``) are written with the rows, exactly as the
write path keeps them, so the dashboard sees a store the service could have produced.

Patterns by ``i % 20``: 14 succeeded (8 events), 3 failed at 95 (8 events), 2 failed, reset and running
again (8 events), 1 still running (7 events).

With ``artifacts=n`` every build also made ``n`` artifacts (an AMI, gallery version, GCP image... per
region of its platform), recorded by one ``artifact`` event just before its last event, while it ran, as
the write path allows (a failed build keeps what it recorded); the event copies the build's state and lists
them in ``detail``, and each artifact row names it, as ``store/artifacts.py`` writes them.

With ``release=True`` (issue 17's tables): every build of a derived image type has the build of the type
before it (same platform and OS, 30 builds earlier: base -> cis -> hardened -> gpu) as its parent; each
platform x OS x image type has a ``production`` channel, assigned every ``MOVE_EVERY``-th succeeded build
(one history row and one ``channel`` event each, in the feed right after the build's own events); and
among the newest ``FAMILY_WINDOW`` builds one base build (``family_root``) has three generations of
``FAMILY_WIDTH`` descendants (a child each, then a grandchild each, then a great-grandchild each) and no
other relatives.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from bench.db import Database
from buildstate.store.postgres import FEED_LOCK
from buildstate.store.sql import format_time

PLATFORMS = ("aws", "azure", "gcp", "vsphere", "openstack")
OS_VERSIONS = ("rhel-8.10", "rhel-9.4", "ubuntu-22.04", "ubuntu-24.04", "windows-2022", "sles-15.6")
IMAGE_TYPES = ("base", "cis", "hardened", "gpu")
COMBOS = len(PLATFORMS) * len(OS_VERSIONS) * len(IMAGE_TYPES)
SPACING = timedelta(days=30) / 1_000_000
ACTOR = "key:bs_loader0"
COMPONENTS = ("ansible", "packer", "qemu", "network", "tests")
CHUNK = 20_000
# Each platform's artifact kind and regions (the lookup benched asks for the second region of a platform).
ARTIFACT_KINDS = {
    "aws": "ami", "azure": "azure-image-version", "gcp": "gcp-image", "vsphere": "vsphere-template",
    "openstack": "file",
}  # fmt: skip
REGIONS = {
    "aws": ("us-east-1", "eu-west-1", "ap-southeast-2", "us-west-2", "eu-central-1"),
    "azure": ("westeurope", "eastus", "southeastasia", "northeurope", "westus2"),
    "gcp": ("europe-west1", "us-central1", "asia-east1", "us-east4", "europe-north1"),
    "vsphere": ("dc-ams", "dc-fra", "dc-nyc", "dc-sin", "dc-syd"),
    "openstack": ("region-one", "region-two", "region-three", "region-four", "region-five"),
}
ARTIFACT_LABELS = '{"arch": "x86_64"}'
CHANNEL = "production"
MOVE_EVERY = 2
FAMILY_WIDTH = 100
FAMILY_GENERATIONS = 3
FAMILY_WINDOW = 10_000
PARENT_COLUMNS = ("child_uuid", "parent_uuid", "channel", "source", "actor", "created_at")
CHANNEL_COLUMNS = (
    "id", "name", "platform_id", "os_version_id", "image_type_id", "head_uuid", "required_labels", "moves",
    "created_at", "updated_at",
)  # fmt: skip
HISTORY_COLUMNS = ("id", "channel_id", "from_uuid", "to_uuid", "cause", "reason", "actor", "at", "event_seq")

BUILD_COLUMNS = (
    "id", "build_id", "platform_id", "os_version_id", "image_type_id", "state_code", "status", "attempt",
    "labels", "message", "failure", "created_at", "updated_at", "last_event_seq",
)  # fmt: skip
EVENT_COLUMNS = (
    "seq", "build_uuid", "type", "attempt", "state_code", "from_state_code", "status", "message", "failure",
    "reason", "actor", "provenance", "duration_ms", "platform_id", "os_version_id", "image_type_id",
    "recorded_at", "detail",
)  # fmt: skip
ARTIFACT_COLUMNS = (
    "build", "attempt", "platform", "region", "kind", "external_id", "labels", "event_seq", "recorded_at",
    "actor",
)  # fmt: skip
FAILURE_COLUMNS = ("seq", "build_uuid", "error_message", "error_code", "component", "details", "recorded_at")

# (type, state_code, status, attempt) after each event
_SUCCEEDED = [("created", 0, "running", 1)] + [
    ("state", c, "succeeded" if c == 100 else "running", 1) for c in (10, 25, 50, 75, 90, 95, 100)
]
_FAILED = [("created", 0, "running", 1)] + [("state", c, "running", 1) for c in (10, 25, 50, 75, 90, 95)]
_FAILED.append(("failure", 95, "failed", 1))
_RESET = [
    ("created", 0, "running", 1), ("state", 10, "running", 1), ("state", 25, "running", 1),
    ("failure", 25, "failed", 1), ("reset", 0, "running", 2), ("state", 10, "running", 2),
    ("state", 25, "running", 2), ("state", 50, "running", 2),
]  # fmt: skip
_RUNNING = _FAILED[:-1]
_FRESH = [("created", 0, "running", 1)]


def pattern(i: int) -> list[tuple[str, int, str, int]]:
    slot = i % 20
    if slot < 14:
        return _SUCCEEDED
    if slot < 17:
        return _FAILED
    if slot < 19:
        return _RESET
    return _RUNNING


def _with_artifacts(steps: list[tuple[str, int, str, int]]) -> list[tuple[str, int, str, int]]:
    """The steps with an ``artifact`` event before the last one, at the state of the one before it."""
    _, code, status, attempt = steps[-2]
    return [*steps[:-1], ("artifact", code, status, attempt), steps[-1]]


_WITH_ARTIFACTS = {id(steps): _with_artifacts(steps) for steps in (_SUCCEEDED, _FAILED, _RESET, _RUNNING)}


def steps_of(i: int, *, fresh: bool, artifacts: int) -> list[tuple[str, int, str, int]]:
    if fresh:
        return _FRESH
    steps = pattern(i)
    return _WITH_ARTIFACTS[id(steps)] if artifacts else steps


def _artifacts(platform: str, build_id: str, count: int) -> list[dict[str, Any]]:
    regions = REGIONS[platform]
    return [
        {
            "platform": platform,
            "region": regions[n % len(regions)],
            "kind": ARTIFACT_KINDS[platform],
            "external_id": f"{ARTIFACT_KINDS[platform]}-{build_id}-{n}",
            "labels": {"arch": "x86_64"},
        }
        for n in range(count)
    ]


@dataclass
class Loaded:
    builds: int = 0
    events: int = 0
    artifacts: int = 0
    parents: int = 0
    channel_moves: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    combos: set[tuple[int, int, int]] = field(default_factory=set)
    build_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Lookups:
    platform: dict[str, int]
    os_version: dict[str, int]
    image_type: dict[str, int]

    def combo(self, i: int) -> tuple[str, str, str, int, int, int]:
        p = PLATFORMS[i % len(PLATFORMS)]
        o = OS_VERSIONS[(i // len(PLATFORMS)) % len(OS_VERSIONS)]
        t = IMAGE_TYPES[(i // (len(PLATFORMS) * len(OS_VERSIONS))) % len(IMAGE_TYPES)]
        return p, o, t, self.platform[p], self.os_version[o], self.image_type[t]


def _failure(i: int) -> dict[str, Any]:
    return {
        "error_message": f"step failed on build {i}",
        "error_code": ("E_TIMEOUT", "E_EXIT_1", "E_QUOTA")[i % 3],
        "component": COMPONENTS[i % len(COMPONENTS)],
        "details": None,
    }


Rows = list[tuple[Any, ...]]


@dataclass
class Chunk:
    """Rows of some builds, times as datetimes, JSON as text, and their tally."""

    builds: Rows = field(default_factory=list)
    events: Rows = field(default_factory=list)
    failures: Rows = field(default_factory=list)
    artifacts: Rows = field(default_factory=list)
    channel_seqs: dict[int, int] = field(default_factory=dict)
    tally: Loaded = field(default_factory=Loaded)


def rows(
    lookups: Lookups,
    prefix: str,
    start: int,
    count: int,
    first_seq: int,
    now: datetime,
    *,
    fresh: bool = False,
    artifacts: int = 0,
    moved: frozenset[int] = frozenset(),
) -> Iterator[Chunk]:
    """The rows of builds ``start``.. ``start + count``, ``CHUNK`` builds at a time. After each build of
    ``moved`` one ``seq`` is left for its ``channel`` event (``Chunk.channel_seqs``)."""
    seq = first_seq
    for chunk_start in range(start, start + count, CHUNK):
        chunk = Chunk()
        tally = chunk.tally
        for i in range(chunk_start, min(start + count, chunk_start + CHUNK)):
            p, _, _, pid, oid, tid = lookups.combo(i)
            build_uuid = build_uuid_of(prefix, i)
            build_id = build_id_of(lookups, prefix, i)
            steps = steps_of(i, fresh=fresh, artifacts=artifacts)
            created = now if fresh else now - (start + count - i) * SPACING
            gap = SPACING / 8
            previous_code: int | None = None
            failure = None
            for j, (kind, code, status, attempt) in enumerate(steps):
                at = created + j * gap
                failure = _failure(i) if kind == "failure" else None
                failure_text = json.dumps(failure) if failure else None
                message = failure["error_message"] if failure else (f"retry {i}" if kind == "reset" else None)
                detail = None
                if kind == "artifact":
                    made = _artifacts(p, build_id, artifacts)
                    detail = json.dumps({"artifacts": made})
                    chunk.artifacts.extend(
                        (
                            build_uuid, attempt, a["platform"], a["region"], a["kind"], a["external_id"],
                            ARTIFACT_LABELS, seq, at, ACTOR,
                        )
                        for a in made
                    )  # fmt: skip
                    tally.artifacts += len(made)
                chunk.events.append((
                    seq, build_uuid, kind, attempt, code, previous_code, status, message, failure_text,
                    f"retry {i}" if kind == "reset" else None, ACTOR, None,
                    None if j == 0 or detail else int(gap.total_seconds() * 1000), pid, oid, tid, at, detail,
                ))  # fmt: skip
                if failure:
                    chunk.failures.append((
                        seq, build_uuid, failure["error_message"], failure["error_code"],
                        failure["component"], None, at,
                    ))  # fmt: skip
                previous_code = code
                seq += 1
            kind, code, status, attempt = steps[-1]
            last_at = created + (len(steps) - 1) * gap
            build_failure = (
                json.dumps(_failure(i)) if status == "failed" else None
            )  # message: the last event's
            chunk.builds.append((
                build_uuid, build_id, pid, oid, tid, code, status, attempt, "{}", message, build_failure,
                created, last_at, seq - 1,
            ))  # fmt: skip
            if i in moved:  # after the build row: its last event is its own
                chunk.channel_seqs[i] = seq
                seq += 1
            tally.builds += 1
            tally.events += len(steps)
            tally.statuses[status] += 1
            tally.combos.add((pid, oid, tid))
            tally.build_ids.append(build_id)
        yield chunk


# For naming builds without a database: combo() by name (the ids are the database's).
NAMES = Lookups(
    platform=dict.fromkeys(PLATFORMS, 0),
    os_version=dict.fromkeys(OS_VERSIONS, 0),
    image_type=dict.fromkeys(IMAGE_TYPES, 0),
)


def build_uuid_of(prefix: str, i: int) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"{prefix}/{i}")


def build_id_of(lookups: Lookups, prefix: str, i: int) -> str:
    p, o, t, *_ = lookups.combo(i)
    return f"{prefix}-{p}-{o}-{t}-{i:07d}"


def family_root(count: int) -> int:
    """The build with three generations of descendants: the first succeeded base build among the newest
    ``FAMILY_WINDOW`` (its family are the builds that follow it)."""
    start = max(0, count - FAMILY_WINDOW)
    return next(
        i for i in range(start, count) if (i // 30) % len(IMAGE_TYPES) == 0 and pattern(i) is _SUCCEEDED
    )


def _family(count: int) -> list[tuple[int, int]]:
    """(child, parent) of the root's descendants: generation g's k-th build is a child of generation
    g - 1's k-th (the root for the first)."""
    root = family_root(count)
    edges = []
    for generation in range(1, FAMILY_GENERATIONS + 1):
        for k in range(FAMILY_WIDTH):
            child = root + (generation - 1) * FAMILY_WIDTH + k + 1
            parent = root if generation == 1 else child - FAMILY_WIDTH
            edges.append((child, parent))
    return edges


def channel_moves(count: int) -> list[int]:
    """The builds assigned to their bucket's channel, in order: every ``MOVE_EVERY``-th succeeded one."""
    seen: Counter[int] = Counter()
    moved = []
    for i in range(count):
        if pattern(i) is not _SUCCEEDED:
            continue
        bucket = i % COMBOS
        if seen[bucket] % MOVE_EVERY == 0:
            moved.append(i)
        seen[bucket] += 1
    return moved


@dataclass
class Release:
    parents: Rows = field(default_factory=list)
    channels: Rows = field(default_factory=list)
    history: Rows = field(default_factory=list)
    events: Rows = field(default_factory=list)


def release_rows(
    lookups: Lookups, prefix: str, count: int, channel_seqs: dict[int, int], now: datetime
) -> Release:
    """The parents, channels, channel history and ``channel`` events of ``count`` builds loaded by ``rows``
    with the same ``now`` (each event at the ``seq`` it left after the build it moves to)."""
    made = Release()

    def created(i: int) -> datetime:
        return now - (count - i) * SPACING

    root, family = family_root(count), _family(count)
    related = {root} | {child for child, _ in family}
    made.parents.extend(
        (build_uuid_of(prefix, child), build_uuid_of(prefix, parent), CHANNEL if parent == root else None,
         "api", ACTOR, created(child))
        for child, parent in family
    )  # fmt: skip
    made.parents.extend(
        (build_uuid_of(prefix, i), build_uuid_of(prefix, i - 30), None, "api", ACTOR, created(i))
        for i in range(30, count)
        if (i // 30) % len(IMAGE_TYPES) > 0 and i not in related and i - 30 not in related
    )
    heads: dict[int, tuple[int, int]] = {}  # bucket -> (channel id, head)
    moves: Counter[int] = Counter()
    for move, i in enumerate(channel_moves(count), 1):
        seq = channel_seqs[i]
        *_, pid, oid, tid = lookups.combo(i)
        channel_id, head = heads.get(i % COMBOS, (len(heads) + 1, -1))
        at = created(i) + SPACING  # after the build succeeded
        to_uuid = build_uuid_of(prefix, i)
        from_uuid = build_uuid_of(prefix, head) if head >= 0 else None
        made.history.append((move, channel_id, from_uuid, to_uuid, "assign", "promote", ACTOR, at, seq))
        detail = {
            "channel": CHANNEL, "from": str(from_uuid) if from_uuid else None,
            "from_build_id": build_id_of(lookups, prefix, head) if head >= 0 else None, "to": str(to_uuid),
            "to_build_id": build_id_of(lookups, prefix, i), "cause": "assign", "move": move,
        }  # fmt: skip
        made.events.append((  # a side event: the build's state, from and to, no duration
            seq, to_uuid, "channel", 1, 100, 100, "succeeded", None, None, "promote", ACTOR, None, None,
            pid, oid, tid, at, json.dumps(detail),
        ))  # fmt: skip
        heads[i % COMBOS] = (channel_id, i)
        moves[channel_id] += 1
    first_move: dict[int, datetime] = {}
    for row in made.history:
        first_move.setdefault(row[1], row[7])
    for channel_id, head in sorted(heads.values()):
        *_, pid, oid, tid = lookups.combo(head)
        made.channels.append((
            channel_id, CHANNEL, pid, oid, tid, build_uuid_of(prefix, head), "{}", moves[channel_id],
            first_move[channel_id], created(head) + SPACING,
        ))  # fmt: skip
    return made


# ---------------------------------------------------------------------- PostgreSQL


async def _pg_lookups(conn: asyncpg.Connection) -> Lookups:
    found = {}
    for column, table, names in (
        ("platform", "platforms", PLATFORMS),
        ("os_version", "os_versions", OS_VERSIONS),
        ("image_type", "image_types", IMAGE_TYPES),
    ):
        await conn.executemany(
            f"INSERT INTO {table} (name) VALUES ($1) ON CONFLICT (name) DO NOTHING", [(n,) for n in names]
        )
        found[column] = {r["name"]: r["id"] for r in await conn.fetch(f"SELECT id, name FROM {table}")}
    return Lookups(**found)


async def _load_pg(
    db: Database, prefix: str, count: int, fresh: bool, keep_ids: bool, artifacts: int, release: bool
) -> Loaded:
    conn = await asyncpg.connect(db.url, timeout=10)
    total = Loaded()
    try:
        present = await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'events' "
            "AND table_schema = current_schema()"
        )
        event_columns = _event_columns({r["column_name"] for r in present}, artifacts, release)
        lookups = await _pg_lookups(conn)
        # Reserve the whole range of seq values at once, under the feed lock that every append takes
        # before drawing one, so a write still finishing in the service cannot take a value in the range.
        # (Readers of the feed should not page through it while a load runs: its rows appear late.)
        of_builds = sum(len(steps_of(i, fresh=fresh, artifacts=artifacts)) for i in range(count))
        expected = of_builds + (len(channel_moves(count)) if release else 0)
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", FEED_LOCK)
            first = await conn.fetchval("SELECT nextval('events_seq')")
            await conn.execute("SELECT setval('events_seq', $1)", first + expected - 1)
        now = datetime.now(UTC)
        moved = frozenset(channel_moves(count)) if release else frozenset()
        channel_seqs: dict[int, int] = {}
        chunks = rows(lookups, prefix, 0, count, first, now, fresh=fresh, artifacts=artifacts, moved=moved)
        for chunk in chunks:
            channel_seqs.update(chunk.channel_seqs)
            async with conn.transaction():
                await conn.copy_records_to_table("builds", records=chunk.builds, columns=BUILD_COLUMNS)
                await conn.copy_records_to_table(
                    "events", records=_columns(chunk.events, event_columns), columns=event_columns
                )
                for table, records, columns in (
                    ("failures", chunk.failures, FAILURE_COLUMNS),
                    ("artifacts", chunk.artifacts, ARTIFACT_COLUMNS),
                ):
                    if records:
                        await conn.copy_records_to_table(table, records=records, columns=columns)
            _add(total, chunk.tally, keep_ids)
        if release:
            made = release_rows(lookups, prefix, count, channel_seqs, now)
            async with conn.transaction():
                for table, records, columns in (
                    ("events", made.events, EVENT_COLUMNS),
                    ("channels", made.channels, CHANNEL_COLUMNS),
                    ("channel_history", made.history, HISTORY_COLUMNS),
                    ("build_parents", made.parents, PARENT_COLUMNS),
                ):
                    await conn.copy_records_to_table(table, records=records, columns=columns)
                for table in ("channels", "channel_history"):  # the ids were given: move the sequences on
                    await conn.execute(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"(SELECT COALESCE(max(id), 0) + 1 FROM {table}), false)"
                    )
            _add_release(total, made)
        async with conn.transaction():
            await conn.executemany(
                "UPDATE status_counts SET n = n + $2 WHERE status = $1", list(total.statuses.items())
            )
            await conn.executemany(
                "INSERT INTO combos (platform_id, os_version_id, image_type_id) VALUES ($1, $2, $3) "
                "ON CONFLICT DO NOTHING",
                sorted(total.combos),
            )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return total


# ---------------------------------------------------------------------- SQLite


def _load_sqlite(
    db: Database, prefix: str, count: int, fresh: bool, keep_ids: bool, artifacts: int, release: bool
) -> Loaded:
    conn = sqlite3.connect(db.sqlite_path, timeout=30, isolation_level=None)
    total = Loaded()
    try:
        present = {r[1] for r in conn.execute("PRAGMA table_info(events)")}
        event_columns = _event_columns(present, artifacts, release)
        conn.execute("BEGIN IMMEDIATE")
        found = {}
        for column, table, names in (
            ("platform", "platforms", PLATFORMS),
            ("os_version", "os_versions", OS_VERSIONS),
            ("image_type", "image_types", IMAGE_TYPES),
        ):
            conn.executemany(
                f"INSERT INTO {table} (name) VALUES (?) ON CONFLICT (name) DO NOTHING", [(n,) for n in names]
            )
            found[column] = dict(conn.execute(f"SELECT name, id FROM {table}").fetchall())
        first = conn.execute("SELECT COALESCE(max(seq), 0) + 1 FROM events").fetchone()[0]
        now = datetime.now(UTC)
        lookups = Lookups(**found)
        moved = frozenset(channel_moves(count)) if release else frozenset()
        channel_seqs: dict[int, int] = {}
        chunks = rows(lookups, prefix, 0, count, first, now, fresh=fresh, artifacts=artifacts, moved=moved)
        for chunk in chunks:
            channel_seqs.update(chunk.channel_seqs)
            _insert(conn, "builds", BUILD_COLUMNS, [
                (str(b[0]), *b[1:11], format_time(b[11]), format_time(b[12]), b[13]) for b in chunk.builds
            ])  # fmt: skip
            _insert(conn, "events", event_columns, _columns(_sqlite_events(chunk.events), event_columns))
            _insert(conn, "failures", FAILURE_COLUMNS, [
                (f[0], str(f[1]), *f[2:6], format_time(f[6])) for f in chunk.failures
            ])  # fmt: skip
            _insert(conn, "artifacts", ARTIFACT_COLUMNS, [
                (str(a[0]), *a[1:8], format_time(a[8]), a[9]) for a in chunk.artifacts
            ])  # fmt: skip
            _add(total, chunk.tally, keep_ids)
        if release:
            made = release_rows(lookups, prefix, count, channel_seqs, now)
            _insert(conn, "events", EVENT_COLUMNS, _sqlite_events(made.events))
            _insert(conn, "channels", CHANNEL_COLUMNS, [
                (*c[:5], str(c[5]), *c[6:8], format_time(c[8]), format_time(c[9])) for c in made.channels
            ])  # fmt: skip
            _insert(conn, "channel_history", HISTORY_COLUMNS, [
                (h[0], h[1], h[2] and str(h[2]), str(h[3]), *h[4:7], format_time(h[7]), h[8])
                for h in made.history
            ])  # fmt: skip
            _insert(conn, "build_parents", PARENT_COLUMNS, [
                (str(e[0]), str(e[1]), *e[2:5], format_time(e[5])) for e in made.parents
            ])  # fmt: skip
            _add_release(total, made)
        conn.executemany(
            "UPDATE status_counts SET n = n + ? WHERE status = ?",
            [(n, s) for s, n in total.statuses.items()],
        )
        conn.executemany(
            "INSERT INTO combos (platform_id, os_version_id, image_type_id) VALUES (?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            sorted(total.combos),
        )
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
    finally:
        conn.close()
    return total


def _event_columns(present: set[str], artifacts: int, release: bool) -> tuple[str, ...]:
    """The event columns to write: all of them, or without ``detail`` into a schema from before issue 16
    (migration 0008; a history without artifacts or channels has no detail to write), so the bench can
    load the same history into another checkout's database, migrated by that checkout."""
    if "detail" in present:
        return EVENT_COLUMNS
    if artifacts or release:
        raise ValueError("artifacts and release rows need a schema with events.detail (migration 0008)")
    return EVENT_COLUMNS[:-1]


def _columns(records: Rows, columns: tuple[str, ...]) -> Rows:
    """``records`` of ``EVENT_COLUMNS`` cut to the leading ``columns`` (``detail`` is the last one)."""
    if len(columns) == len(EVENT_COLUMNS):
        return records
    if any(r[len(columns) :] != (None,) * (len(EVENT_COLUMNS) - len(columns)) for r in records):
        raise ValueError(f"events with {EVENT_COLUMNS[len(columns) :]} into a schema without them")
    return [r[: len(columns)] for r in records]


def _insert(conn: sqlite3.Connection, table: str, columns: tuple[str, ...], records: Rows) -> None:
    if not records:  # nothing to write: nor a statement to prepare, on a table an older schema lacks
        return
    marks = ", ".join("?" * len(columns))
    conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", records)


def _sqlite_events(events: Rows) -> Rows:
    return [(e[0], str(e[1]), *e[2:16], format_time(e[16]), e[17]) for e in events]


def _add_release(total: Loaded, made: Release) -> None:
    total.events += len(made.events)
    total.parents += len(made.parents)
    total.channel_moves += len(made.history)


def _add(total: Loaded, tally: Loaded, keep_ids: bool) -> None:
    total.builds += tally.builds
    total.events += tally.events
    total.artifacts += tally.artifacts
    total.statuses.update(tally.statuses)
    total.combos |= tally.combos
    if keep_ids:
        total.build_ids.extend(tally.build_ids)


def load(
    db: Database,
    count: int,
    *,
    prefix: str = "hist",
    fresh: bool = False,
    keep_ids: bool = False,
    artifacts: int = 0,
    release: bool = False,
) -> Loaded:
    """Add ``count`` builds named ``prefix-...`` (history, or with ``fresh`` just created, at state 0), each
    with ``artifacts`` artifacts (history only), and with ``release`` their parents and channels (into a
    database that has none yet)."""
    if release and (fresh or family_root(count) + FAMILY_WIDTH * FAMILY_GENERATIONS >= count):
        raise ValueError("release rows need a history that holds the family of family_root")
    if db.is_pg:
        return asyncio.run(_load_pg(db, prefix, count, fresh, keep_ids, artifacts, release))
    return _load_sqlite(db, prefix, count, fresh, keep_ids, artifacts, release)
