"""Artifacts: what a build made, recorded with the ``artifact`` event that announces them, and the lookup
deployers read. Written once over the store's executor; the SQL is ``queries/artifacts.sql`` (with a
dialect variant where the databases differ: the event append, JSON, the label match).

Recording (``ArtifactStore.record``) is one transaction:

1. an ``Idempotency-Key`` is claimed, or the answer first given under it is replayed;
2. the build row is locked (PostgreSQL ``FOR UPDATE``; a SQLite write transaction holds the database's
   write lock), so recorders of one build take turns, in any process: two recording the same artifact
   at once make one row and one event, the second answering a replay;
3. the artifacts the request names that the build's current attempt has already (same labels) are a
   replay, the same key with other labels a 409; if none is new, nothing is written but the audit row
   (``replayed``), and the answer names the latest event that recorded any of them. What an earlier
   attempt recorded is not the current one's: recorded again after a reset, it is a new row (and event);
4. otherwise the rules (``domain.allow_artifacts``: not on a failed build) and the per-build bound, the
   audit row, then the event: on PostgreSQL under the feed lock that orders every append, taken after
   the build row (the lock order of ``store/postgres.py``) and held until COMMIT, so the feed never
   skips; then the artifacts with its seq, the webhook outbox, the idempotency answer.

The event changes no state (``EventRule.changes_state``): it copies the build's state code, status and
attempt, and leaves the build row, its ``updated_at`` and ``last_event_seq`` as they are, so a build's
step durations and its "last event" stay those of its states.

The lookup (``latest``) walks the succeeded builds of one platform x OS version x image type newest first
along ``builds_latest_succeeded`` and probes each for a matching artifact of its current attempt through
the artifacts' unique index (build, attempt, ...): a few index reads however many builds there are, when
the newest builds have what is asked for. ``of_build`` lists every attempt's, each with its ``attempt``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from buildstate import domain
from buildstate.domain import EVENT_RULES, SUCCEEDED, EventType
from buildstate.errors import Conflict, Gone, NotFound, Problem, Unprocessable
from buildstate.models import (
    MAX_ARTIFACTS_PER_BUILD,
    Artifact,
    ArtifactList,
    ArtifactMatch,
    ArtifactsRecord,
    ArtifactsWritten,
    Build,
    Revocation,
)
from buildstate.redaction import redact
from buildstate.store import idempotency, plan, sql
from buildstate.store.audit import AuditLog
from buildstate.store.audit import insert as audit_row
from buildstate.store.builds import (
    ARTIFACTS,
    append_side_event,
    artifacts_of,
    build_statement,
    event_statement,
)
from buildstate.store.executor import Executor, Json, Statement, Transaction
from buildstate.store.release import ReleaseStore, live_revocations
from buildstate.store.sql import Dialect
from buildstate.store.types import AuditEntry, Idempotency, WriteContext, WriteResult, replay

ACTION = EVENT_RULES[EventType.ARTIFACT].action
# The label (or Packer custom_data key) that names the image an artifact was built from.
SOURCE_LABEL = "source_image_id"
# (platform, region, kind, external_id): an artifact within one attempt of its build.
Key = tuple[str, str, str, str]


def _key(artifact: Artifact | dict[str, Any]) -> Key:
    if isinstance(artifact, Artifact):
        artifact = artifact.model_dump()
    return (artifact["platform"], artifact["region"], artifact["kind"], artifact["external_id"])


def describe(key: Key) -> str:
    platform, region, kind, external_id = key
    return f"{kind} {external_id!r} ({platform}{', ' + region if region else ''})"


@dataclass(frozen=True, slots=True)
class ArtifactLookup:
    """What ``GET /artifacts/latest`` asks for: a platform x OS version x image type, and the filters."""

    platform: str
    os_version: str
    image_type: str
    region: str | None = None
    kind: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    # The head of this channel (of the platform x OS version x image type) instead of the newest build.
    channel: str | None = None
    # Answer a revoked build's artifact instead of a 410.
    include_revoked: bool = False

    @property
    def bucket(self) -> str:
        return f"{self.platform} / {self.os_version} / {self.image_type}"

    def filters(self) -> dict[str, Any]:
        """The filters as the 404 names them (values redacted: they come from the query string)."""
        named: dict[str, Any] = {
            name: redact(value)
            for name, value in (("region", self.region), ("kind", self.kind))
            if value is not None
        }
        if self.labels:
            named["labels"] = {key: redact(value) for key, value in self.labels}
        return named

    def not_found(self, bucket_has_succeeded: bool) -> NotFound:
        bucket = self.bucket
        wanted = ", ".join(
            [f"{name} {value!r}" for name, value in (("region", self.region), ("kind", self.kind)) if value]
            + [f"label {key}={value!r}" for key, value in self.labels]
        )
        if self.channel is not None:
            detail = f"the head of channel {self.channel!r} of {bucket} has no artifact"
            detail += f" with {wanted}" if wanted else ""
        elif not bucket_has_succeeded:
            detail = f"no build of {bucket} has succeeded"
        elif wanted:
            detail = f"no succeeded build of {bucket} has an artifact with {wanted}"
        else:
            detail = f"no succeeded build of {bucket} has recorded an artifact"
        return NotFound(
            detail,
            slug="artifact-not-found",
            extra=self._named(),
        )

    def _named(self) -> dict[str, Any]:
        named = {
            "platform": self.platform,
            "os_version": self.os_version,
            "image_type": self.image_type,
            "filters": self.filters(),
        }
        if self.channel is not None:
            named["channel"] = self.channel
        return named

    def no_head(self, exists: bool) -> NotFound:
        why = "has no head (never assigned, or its head was revoked)" if exists else "does not exist"
        return NotFound(
            f"channel {self.channel!r} of {self.bucket} {why}", slug="channel-not-found", extra=self._named()
        )

    def head_not_succeeded(self, build_id: str, status: str) -> NotFound:
        return NotFound(
            f"the head of channel {self.channel!r} of {self.bucket}, build {build_id!r}, is {status}: it was "
            "reset after it was assigned, so it is no image to deploy; assign the channel again",
            slug="channel-head-not-succeeded",
            extra=self._named(),
        )

    def revoked(self, build: Build, revocation: Revocation) -> Gone:
        by = "" if not revocation.inherited else f", inherited from {revocation.revoked_by.build_id!r}"
        return Gone(
            f"build {build.build_id!r}, whose artifact this is, is revoked ({revocation.reason}{by}); "
            "deploy another build, or pass include_revoked=true to read it anyway",
            slug="build-revoked",
            extra={
                **self._named(),
                "build": str(build.id),
                "revocation": json.loads(revocation.model_dump_json()),
            },
        )


def _named(build: Build, request: ArtifactsRecord) -> dict[Key, dict[str, Any]]:
    """The request's artifacts (each platform defaulting to the build's), once each, in its order; the same
    artifact twice with other labels is refused, naming both places."""
    named: dict[Key, dict[str, Any]] = {}
    where: dict[Key, int] = {}
    for index, item in enumerate(request.artifacts):
        artifact = {
            "platform": item.platform or build.platform,
            "region": item.region,
            "kind": item.kind,
            "external_id": item.external_id,
            "labels": dict(item.labels),
        }
        key = _key(artifact)
        if key in named and named[key]["labels"] != artifact["labels"]:
            raise Unprocessable(
                f"artifacts[{index}] repeats artifacts[{where[key]}] ({describe(key)}) with other labels",
                slug="artifact-repeated",
                extra={"errors": [{"loc": f"artifacts.{index}.labels", "type": "repeated"}]},
            )
        named.setdefault(key, artifact)
        where.setdefault(key, index)
    return named


def latest_statement(dialect: Dialect, params: dict[str, Any]) -> Statement:
    """``latest`` over the bucket's succeeded builds, or over the channel's head when ``params`` has one."""
    builds = ARTIFACTS.sql("head_build" if "head" in params else "latest_builds")
    return Statement(
        ARTIFACTS.sql("latest", dialect).replace("{builds}", builds), {"assigned": None, **params}
    )


class ArtifactStore:
    def __init__(self, executor: Executor, audit: AuditLog, release: ReleaseStore) -> None:
        self._executor = executor
        self._dialect = executor.dialect
        self._audit = audit
        self._release = release

    # ------------------------------------------------------------------ writes

    async def record(self, ref: str, request: ArtifactsRecord, ctx: WriteContext) -> WriteResult:
        """Record the artifacts of the build ``ref`` names that it does not have yet, with one event."""
        provenance = request.provenance.model_dump(exclude_none=True) if request.provenance else None
        try:
            result = await self._executor.write(self._record(ref, request, provenance, ctx))
        except Problem as refused:
            await self._audit.refused(ctx, ACTION, ref, refused)
            raise
        # An image built from a known one names it (``source_image_id``: Packer's custom_data, or a
        # label): its build becomes a parent, in a transaction of its own (the release lock comes first).
        written = result.build
        if isinstance(written, ArtifactsWritten) and not result.key_replayed:
            sources = {a.labels[SOURCE_LABEL] for a in written.artifacts if SOURCE_LABEL in a.labels}
            if SOURCE_LABEL in written.labels:
                sources.add(written.labels[SOURCE_LABEL])
            if sources:
                await self._release.link_sources(written.id, sorted(sources), ctx)
        return result

    def _record(
        self, ref: str, request: ArtifactsRecord, provenance: dict[str, Any] | None, ctx: WriteContext
    ) -> Transaction[WriteResult]:
        idem = ctx.idem
        if idem is not None:
            replayed = yield from self._claim(idem)
            if replayed is not None:
                yield audit_row(AuditEntry.of(ctx, ACTION, ref, replayed.status_code, "replayed"))
                return replayed
        p = sql.Params(self._dialect)
        rows = yield Statement(sql.locked_build_query(p, ref), p.values)
        if not rows:
            raise NotFound(f"no build {ref!r}", slug="build-not-found")
        row = rows[0]
        build = sql.decode_build(self._dialect, row)
        recorded = yield from artifacts_of(self._dialect, build)
        # Only the current attempt's replay: an earlier attempt's artifact recorded again is new.
        stored = {_key(a): a for a in recorded if a.attempt == build.attempt}
        named = _named(build, request)
        for key, artifact in named.items():
            if key in stored and stored[key].labels != artifact["labels"]:
                raise Conflict(
                    f"build {ref} already has {describe(key)} with other labels; an artifact's labels are "
                    "recorded once",
                    slug="artifact-exists",
                )  # the stored labels are not shown: a write-only key may not read them
        new = [artifact for key, artifact in named.items() if key not in stored]
        if new:
            domain.allow_artifacts(
                domain.Current(build.build_id, build.state_code, build.status, build.attempt, None)
            )
            if len(recorded) + len(new) > MAX_ARTIFACTS_PER_BUILD:
                raise Conflict(
                    f"build {build.build_id} has {len(recorded)} artifacts; {len(new)} more would pass the "
                    f"{MAX_ARTIFACTS_PER_BUILD} a build may hold",
                    slug="too-many-artifacts",
                )
            # Before the event: on PostgreSQL nothing that can wait is done while the feed lock is held.
            yield audit_row(AuditEntry.of(ctx, ACTION, ref, 200, "allowed"))
            answer = yield from self._append(
                build, row, new=new, stored=stored, named=named, provenance=provenance, actor=ctx.actor
            )
        else:  # every one is known: the latest event that recorded any of them says so
            latest = max(stored[key].event_seq for key in named)
            event_rows = yield event_statement(self._dialect, latest)
            answer = ArtifactsWritten(
                **build.model_dump(),
                event=sql.decode_event(self._dialect, event_rows[0]),
                replayed=True,
                artifacts=[stored[key] for key in named],
            )
        result = WriteResult.of(answer)
        if not new:
            yield audit_row(AuditEntry.of(ctx, ACTION, ref, result.status_code, "replayed"))
        if idem is not None:
            yield idempotency.record(idem, result.status_code, result.body)
        return result

    def _claim(self, idem: Idempotency) -> Transaction[WriteResult | None]:
        """Take the key for this transaction, or the answer first recorded under it."""
        row = yield from idempotency.claim(idem)
        if row is None:
            return None
        return replay(idem, row["fingerprint"], row["status_code"], row["body"], ArtifactsWritten)

    def _append(
        self,
        build: Build,
        row: Any,
        *,
        new: list[dict[str, Any]],
        stored: dict[Key, Artifact],
        named: dict[Key, dict[str, Any]],
        provenance: dict[str, Any] | None,
        actor: str,
    ) -> Transaction[ArtifactsWritten]:
        """The event of the ``new`` artifacts, then the artifacts and the outbox; the answer."""
        side = plan.SideEvent(EventType.ARTIFACT, build, actor, None, {"artifacts": new}, provenance)
        appended = yield from append_side_event(self._dialect, side)
        seq, recorded_at = appended["seq"], appended["recorded_at"]
        yield ARTIFACTS.statement(
            "insert_artifacts",
            self._dialect,
            build=build.id,
            attempt=build.attempt,
            seq=seq,
            recorded_at=recorded_at,
            actor=actor,
            artifacts=Json(new),
        )
        recorded_at = self._dialect.time_value(recorded_at)
        made = {
            _key(a): Artifact(**a, attempt=build.attempt, event_seq=seq, recorded_at=recorded_at, actor=actor)
            for a in new
        }
        return ArtifactsWritten(
            **build.model_dump(),
            event=side.committed(seq, recorded_at),
            artifacts=[stored.get(key) or made[key] for key in named],
        )

    # ------------------------------------------------------------------ reads

    async def of_build(self, ref: str) -> ArtifactList:
        def work() -> Transaction[ArtifactList]:
            rows = yield build_statement(self._dialect, ref)
            if not rows:
                raise NotFound(f"no build {ref!r}", slug="build-not-found")
            build = sql.decode_build(self._dialect, rows[0])
            artifacts = yield from artifacts_of(self._dialect, build)
            return ArtifactList(id=build.id, build_id=build.build_id, artifacts=artifacts)

        return await self._executor.read(work(), snapshot=True)

    async def latest(self, lookup: ArtifactLookup) -> ArtifactMatch:
        """The newest matching artifact of the newest succeeded build of the lookup's platform x OS
        version x image type that has one (with ``channel``: of that channel's head); 404 naming what was not
        found, 410 when that build is revoked (unless ``include_revoked``)."""
        bucket = {
            "platform": lookup.platform,
            "os_version": lookup.os_version,
            "image_type": lookup.image_type,
        }
        filters = {"region": lookup.region, "kind": lookup.kind, "labels": Json(dict(lookup.labels))}

        def work() -> Transaction[ArtifactMatch]:
            head: dict[str, Any] = {}
            if lookup.channel is not None:
                heads = yield ARTIFACTS.statement("channel_head", **bucket, channel=lookup.channel)
                if not heads or heads[0]["build"] is None:
                    raise lookup.no_head(bool(heads))
                if heads[0]["head_status"] != SUCCEEDED:
                    raise lookup.head_not_succeeded(heads[0]["head_build_id"], heads[0]["head_status"])
                head = {"head": heads[0]["build"], "assigned": heads[0]["assigned"]}
            rows = yield latest_statement(self._dialect, {**bucket, **head, **filters})
            if not rows:
                succeeded = [True] if head else (yield ARTIFACTS.statement("succeeded_in_bucket", **bucket))
                raise lookup.not_found(bool(succeeded))
            found = sql.decode_artifact(self._dialect, rows[0])
            made = yield build_statement(self._dialect, str(rows[0]["build"]))
            build = sql.decode_build(self._dialect, made[0])
            if not lookup.include_revoked:
                live = yield from live_revocations(self._dialect, [build.id])
                if build.id in live:
                    raise lookup.revoked(build, live[build.id])
            return ArtifactMatch(**found.model_dump(), build=build)

        return await self._executor.read(work(), snapshot=True)
