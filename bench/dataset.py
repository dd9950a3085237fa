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
) -> Iterator[Chunk]:
    """The rows of builds ``start``.. ``start + count``, ``CHUNK`` builds at a time."""
    seq = first_seq
    for chunk_start in range(start, start + count, CHUNK):
        chunk = Chunk()
        tally = chunk.tally
        for i in range(chunk_start, min(start + count, chunk_start + CHUNK)):
            p, o, t, pid, oid, tid = lookups.combo(i)
            build_uuid = uuid.uuid5(uuid.NAMESPACE_URL, f"{prefix}/{i}")
            build_id = f"{prefix}-{p}-{o}-{t}-{i:07d}"
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
                    None if j == 0 else int(gap.total_seconds() * 1000), pid, oid, tid, at, detail,
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
            tally.builds += 1
            tally.events += len(steps)
            tally.statuses[status] += 1
            tally.combos.add((pid, oid, tid))
            tally.build_ids.append(build_id)
        yield chunk


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
    db: Database, prefix: str, count: int, fresh: bool, keep_ids: bool, artifacts: int
) -> Loaded:
    conn = await asyncpg.connect(db.url, timeout=10)
    total = Loaded()
    try:
        lookups = await _pg_lookups(conn)
        # Reserve the whole range of seq values at once, under the feed lock that every append takes
        # before drawing one, so a write still finishing in the service cannot take a value in the range.
        # (Readers of the feed should not page through it while a load runs: its rows appear late.)
        expected = sum(len(steps_of(i, fresh=fresh, artifacts=artifacts)) for i in range(count))
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", FEED_LOCK)
            first = await conn.fetchval("SELECT nextval('events_seq')")
            await conn.execute("SELECT setval('events_seq', $1)", first + expected - 1)
        now = datetime.now(UTC)
        chunks = rows(lookups, prefix, 0, count, first, now, fresh=fresh, artifacts=artifacts)
        for chunk in chunks:
            async with conn.transaction():
                await conn.copy_records_to_table("builds", records=chunk.builds, columns=BUILD_COLUMNS)
                await conn.copy_records_to_table("events", records=chunk.events, columns=EVENT_COLUMNS)
                for table, records, columns in (
                    ("failures", chunk.failures, FAILURE_COLUMNS),
                    ("artifacts", chunk.artifacts, ARTIFACT_COLUMNS),
                ):
                    if records:
                        await conn.copy_records_to_table(table, records=records, columns=columns)
            _add(total, chunk.tally, keep_ids)
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
    db: Database, prefix: str, count: int, fresh: bool, keep_ids: bool, artifacts: int
) -> Loaded:
    conn = sqlite3.connect(db.sqlite_path, timeout=30, isolation_level=None)
    total = Loaded()
    try:
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
        marks = ", ".join("?" * len(BUILD_COLUMNS))
        event_marks = ", ".join("?" * len(EVENT_COLUMNS))
        artifact_marks = ", ".join("?" * len(ARTIFACT_COLUMNS))
        for chunk in rows(Lookups(**found), prefix, 0, count, first, now, fresh=fresh, artifacts=artifacts):
            conn.executemany(
                f"INSERT INTO builds ({', '.join(BUILD_COLUMNS)}) VALUES ({marks})",
                [(str(b[0]), *b[1:11], format_time(b[11]), format_time(b[12]), b[13]) for b in chunk.builds],
            )
            conn.executemany(
                f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES ({event_marks})",
                [(e[0], str(e[1]), *e[2:16], format_time(e[16]), e[17]) for e in chunk.events],
            )
            conn.executemany(
                f"INSERT INTO failures ({', '.join(FAILURE_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(f[0], str(f[1]), *f[2:6], format_time(f[6])) for f in chunk.failures],
            )
            conn.executemany(
                f"INSERT INTO artifacts ({', '.join(ARTIFACT_COLUMNS)}) VALUES ({artifact_marks})",
                [(str(a[0]), *a[1:8], format_time(a[8]), a[9]) for a in chunk.artifacts],
            )
            _add(total, chunk.tally, keep_ids)
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
) -> Loaded:
    """Add ``count`` builds named ``prefix-...`` (history, or with ``fresh`` just created, at state 0), each
    with ``artifacts`` artifacts (history only)."""
    if db.is_pg:
        return asyncio.run(_load_pg(db, prefix, count, fresh, keep_ids, artifacts))
    return _load_sqlite(db, prefix, count, fresh, keep_ids, artifacts)
