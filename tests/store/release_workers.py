"""What the race tests of ``test_release_races.py`` run in each of their processes: a store of its own on the
test's database, a start signal shared by all, then a bounded loop of release writes."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from buildstate.config import Settings
from buildstate.errors import Conflict
from buildstate.models import ChannelAssign, ResetRequest, RestoreRequest, RevokeRequest
from buildstate.store import create_store
from buildstate.store.types import Idempotency, WriteContext

BUCKET = {"platform": "aws", "os_version": "rhel-8.8", "image_type": "base"}


async def _run(url: str, start: Any, job: str, builds: list[str], *, rounds: int, seed: int) -> list[str]:
    store = create_store(Settings(database_url=url, redis_url=None))
    await store.open()
    outcomes: list[str] = []
    ctx = WriteContext(actor=f"worker-{seed}")
    chooser = random.Random(seed)
    try:
        start.wait(60)
        for n in range(rounds):
            try:
                if job == "assign":
                    build = builds[(seed + n) % len(builds)] if len(builds) == 2 else chooser.choice(builds)
                    request = ChannelAssign(build=build, reason=f"{seed}-{n}", **BUCKET)
                    result = await store.release.assign("production", request, ctx)
                    outcomes.append("replayed" if result.replayed else "moved")
                elif job == "revoke":
                    build = builds[n % len(builds)]
                    await store.release.revoke(build, RevokeRequest(reason=f"r{n}"), ctx)
                    await store.release.restore(build, RestoreRequest(reason=f"ok{n}"), ctx)
                    outcomes.append("cycled")
                elif job == "churn":  # the locking path of a build write (a key), against revocations
                    key = Idempotency.for_request(ctx.actor, f"{seed}-{n}", "POST", "/reset", b"")
                    keyed = WriteContext(actor=ctx.actor, idem=key)
                    await store.reset_build(builds[n % len(builds)], ResetRequest(reason="again"), keyed)
                    outcomes.append("reset")
                else:  # fire: until nothing is due, a bounded number of times
                    outcomes.extend(["fired"] * await store.release.fire_due(ctx))
                    time.sleep(0.01)
            except Conflict as refused:
                outcomes.append(refused.type_slug)
    finally:
        await store.close()
    return outcomes


def work(url: str, start: Any, job: tuple[str, list[str], int], seed: int) -> list[str]:
    kind, builds, rounds = job
    return asyncio.run(_run(url, start, kind, builds, rounds=rounds, seed=seed))
