"""Ancestry, channels and revocations: which build is built on which, which to use, which never to use again.

One repository over the store's executor (SQL in ``queries/release.sql``); its events leave their builds as
they are (``builds.append_side_event``, as an artifact's).

Every write here runs in one transaction under the **release lock**, taken first: on PostgreSQL a
transaction-level advisory lock, on SQLite the one writer it has anyway. Assignments, revocations,
restores, new parent links and the firing of scheduled revocations are therefore one at a time across every
worker and instance, which is what makes the rules hold under races: two assignments to one channel are two
history rows in order and one head; an assignment and a revocation of the same build are ordered too, so a
revoked build never stays a head (a revocation empties every channel its builds head, and an assignment
refuses a revoked build); a scheduled revocation is claimed by the transaction that fires it, once. These
writes are rare (people and promotion jobs); the build writes, the hot path, never take the lock. Lock
order: idempotency key, release lock, the build rows (``FOR KEY SHARE``: those its inserts refer to, and
``hold_builds`` for those it appends events for), then the feed lock: a transaction appends its events last,
so it never waits for a build row while holding the feed lock that a build write holding that row waits
for, and holds the feed lock as briefly as it can.

**A revoked head leaves its channel empty** (no head), never the previous head: whatever came before was
replaced for a reason (often the fix the revoked build carried), so falling back would deploy something
nobody chose. A restore does not put a build back either; assigning it again is a decision of its own.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

from pydantic import BaseModel

from buildstate.domain import EVENT_RULES, SUCCEEDED, EventType
from buildstate.errors import Conflict, Forbidden, NotFound, Problem, Unprocessable
from buildstate.models import (
    MAX_PARENTS,
    Ancestry,
    AncestryEdge,
    AncestryNode,
    Build,
    BuildIdent,
    Channel,
    ChannelAssign,
    ChannelAssigned,
    ChannelDetail,
    ChannelList,
    ChannelMove,
    ParentItem,
    ParentLink,
    RestoreRequest,
    Revocation,
    RevocationResult,
    RevokeRequest,
)
from buildstate.store import idempotency, plan, sql
from buildstate.store.audit import AuditLog
from buildstate.store.audit import insert as audit_row
from buildstate.store.builds import append_side_event
from buildstate.store.executor import Executor, Json, Row, Statement, Transaction
from buildstate.store.queries import Queries
from buildstate.store.sql import Dialect
from buildstate.store.types import AuditEntry, WriteContext

RELEASE = Queries("release")
RELEASE_LOCK = 0x72656C65617365  # "release" in ASCII
M = TypeVar("M", bound=BaseModel)

# Bounds: one answer's relatives, how far a walk goes, how many builds one revocation may reach, the
# history one answer lists, the scheduled revocations one pass fires.
MAX_ANCESTRY_NODES = 1000
MAX_DEPTH = 64
MAX_REACH = 10_000
MAX_HISTORY = 500
DUE_BATCH = 100


@dataclass(frozen=True, slots=True)
class Released:
    """A release write's answer, as committed (or as first given under its ``Idempotency-Key``)."""

    body: bytes
    status_code: int
    replayed: bool


def _now() -> datetime:
    return datetime.now(UTC)


def _ids(uuids: Iterable[UUID]) -> Json:
    """A list of build ids as one parameter (``uuid[]`` on PostgreSQL, JSON for SQLite's ``json_each``)."""
    return Json([str(u) for u in uuids])


def bucket_of(build: Build) -> str:
    return f"{build.platform}/{build.os_version}/{build.image_type}"


class ReleaseStore:
    def __init__(self, executor: Executor, audit: AuditLog) -> None:
        self._executor = executor
        self._audit = audit
        self._dialect = executor.dialect

    def _append(self, event: plan.SideEvent) -> Transaction[int]:
        appended = yield from append_side_event(self._dialect, event)
        return int(appended["seq"])

    # ------------------------------------------------------------------ the write path

    async def _write(
        self,
        ctx: WriteContext,
        action: str,
        target: str,
        work: Callable[[datetime], Transaction[tuple[M, bool]]],
    ) -> Released:
        """``work(now)`` under the release lock with its idempotency record and audit row, in one
        transaction; ``work`` returns its answer and whether it was a replay (nothing changed)."""
        idem = ctx.idem

        def transaction() -> Transaction[Released]:
            now = _now()
            if idem is not None:
                first = yield from idempotency.claim(idem)
                if first is not None:
                    done = Released(str(first["body"]).encode(), int(first["status_code"]), True)
                    yield audit_row(AuditEntry.of(ctx, action, target, done.status_code, "replayed"))
                    return done
            yield RELEASE.statement("release_lock", self._dialect, lock=RELEASE_LOCK)
            model, replayed = yield from work(now)
            body = model.model_dump_json().encode()
            if idem is not None:
                yield idempotency.record(idem, 200, body)
            outcome = "replayed" if replayed else "allowed"
            yield audit_row(AuditEntry.of(ctx, action, target, 200, outcome))
            return Released(body, 200, replayed)

        try:
            return await self._executor.write(transaction())
        except Problem as refused:
            await self._audit.refused(ctx, action, target, refused)
            raise

    # ------------------------------------------------------------------ reading rows

    def _build_rows(self, condition: Callable[[sql.Params], str]) -> Transaction[list[Build]]:
        p = sql.Params(self._dialect)
        where = condition(p)
        rows = yield Statement(f"SELECT {sql.BUILD_COLUMNS} {sql.BUILD_FROM} WHERE {where}", p.values)
        return [sql.decode_build(self._dialect, row) for row in rows]

    def _build(self, ref: str, *, field: str | None = None) -> Transaction[Build]:
        """The build ``ref`` names: 404, or 422 naming ``field`` when the reference came in a body."""
        found = yield from self._build_rows(lambda p: sql.ref_condition(p, ref))
        if not found:
            if field is not None:
                raise Unprocessable(f"{field}: no build {ref!r}", slug="build-not-found")
            raise NotFound(f"no build {ref!r}", slug="build-not-found")
        return found[0]

    def _builds(self, uuids: Sequence[UUID]) -> Transaction[dict[UUID, Build]]:
        if not uuids:
            return {}
        ids = list(dict.fromkeys(uuids))
        found = yield from self._build_rows(
            lambda p: f"b.id IN ({', '.join(p(self._dialect.uuid_param(u)) for u in ids)})"
        )
        return {b.id: b for b in found}

    def _revocation(self, row: Row) -> Revocation:
        return decode_revocation(self._dialect, row)

    def _live(self, uuids: Sequence[UUID]) -> Transaction[dict[UUID, Revocation]]:
        return (yield from live_revocations(self._dialect, uuids))

    def _one_revocation(self, name: str, **params: Any) -> Transaction[Revocation | None]:
        rows = yield RELEASE.statement(name, **params)
        return self._revocation(rows[0]) if rows else None

    def _hold(self, uuids: Sequence[UUID]) -> Transaction[None]:
        """Hold the builds this transaction appends events for, before its first append takes the feed lock
        (``queries/release.sql``, ``hold_builds``)."""
        if uuids:
            yield RELEASE.statement("hold_builds", self._dialect, uuids=_ids(uuids))

    # ------------------------------------------------------------------ ancestry

    async def add_parents(
        self, ref: str, parents: Sequence[ParentItem], ctx: WriteContext, *, may_revoke: bool = True
    ) -> Released:
        """Link ``ref`` to ``parents`` (a replay when every edge exists); refuses itself, a cycle, more than
        ``MAX_PARENTS``. A child of a revoked build inherits its revocations, as a descendant does: a
        revocation of an existing build, which without ``may_revoke`` (the ``release`` scope) is refused
        (403), else a write key could revoke any build it may write, and empty its channels, by linking
        it under a revoked one."""

        def work(now: datetime) -> Transaction[tuple[Ancestry, bool]]:
            child = yield from self._build(ref)
            added = yield from self._link(child, parents, ctx.actor, now, source="api", may_revoke=may_revoke)
            ancestry = yield from self._ancestry(child.id)
            return ancestry, not added

        return await self._write(ctx, "build.parents", ref, work)

    async def link_created(
        self, build: UUID, parents: Sequence[ParentItem], ctx: WriteContext, *, may_revoke: bool
    ) -> None:
        """The parents named in ``POST /builds``, linked once the build exists (a replay links nothing);
        ``may_revoke`` as in ``add_parents`` (a build that existed already may head a channel)."""
        plain = WriteContext(actor=ctx.actor, request_id=ctx.request_id, source=ctx.source)
        await self.add_parents(str(build), parents, plain, may_revoke=may_revoke)

    async def check_parents(self, build_id: str, parents: Sequence[ParentItem]) -> None:
        """Before a create: every parent exists and is not the build being created (422 naming it)."""

        def work() -> Transaction[None]:
            for index, item in enumerate(parents):
                ref = item.build if isinstance(item, ParentLink) else item
                parent = yield from self._build(ref, field=f"parents.{index}")
                if parent.build_id == build_id:
                    raise Unprocessable(
                        f"parents.{index}: a build cannot be its own parent", slug="parent-is-self"
                    )

        await self._executor.read(work())

    def _link(
        self,
        child: Build,
        parents: Sequence[ParentItem],
        actor: str,
        now: datetime,
        *,
        source: str,
        may_revoke: bool = True,
    ) -> Transaction[int]:
        """Add the edges that are new; the events of inherited revocations are appended at the end."""
        added = 0
        for index, item in enumerate(parents):
            link = item if isinstance(item, ParentLink) else ParentLink(build=item)
            parent = yield from self._build(link.build, field=f"parents.{index}")
            cycle = yield RELEASE.statement("is_ancestor", of=parent.id, candidate=child.id)
            if cycle:
                what = "itself" if parent.id == child.id else f"its descendant {parent.build_id!r}"
                raise Conflict(
                    f"build {child.build_id!r} cannot have {what} as a parent: ancestry has no cycles",
                    slug="ancestry-cycle",
                )
            rows = yield RELEASE.statement(
                "add_parent", child=child.id, parent=parent.id, channel=link.channel, source=source,
                actor=actor, now=now,
            )  # fmt: skip
            if not rows:
                continue
            added += 1
            counted = yield RELEASE.statement("parent_count", child=child.id)
            if int(counted[0]["n"]) > MAX_PARENTS:
                raise Unprocessable(
                    f"build {child.build_id!r} would have more than {MAX_PARENTS} parents",
                    slug="too-many-parents",
                )
            causes = yield RELEASE.statement("causes_of", build=parent.id)
            if causes and not may_revoke:
                raise Forbidden(
                    f"parents.{index}: build {parent.build_id!r} is revoked, so linking {child.build_id!r} "
                    "to it revokes that build too: that needs the 'release' scope (release keys, operator "
                    "and admin users)",
                    slug="missing-scope",
                    extra={"missing_scope": "release"},
                )
            for cause in causes:
                yield from self._reach(
                    child.id, cause["cause"], self._dialect.uuid_value(cause["revoked_by"]),
                    reason=cause["reason"], actor=cause["actor"], at=self._dialect.time_value(cause["at"]),
                    now=now,
                )  # fmt: skip
        if added:
            yield from self._settle(actor, now)
        return added

    async def link_sources(self, build: UUID, external_ids: Sequence[str], ctx: WriteContext) -> Released:
        """Link ``build`` to the builds that recorded an artifact with one of these external ids (source
        ``artifact``): for each id it names as ``source_image_id``, the build that recorded it first (a later
        copy of the id, by anyone, links nothing). One that is the build itself, would close a
        cycle, or would pass ``MAX_PARENTS`` is left out: the artifacts are recorded already, and a link
        that cannot be made must not make their answer a refusal."""
        plain = WriteContext(actor=ctx.actor, request_id=ctx.request_id, source=ctx.source)

        def work(now: datetime) -> Transaction[tuple[Ancestry, bool]]:
            child = yield from self._build(str(build))
            found = yield RELEASE.statement("sources", self._dialect, ids=Json(list(external_ids)))
            present = yield RELEASE.statement("parents_of", child=child.id)
            have = {self._dialect.uuid_value(r["parent_uuid"]) for r in present}
            links: list[ParentItem] = []
            for row in found:
                parent = self._dialect.uuid_value(row["build"])
                if parent in have or len(have) + len(links) >= MAX_PARENTS:
                    continue
                cycle = yield RELEASE.statement("is_ancestor", of=parent, candidate=child.id)
                if not cycle:
                    links.append(str(parent))
            added = yield from self._link(child, links, ctx.actor, now, source="artifact")
            ancestry = yield from self._ancestry(child.id)
            return ancestry, not added

        return await self._write(plain, "build.parents", str(build), work)

    async def ancestry(self, ref: str) -> Ancestry:
        def work() -> Transaction[Ancestry]:
            build = yield from self._build(ref)
            return (yield from self._ancestry(build.id))

        return await self._executor.read(work(), snapshot=True)

    def _ancestry(self, build: UUID) -> Transaction[Ancestry]:
        d = self._dialect
        rows = yield RELEASE.statement(
            "ancestry", build=build, max_depth=MAX_DEPTH, limit=MAX_ANCESTRY_NODES + 1
        )
        truncated = len(rows) > MAX_ANCESTRY_NODES
        places = [
            (d.uuid_value(r["uuid"]), r["relation"], int(r["depth"])) for r in rows[:MAX_ANCESTRY_NODES]
        ]
        uuids = [u for u, _, _ in places]
        builds = yield from self._builds(uuids)
        live = yield from self._live(uuids)
        edge_rows = yield RELEASE.statement("edges_of", d, uuids=_ids(uuids))
        stale_rows = yield RELEASE.statement("stale_edges", d, uuids=_ids(uuids))
        stale = {(d.uuid_value(r["child_uuid"]), d.uuid_value(r["parent_uuid"])) for r in stale_rows}
        edges = [
            AncestryEdge(
                child=d.uuid_value(r["child_uuid"]),
                parent=d.uuid_value(r["parent_uuid"]),
                channel=r["channel"],
                source=r["source"],
                created_at=d.time_value(r["created_at"]),
                out_of_date=(d.uuid_value(r["child_uuid"]), d.uuid_value(r["parent_uuid"])) in stale,
            )
            for r in edge_rows
        ]
        stale_children = {child for child, _ in stale}
        nodes = [
            AncestryNode(
                build=builds[u], relation=relation, depth=depth, revocation=live.get(u),
                out_of_date=u in stale_children,
            )
            for u, relation, depth in places
            if u in builds
        ]  # fmt: skip
        return Ancestry(build=build, nodes=nodes, edges=edges, truncated=truncated)

    # ------------------------------------------------------------------ revocations

    def _reach(
        self,
        root: UUID,
        cause: int,
        revoked_by: UUID,
        *,
        reason: str,
        actor: str,
        at: datetime,
        now: datetime,
        bounded: bool = True,
    ) -> Transaction[list[tuple[int, UUID]]]:
        """The revocation ``cause`` of ``revoked_by`` reaches ``root`` and its descendants (not the revoked
        build itself): one inherited row each, for the builds that have none of it yet. ``bounded``: 422
        beyond ``MAX_REACH`` builds (a request can be refused; a scheduled revocation coming due cannot)."""
        if bounded:
            yield from self._check_reach(root)
        rows = yield RELEASE.statement(
            "inherit", root=root, revoked_by=revoked_by, cause=cause, reason=reason, actor=actor, at=at,
            now=now,
        )  # fmt: skip
        return [(int(r["id"]), self._dialect.uuid_value(r["build_uuid"])) for r in rows]

    def _check_reach(self, root: UUID) -> Transaction[None]:
        counted = yield RELEASE.statement("subtree_size", root=root, limit=MAX_REACH + 2)
        if int(counted[0]["n"]) > MAX_REACH + 1:
            raise Unprocessable(
                f"this revocation would reach more than {MAX_REACH} builds; split the ancestry first",
                slug="revocation-too-wide",
            )

    def _settle(self, actor: str, now: datetime) -> Transaction[list[str]]:
        """After revocations changed: empty every channel whose head is revoked (its history row and event),
        and append a ``revoked`` event for every revocation fired in this transaction that has none yet.
        Last in a transaction, so that the feed lock is held from here to the commit only."""
        emptied = []
        heads = yield RELEASE.statement("revoked_heads")
        moves = []
        for row in heads:
            head = self._dialect.uuid_value(row["head_uuid"])
            yield RELEASE.statement("empty_channel", id=row["id"], now=now)
            [live] = (yield from self._live([head])).values()
            reason = f"revoked: {live.reason}"
            added = yield RELEASE.statement(
                "add_move", channel=row["id"], from_build=head, to_build=None, cause="revoked", reason=reason,
                actor=actor, now=now,
            )  # fmt: skip
            moves.append((int(added[0]["id"]), row["name"], head, reason))
        pending = yield RELEASE.statement("unannounced")
        revocations = [self._revocation(row) for row in pending]
        builds = yield from self._builds([r.build for r in revocations] + [m[2] for m in moves])
        yield from self._hold(list(builds))
        for revocation in revocations:
            seq = yield from self._append(
                plan.SideEvent(
                    EventType.REVOKED, builds[revocation.build], revocation.actor, revocation.reason,
                    _revocation_detail(revocation),
                )
            )  # fmt: skip
            yield RELEASE.statement("set_event", id=revocation.id, seq=seq)
        for move_id, name, head, reason in moves:
            build = builds[head]
            emptied.append(f"{name}@{bucket_of(build)}")
            detail = {
                "channel": name, "from": str(head), "from_build_id": build.build_id, "to": None,
                "to_build_id": None, "cause": "revoked", "move": move_id,
            }  # fmt: skip
            seq = yield from self._append(plan.SideEvent(EventType.CHANNEL, build, actor, reason, detail))
            yield RELEASE.statement("set_move_event", id=move_id, seq=seq)
        return emptied

    def _fire(
        self, revocation_id: int, actor: str, now: datetime, *, bounded: bool = True
    ) -> Transaction[list[UUID]]:
        """Put the own revocation ``revocation_id`` in force and pass it on to every descendant; the
        descendants it reached. Nothing if it was fired or lifted already (a second worker, a restore).
        A scheduled one fires ``bounded=False``: it was held to ``MAX_REACH`` when it was scheduled, and
        refusing it now would fail every pass of the scheduler, with the rest of its batch, for ever."""
        fired = yield RELEASE.statement("fire_revocation", id=revocation_id, now=now)
        if not fired:
            return []
        revocation = yield from self._one_revocation("revocation", id=revocation_id)
        if revocation is None:  # pragma: no cover - the row was just updated
            raise RuntimeError("fired revocation vanished")
        reached = yield from self._reach(
            revocation.build, revocation.id, revocation.build, reason=revocation.reason,
            actor=revocation.actor, at=revocation.at, now=now, bounded=bounded,
        )  # fmt: skip
        return [build for _, build in reached]

    async def revoke(self, ref: str, request: RevokeRequest, ctx: WriteContext) -> Released:
        def work(now: datetime) -> Transaction[tuple[RevocationResult, bool]]:
            build = yield from self._build(ref)
            current = yield from self._one_revocation("own_revocation", build=build.id)
            asked_now = request.at is None or request.at <= now
            scheduled = current is not None and current.fired_at is None
            if current is not None and scheduled and asked_now and current.reason == request.reason:
                # Scheduled for later and asked for now (the same reason, no later time): now.
                yield RELEASE.statement("bring_forward", id=current.id, now=now)
                return (yield from fired(current.id, now))
            if current is not None:
                if current.reason == request.reason and (request.at is None or request.at == current.at):
                    state = "revoked" if current.fired_at else "scheduled"
                    result = RevocationResult(
                        build=build, revocation=current, state=state, inherited=[], channels_emptied=[],
                        replayed=True,
                    )  # fmt: skip
                    return result, True
                when = (
                    "revoked" if current.fired_at else f"scheduled to be revoked at {current.at.isoformat()}"
                )
                raise Conflict(
                    f"build {build.build_id!r} is already {when} ({current.reason!r}); restore it first",
                    slug="build-revoked",
                    extra={"revocation": current.id},
                )
            at = request.at if request.at is not None and request.at > now else now
            if at > now:  # refused now, not when it comes due (an immediate one is checked as it fires)
                yield from self._check_reach(build.id)
            rows = yield RELEASE.statement(
                "insert_revocation", build=build.id, reason=request.reason, actor=ctx.actor, at=at, now=now
            )
            return (yield from fired(int(rows[0]["id"]), now))

        def fired(revocation_id: int, now: datetime) -> Transaction[tuple[RevocationResult, bool]]:
            """The answer for the own revocation ``revocation_id``, fired first when its time has come."""
            revocation = yield from self._one_revocation("revocation", id=revocation_id)
            assert revocation is not None  # noqa: S101 - inserted or brought forward by the caller
            build_uuid = revocation.build
            reached: list[UUID] = []
            emptied: list[str] = []
            due = revocation.at <= now
            if due:
                reached = yield from self._fire(revocation_id, ctx.actor, now)
                emptied = yield from self._settle(ctx.actor, now)
                revocation = yield from self._one_revocation("revocation", id=revocation_id)
                assert revocation is not None  # noqa: S101 - fired above
            named = yield from self._builds([build_uuid, *reached])
            result = RevocationResult(
                build=named[build_uuid], revocation=revocation, state="revoked" if due else "scheduled",
                inherited=[
                    BuildIdent(id=b.id, build_id=b.build_id) for b in named.values() if b.id != build_uuid
                ],
                channels_emptied=emptied,
            )  # fmt: skip
            return result, False

        return await self._write(ctx, EVENT_RULES[EventType.REVOKED].action, ref, work)

    async def restore(self, ref: str, request: RestoreRequest, ctx: WriteContext) -> Released:
        def work(now: datetime) -> Transaction[tuple[RevocationResult, bool]]:
            build = yield from self._build(ref)
            current = yield from self._one_revocation("own_revocation", build=build.id)
            if current is None:
                last = yield from self._one_revocation("last_own_revocation", build=build.id)
                live = yield from self._live([build.id])
                if last is not None and last.lift_reason == request.reason and build.id not in live:
                    result = RevocationResult(
                        build=build, revocation=last, state="restored", inherited=[], channels_emptied=[],
                        replayed=True,
                    )  # fmt: skip
                    return result, True
                hint = ""
                if build.id in live:
                    by = live[build.id].revoked_by
                    hint = f"; it inherits a revocation of {by.build_id!r}: restore that build instead"
                raise Conflict(
                    f"build {build.build_id!r} has no revocation of its own{hint}", slug="build-not-revoked"
                )
            lifted = yield RELEASE.statement(
                "lift", id=current.id, actor=ctx.actor, reason=request.reason, now=now
            )
            fired = [
                (int(r["id"]), self._dialect.uuid_value(r["build_uuid"])) for r in lifted if r["fired_at"]
            ]
            builds = yield from self._builds([u for _, u in fired])
            yield from self._hold(list(builds))
            still = yield RELEASE.statement("still_revoked", self._dialect, uuids=_ids(builds))
            still_revoked = {self._dialect.uuid_value(r["build_uuid"]) for r in still}
            for revocation_id, uuid in fired:
                detail = {
                    "revocation": revocation_id, "revoked_by": str(build.id),
                    "revoked_by_build_id": build.build_id, "inherited": uuid != build.id,
                    "revocation_reason": current.reason, "still_revoked": uuid in still_revoked,
                }  # fmt: skip
                event = plan.SideEvent(EventType.RESTORED, builds[uuid], ctx.actor, request.reason, detail)
                yield from self._append(event)
            restored = yield from self._one_revocation("revocation", id=current.id)
            assert restored is not None  # noqa: S101 - lifted above
            result = RevocationResult(
                build=build, revocation=restored, state="restored",
                inherited=[
                    BuildIdent(id=u, build_id=builds[u].build_id) for _, u in fired if u != build.id
                ],
                channels_emptied=[],
            )  # fmt: skip
            return result, False

        return await self._write(ctx, EVENT_RULES[EventType.RESTORED].action, ref, work)

    async def fire_due(self, ctx: WriteContext) -> int:
        """Fire the scheduled revocations whose time has come (every worker of every instance calls this;
        each revocation is fired by exactly one of them, under the release lock); how many."""

        def transaction() -> Transaction[int]:
            yield RELEASE.statement("release_lock", self._dialect, lock=RELEASE_LOCK)
            now = _now()
            due = yield RELEASE.statement("due", now=now, limit=DUE_BATCH)
            for row in due:
                yield from self._fire(int(row["id"]), ctx.actor, now, bounded=False)
            fired = len(due)
            if fired:
                yield from self._settle(ctx.actor, now)
                yield audit_row(
                    AuditEntry(
                        ctx.actor, "build.revoke.scheduled", None, "allowed", 200, detail={"fired": fired}
                    )
                )
            return fired

        return await self._executor.write(transaction())

    async def live_revocation(self, build: UUID) -> Revocation | None:
        """The revocation in force of ``build`` (its own first), if it has one."""
        return (await self._executor.read(self._live([build]))).get(build)

    # ------------------------------------------------------------------ channels

    async def assign(self, name: str, request: ChannelAssign, ctx: WriteContext) -> Released:
        def work(now: datetime) -> Transaction[tuple[ChannelAssigned, bool]]:
            build = yield from self._build(request.build, field="build")
            wanted = f"{request.platform}/{request.os_version}/{request.image_type}"
            if bucket_of(build) != wanted:
                raise Conflict(
                    f"build {build.build_id!r} is of {bucket_of(build)}, not {wanted}: a channel holds "
                    "builds of its own platform x OS version x image type",
                    slug="wrong-bucket",
                )
            if build.status != SUCCEEDED:
                raise Conflict(
                    f"build {build.build_id!r} is {build.status} at state {build.state_code}: only a "
                    "succeeded build can be assigned to a channel",
                    slug="build-not-succeeded",
                )
            live = yield from self._live([build.id])
            if build.id in live:
                revocation = live[build.id]
                by = (
                    ""
                    if not revocation.inherited
                    else f" (inherited from {revocation.revoked_by.build_id!r})"
                )
                raise Conflict(
                    f"build {build.build_id!r} is revoked{by}: {revocation.reason}; restore it first",
                    slug="build-revoked",
                    extra={"revocation": revocation.id},
                )
            yield RELEASE.statement("ensure_channel", name=name, build=build.id, now=now)
            [row] = yield RELEASE.statement("channel_of_build", name=name, build=build.id)
            labels = self._dialect.json_value(row["required_labels"])
            if request.requires is not None:
                labels = request.requires.labels
            missing = {k: v for k, v in labels.items() if build.labels.get(k) != v}
            if missing:
                spelled = ", ".join(f"{k}={v}" for k, v in sorted(missing.items()))
                raise Conflict(
                    f"build {build.build_id!r} does not meet channel {name!r}'s requirements: it lacks the "
                    f"label(s) {spelled}",
                    slug="channel-requirements",
                    extra={"missing_labels": missing},
                )
            head = None if row["head_uuid"] is None else self._dialect.uuid_value(row["head_uuid"])
            if head == build.id:  # the same head again: a replay, unless it changes the requirements
                unchanged = labels == self._dialect.json_value(row["required_labels"])
                if not unchanged:
                    yield RELEASE.statement("set_requirements", id=row["id"], labels=Json(labels), now=now)
                channel = yield from self._channel_by_id(int(row["id"]))
                return ChannelAssigned(channel=channel, move=None, replayed=unchanged), unchanged
            yield RELEASE.statement("set_head", id=row["id"], head=build.id, labels=Json(labels), now=now)
            added = yield RELEASE.statement(
                "add_move", channel=row["id"], from_build=head, to_build=build.id, cause="assign",
                reason=request.reason, actor=ctx.actor, now=now,
            )  # fmt: skip
            move_id = int(added[0]["id"])
            previous = None
            if head is not None:
                previous = (yield from self._builds([head])).get(head)
            detail = {
                "channel": name, "from": str(head) if head else None,
                "from_build_id": previous.build_id if previous else None, "to": str(build.id),
                "to_build_id": build.build_id, "cause": "assign", "move": move_id,
            }  # fmt: skip
            seq = yield from self._append(
                plan.SideEvent(EventType.CHANNEL, build, ctx.actor, request.reason, detail)
            )
            yield RELEASE.statement("set_move_event", id=move_id, seq=seq)
            channel = yield from self._channel_by_id(int(row["id"]))
            history = yield from self._history(int(row["id"]), 1)
            return ChannelAssigned(channel=channel, move=history[0]), False

        target = f"channel:{name}@{request.platform}/{request.os_version}/{request.image_type}"
        return await self._write(ctx, EVENT_RULES[EventType.CHANNEL].action, target, work)

    def _channel_rows(
        self, condition: Callable[[sql.Params], list[str]], limit: int
    ) -> Transaction[list[tuple[int, Channel]]]:
        p = sql.Params(self._dialect)
        conditions = condition(p)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        rows = yield Statement(
            f"{RELEASE.sql('channels')} {where} ORDER BY c.name, pl.name, o.name, t.name LIMIT {p(limit)}",
            p.values,
        )
        d = self._dialect
        heads = yield from self._builds(
            [d.uuid_value(r["head_uuid"]) for r in rows if r["head_uuid"] is not None]
        )
        return [
            (int(r["id"]), Channel(
                name=r["name"], platform=r["platform"], os_version=r["os_version"],
                image_type=r["image_type"],
                head=heads.get(d.uuid_value(r["head_uuid"])) if r["head_uuid"] is not None else None,
                requires={"labels": d.json_value(r["required_labels"])}, moves=r["moves"],
                created_at=d.time_value(r["created_at"]), updated_at=d.time_value(r["updated_at"]),
            ))
            for r in rows
        ]  # fmt: skip

    def _channel_by_id(self, channel_id: int) -> Transaction[Channel]:
        [(_, channel)] = yield from self._channel_rows(lambda p: [f"c.id = {p(channel_id)}"], 1)
        return channel

    def _history(self, channel_id: int, limit: int) -> Transaction[list[ChannelMove]]:
        d = self._dialect
        rows = yield RELEASE.statement("history", channel=channel_id, limit=limit)

        def ident(uuid: Any, build_id: Any) -> BuildIdent | None:
            return None if uuid is None else BuildIdent(id=d.uuid_value(uuid), build_id=build_id)

        return [
            ChannelMove(
                id=r["id"], from_build=ident(r["from_uuid"], r["from_build_id"]),
                to_build=ident(r["to_uuid"], r["to_build_id"]), cause=r["cause"], reason=r["reason"],
                actor=r["actor"], at=d.time_value(r["at"]), event_seq=r["event_seq"],
            )
            for r in rows
        ]  # fmt: skip

    async def list_channels(self, name: str | None, bucket: dict[str, str | None], limit: int) -> ChannelList:
        def condition(p: sql.Params) -> list[str]:
            found = [f"c.name = {p(name)}"] if name is not None else []
            for column, table in sql.LOOKUP_TABLES.items():
                value = bucket.get(column)
                if value is not None:
                    found.append(f"c.{column}_id = (SELECT id FROM {table} WHERE name = {p(value)})")
            return found

        rows = await self._executor.read(self._channel_rows(condition, limit))
        return ChannelList(channels=[channel for _, channel in rows])

    async def channel(self, name: str, bucket: dict[str, str], limit: int) -> ChannelDetail:
        def work() -> Transaction[ChannelDetail]:
            def condition(p: sql.Params) -> list[str]:
                found = [f"c.name = {p(name)}"]
                for column, table in sql.LOOKUP_TABLES.items():
                    found.append(f"c.{column}_id = (SELECT id FROM {table} WHERE name = {p(bucket[column])})")
                return found

            channels = yield from self._channel_rows(condition, 1)
            if not channels:
                spelled = "/".join(bucket[c] for c in sql.LOOKUP_TABLES)
                raise NotFound(f"no channel {name!r} for {spelled}", slug="channel-not-found")
            [(channel_id, channel)] = channels
            history = yield from self._history(channel_id, limit)
            return ChannelDetail(channel=channel, history=history)

        return await self._executor.read(work(), snapshot=True)


def decode_revocation(d: Dialect, row: Row) -> Revocation:
    def time(name: str) -> datetime | None:
        return None if row[name] is None else d.time_value(row[name])

    return Revocation(
        id=row["id"],
        build=d.uuid_value(row["build_uuid"]),
        revoked_by=BuildIdent(id=d.uuid_value(row["revoked_by"]), build_id=row["revoked_by_build_id"]),
        inherited=row["cause_id"] is not None,
        reason=row["reason"],
        actor=row["actor"],
        at=d.time_value(row["at"]),
        created_at=d.time_value(row["created_at"]),
        fired_at=time("fired_at"),
        lifted_at=time("lifted_at"),
        lifted_by=row["lifted_by"],
        lift_reason=row["lift_reason"],
    )


def live_revocations(d: Dialect, uuids: Sequence[UUID]) -> Transaction[dict[UUID, Revocation]]:
    """The revocation in force of each of these builds that has one (its own first)."""
    if not uuids:
        return {}
    rows = yield RELEASE.statement("live_revocations", d, uuids=_ids(uuids))
    live: dict[UUID, Revocation] = {}
    for row in rows:
        revocation = decode_revocation(d, row)
        live.setdefault(revocation.build, revocation)
    return live


def _revocation_detail(revocation: Revocation) -> dict[str, Any]:
    detail: dict[str, Any] = json.loads(
        revocation.model_dump_json(include={"id", "inherited", "reason", "at"})
    )
    detail["revocation"] = detail.pop("id")
    detail["revoked_by"] = str(revocation.revoked_by.id)
    detail["revoked_by_build_id"] = revocation.revoked_by.build_id
    return detail
