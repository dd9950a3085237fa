"""``python -m bench <scenario>... | all``: scenarios and the ceilings that bound them, in one run.

    python -m bench all                       everything (about 15 minutes; scale to 100k builds)
    python -m bench state --store postgresql  one scenario on one store
    python -m bench scale --sizes 10000,100000,1000000   the 1M run (about 15 more minutes; never in CI)
    python -m bench all --smoke               2 s per measurement, 10k builds: what the test runs

Results go to ``--out`` (default ``artifacts/bench``): ``results.json``, ``results.md`` and PNG plots.
Every load is bounded (``--seconds`` per measurement, wrk's socket timeout) and sent to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import dataset, pg, report, resource_procs, scale, servers, store_ceiling, wrk
from bench import db as databases

SCENARIOS = (
    "framework",
    "store",
    "reference",
    "get",
    "check",
    "summary",
    "state",
    "pipeline",
    "curve",
    "resource",
    "scale",
)
STORES = ("postgresql", "sqlite")
CONNECTIONS = 32  # service scenarios: 2 workers x pool of 4 are busy well before this
CEILING_CONNECTIONS = 64
HISTORY_BUILDS = 10_000
CURVE_FRACTIONS = (0.1, 0.25, 0.5, 0.75, 0.9)


class Run:
    """One bench run: its settings, its results, and the servers it keeps (idle ones cost no CPU)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.seconds: float = args.seconds
        self.rounds: int = args.rounds
        self.stores: list[str] = args.store
        self.sizes: list[int] = args.sizes
        self.out: Path = args.out
        self.work = self.out / "work"
        self.work.mkdir(parents=True, exist_ok=True)
        # The checkouts whose services are measured: ``after`` (BENCH_SERVICE_ROOT, default this one) and,
        # with ``--before``, ``before``, measured in the same rounds by the ``reference`` scenario.
        self.roots: dict[str, Path] = {"after": servers.SERVICE_ROOT}
        if args.before is not None:
            self.roots["before"] = args.before
        self.results: dict[str, Any] = {
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine(),
            "settings": {
                "seconds": self.seconds,
                "rounds": self.rounds,
                "connections": CONNECTIONS,
                "ceiling_connections": CEILING_CONNECTIONS,
                "workers": 2,
                "key_cache_seconds": float(servers.KEY_CACHE_SECONDS["value"]),
                "checkouts": {side: _describe(root) for side, root in self.roots.items()},
            },
            "ceilings": {},
            "scenarios": {},
        }
        self._services: dict[str, tuple[databases.Database, str, list[str]]] = {}
        self._servers: dict[str, servers.Server] = {}
        self._ceiling_dbs: dict[str, databases.Database] = {}
        self.fastest: dict[
            str, tuple[int, int]
        ] = {}  # store ceiling -> (tasks, pool) of its best sweep point

    # ------------------------------------------------------------------ processes

    def database(self, kind: str, side: str = "after") -> tuple[databases.Database, str, list[str]]:
        """The service's database for ``kind`` (10k builds of history) and an API key, for the checkout of
        ``side`` (``after``: the measured one, ``before``: ``--before``), migrated and keyed by that
        checkout's own CLI (``buildstate migrate``, ``keys create``), so each service gets the schema it
        accepts; ``reference-<store>``: the reference server's, migrated by this checkout."""
        name = kind if side == "after" else f"{kind}-{side}"
        if name not in self._services:
            store = kind.removeprefix("reference-")
            reference = kind.startswith("reference-")
            root = servers.ROOT if reference else self.roots[side]
            data = self.work / f"data-{name}"
            db = databases.create(store, self.work, migrated=reference)
            if not reference:
                servers.migrate(db, data, root)
            loaded = dataset.load(db, HISTORY_BUILDS, keep_ids=True)
            key = servers.create_key(db, data, root)
            self._services[name] = (db, key, loaded.build_ids)
        return self._services[name]

    def server(self, name: str, make: Callable[[], servers.Server]) -> servers.Server:
        if name not in self._servers:
            self._servers[name] = make().start()
        return self._servers[name]

    def service(
        self, kind: str, side: str = "after"
    ) -> tuple[servers.Server, str, databases.Database, list[str]]:
        db, key, ids = self.database(kind, side)
        name = kind if side == "after" else f"{kind}-{side}"
        data, log, root = self.work / f"data-{name}", self.work / f"service-{name}.log", self.roots[side]
        return (
            self.server(f"service-{name}", lambda: servers.service(db, data, log, root=root)),
            key,
            db,
            ids,
        )

    def trivial(self) -> servers.Server:
        return self.server("trivial", lambda: servers.trivial(self.work / "trivial.log"))

    def ceiling_db(self, kind: str) -> databases.Database:
        """A database of its own for the store ceilings (10k builds of history, like the service's)."""
        if kind not in self._ceiling_dbs:
            db = databases.create(kind, self.work)
            dataset.load(db, HISTORY_BUILDS)
            self._ceiling_dbs[kind] = db
        return self._ceiling_dbs[kind]

    def stop_servers(self) -> None:
        for server in self._servers.values():
            server.stop()
        self._servers.clear()

    def close(self) -> None:
        self.stop_servers()
        for db, _, _ in self._services.values():
            databases.drop(db)
        for db in self._ceiling_dbs.values():
            databases.drop(db)

    # ------------------------------------------------------------------ measuring

    def load(
        self,
        url: str,
        script: str,
        *,
        env: dict[str, str],
        connections: int = CONNECTIONS,
        rate: float | None = None,
    ) -> wrk.Load:
        return wrk.run(
            url, script, seconds=self.seconds, connections=connections, env=env, rate=rate, workdir=self.work
        )

    def paths_file(self, name: str, paths: list[str]) -> str:
        path = self.work / f"{name}.txt"
        path.write_text("\n".join(paths) + "\n")
        return str(path)

    def framework_ceiling(self) -> float:
        """One measurement of the bare route (kept, the median of all of them is the reported ceiling)."""
        paths = self.paths_file("ping", ["/ping"])
        load = self.load(
            self.trivial().url, "get", env={"BENCH_PATHS": paths}, connections=CEILING_CONNECTIONS
        )
        self._record_ceiling(
            "framework", load.as_dict(), load.rps, "gunicorn -w 2, uvloop worker, bare route"
        )
        return load.rps

    def store_ceiling(self, variant: str) -> float:
        """One measurement of a store ceiling where the sweep found the database fastest (``store``), or
        else at the service's own concurrency."""
        kind = "postgresql" if variant.startswith("pg-") else "sqlite"
        tasks, pool = self.fastest.get(variant, (store_ceiling.TASKS_PER_PROCESS, store_ceiling.POOL_MAX))
        result = store_ceiling.measure(
            self.ceiling_db(kind), variant, self.seconds, tasks=tasks, pool_max=pool
        )
        self._record_ceiling(variant, result.as_dict(), result.tps, store_ceiling.DESCRIPTIONS[variant])
        print(f"  ceiling {variant}: {result.tps:.0f} tx/s p99 {result.p99_ms:.1f} ms", flush=True)
        return result.tps

    def _record_ceiling(self, name: str, entry: dict[str, Any], value: float, what: str) -> None:
        samples = self.results.setdefault("ceiling_samples", {}).setdefault(name, [])
        samples.append((value, entry))
        middle = sorted(samples, key=lambda s: s[0])[len(samples) // 2][1]
        self.results["ceilings"][name] = {
            **middle,
            "what": what,
            "samples": [round(v, 1) for v, _ in samples],
        }

    def paired(
        self,
        name: str,
        kind: str,
        ceiling_name: str,
        ceiling: Callable[[], float],
        scenario: Callable[[], wrk.Load],
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """``rounds`` times: the ceiling, then the scenario right after it. The ratio is the median of the
        rounds' ratios, so a machine that slows down or speeds up between rounds moves both alike."""
        rounds = []
        for _ in range(self.rounds):
            bound = ceiling()
            load = scenario()
            rounds.append((load.rps / bound if bound else 0.0, load, bound))
        rounds.sort(key=lambda r: r[0])
        ratio, load, bound = rounds[len(rounds) // 2]
        entry = {
            **load.as_dict(),
            "store": kind,
            "ceiling": ceiling_name,
            "ceiling_value": round(bound, 1),
            "ratio": round(ratio, 3),
            "round_ratios": [round(r[0], 3) for r in rounds],
            **(extra or {}),
        }
        self.results["scenarios"][f"{name}/{kind}"] = entry
        print(
            f"  {name}/{kind}: {load.rps:.0f} req/s p50 {load.p50_ms:.1f} ms p99 {load.p99_ms:.1f} ms "
            f"errors {load.errors}; {ratio:.3f} of {ceiling_name} (rounds {entry['round_ratios']})",
            flush=True,
        )
        return entry


def _describe(root: Path) -> dict[str, str]:
    """A measured checkout: where it is and its commit."""
    done = subprocess.run(
        ["git", "-C", str(root), "log", "-1", "--format=%h %s"],
        check=False, capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    return {"root": str(root), "commit": done.stdout.strip()[:100]}


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
        info["memory_gib"] = round(int(mem) / 1024 / 1024, 1)
    except OSError:
        pass
    try:
        done = subprocess.run(["psql", "--version"], check=False, capture_output=True, text=True, timeout=10)
        info["postgresql_client"] = done.stdout.strip()
    except OSError:
        pass
    import sqlite3  # noqa: PLC0415

    info["sqlite"] = sqlite3.sqlite_version
    return info


# ---------------------------------------------------------------------- scenarios


def framework(run: Run) -> None:
    """The bare route against the same route behind the whole middleware stack with a real key."""
    for kind in run.stores:
        db, key, _ = run.database(kind)
        data = run.work / f"data-{kind}"
        ping = run.server(
            f"ping-{kind}", lambda db=db, data=data, kind=kind: servers.service_with_ping(
                db, data, run.work / f"ping-{kind}.log"
            )
        )  # fmt: skip

        def hit(path: str, key: str | None, url: str = ping.url) -> wrk.Load:
            env = {"BENCH_PATHS": run.paths_file(path.strip("/").replace("/", "-"), [path])}
            if key:
                env["BENCH_API_KEY"] = key
            return run.load(url, "get", env=env, connections=CEILING_CONNECTIONS)

        entry = run.paired(
            "auth-ping", kind, "framework", run.framework_ceiling, lambda key=key: hit("/bench/ping", key)
        )
        entry["middleware_cost"] = round(1 - entry["ratio"], 3)
        run.paired("health", kind, "framework", run.framework_ceiling, lambda: hit("/health", None))
        run._servers.pop(f"ping-{kind}").stop()
    layers(run)


# What the authenticated trivial GET costs with parts of the stack left out (same route, same key).
LAYER_VARIANTS = {
    "auth-ping-without-access-log": {"BUILDSTATE_ACCESS_LOG": "false"},
    # observe also gives the request its id and applies CORS: without it, only the ping route still works.
    "auth-ping-without-observe": {"BENCH_WITHOUT_MIDDLEWARES": "observe"},
    "auth-ping-auth-only": {"BENCH_WITHOUT_MIDDLEWARES": "observe,problems"},
}


def layers(run: Run) -> None:
    """The middleware cost broken down by layer, on one store (the key is cached: the store barely shows)."""
    kind = "sqlite" if "sqlite" in run.stores else run.stores[0]
    db, key, _ = run.database(kind)
    data = run.work / f"data-{kind}"
    load_env = {"BENCH_PATHS": run.paths_file("bench-ping", ["/bench/ping"]), "BENCH_API_KEY": key}
    for name, env in LAYER_VARIANTS.items():
        server = servers.service_with_ping(db, data, run.work / f"{name}.log")
        server.env.update(env)
        with server:
            run.paired(
                name, kind, "framework", run.framework_ceiling,
                lambda url=server.url: run.load(url, "get", env=load_env, connections=CEILING_CONNECTIONS),
                extra={"left_out": env},
            )  # fmt: skip


# (tasks, pool) per process for the PostgreSQL sweep: the ceilings are taken where the database is fastest.
SWEEP = ((4, 1), (8, 2), (16, 4), (32, 8), (64, 16))


def store(run: Run) -> None:
    """The PostgreSQL write ceilings swept over concurrency and pool size (then reported at their fastest
    point, which later pairs use), and every store ceiling once (the scenarios measure the ones they are
    compared with again, paired)."""
    for kind in run.stores:
        if kind == "postgresql":
            for variant in store_ceiling.SWEPT:
                points = {}
                for tasks, pool in SWEEP:
                    got = store_ceiling.measure(
                        run.ceiling_db(kind), variant, run.seconds, tasks=tasks, pool_max=pool
                    )
                    points[f"{tasks}x{pool}"] = {**got.as_dict(), "tasks": tasks, "pool": pool}
                    print(f"  sweep {variant} {tasks} x {pool}: {got.tps:.0f} tx/s p99 {got.p99_ms:.1f} ms")
                best = max(points.values(), key=lambda p: p["tps"])
                run.fastest[variant] = (int(best["tasks"]), int(best["pool"]))
                run.results.setdefault("sweeps", {})[variant] = points
        for variant in store_ceiling.PG_VARIANTS if kind == "postgresql" else store_ceiling.SQLITE_VARIANTS:
            run.store_ceiling(variant)


def _framework_bound(run: Run, name: str, path_list: Callable[[str, str], list[str]]) -> None:
    for kind in run.stores:
        server, key, _, _ = run.service(kind)
        env = {
            "BENCH_PATHS": run.paths_file(f"{name}-{kind}", path_list(server.url, key)),
            "BENCH_API_KEY": key,
        }
        run.paired(
            name, kind, "framework", run.framework_ceiling,
            lambda server=server, env=env: run.load(server.url, "get", env=env),
        )  # fmt: skip


# Each service scenario and the script it runs, against the minimal server doing the same requests.
REFERENCE_PAIRS = (
    ("auth-ping", "get", CEILING_CONNECTIONS),
    ("get-build", "get", CONNECTIONS),
    ("post-state", "state", CONNECTIONS),
    ("create", "create", CONNECTIONS),
)
HALF = 0.5  # the p99 goal's load: half of the scenario's measured maximum


def reference(run: Run) -> None:
    """Every service scenario against the minimal server on the same store (``bench/reference.py`` on
    PostgreSQL, ``bench/reference_sqlite.py`` on SQLite): the same requests, each write one statement (on
    SQLite group-committed minimal transactions), keys in memory, no audit, feed or idempotency. Each
    round measures the reference, the ``--before`` checkout's service if there is one and the measured one,
    back to back, in an order that alternates from round to round (reference, before, after; then after,
    before, reference; ...: ``round_orders`` in results.json); then each service once more, paced open-loop
    at half of its maximum, for the p99 there."""
    for kind in run.stores:
        _reference_on(run, kind)


def _reference_on(run: Run, kind: str) -> None:
    sides = [side for side in ("before", "after") if side in run.roots]  # the order within a round
    urls: dict[str, dict[str, str]] = {}
    keys: dict[str, tuple[str, list[str], databases.Database]] = {}
    pings = []
    for side in sides:
        server, key, db, ids = run.service(kind, side)
        name = kind if side == "after" else f"{kind}-{side}"
        ping = run.server(
            f"ping-{name}",
            lambda db=db, name=name, side=side: servers.service_with_ping(
                db, run.work / f"data-{name}", run.work / f"ping-{name}.log", root=run.roots[side]
            ),
        )
        pings.append(f"ping-{name}")
        urls[side] = {"ping": ping.url, "service": server.url}
        keys[side] = (key, ids, db)
    ref_db, ref_key, ref_ids = run.database(f"reference-{kind}")
    ref = run.server(
        f"reference-{kind}", lambda: servers.reference(ref_db, run.work / f"reference-{kind}.log")
    )
    urls["reference"] = {"ping": ref.url, "service": ref.url}
    keys["reference"] = (ref_key, ref_ids, ref_db)

    def measure(
        scenario: str, script: str, connections: int, who: str, rate: float | None = None
    ) -> wrk.Load:
        api_key, build_ids, db = keys[who]
        env = {"BENCH_API_KEY": api_key, "BENCH_RUN": f"{who}{time.time_ns()}"}
        if scenario == "auth-ping":
            env["BENCH_PATHS"] = run.paths_file(f"ping-{who}", ["/bench/ping"])
        elif scenario == "get-build":
            env["BENCH_PATHS"] = run.paths_file(
                f"builds-{who}-{kind}", [f"/builds/{i}" for i in build_ids[::7]]
            )
        elif scenario == "post-state":
            env["BENCH_BUILDS"] = _state_builds(run, f"{who}-{kind}", db, "ref")
        url = urls[who]["ping" if scenario == "auth-ping" else "service"]
        return run.load(url, script, env=env, connections=connections, rate=rate)

    for scenario, script, connections in REFERENCE_PAIRS:
        rounds: list[dict[str, wrk.Load]] = []
        orders: list[list[str]] = []
        for number in range(run.rounds):
            order = round_order(number, ["reference", *sides])
            got = {who: measure(scenario, script, connections, who) for who in order}
            run._record_ceiling(
                f"reference-{scenario}/{kind}", got["reference"].as_dict(), got["reference"].rps,
                f"bench/reference{'_sqlite' if kind == 'sqlite' else ''}.py",
            )  # fmt: skip
            rounds.append(got)
            orders.append(order)
        entries = {}
        for side in sides:
            ratios = sorted(
                (r[side].rps / r["reference"].rps if r["reference"].rps else 0.0, n)
                for n, r in enumerate(rounds)
            )
            ratio, middle = ratios[len(ratios) // 2]
            top = rounds[middle][side]
            half = measure(scenario, script, connections, side, rate=top.rps * HALF)
            suffix = "" if side == "after" else f"-{side}"
            entry = {
                **top.as_dict(),
                "store": kind,
                "checkout": side,
                "ceiling": f"reference-{scenario}/{kind}",
                "ceiling_value": round(rounds[middle]["reference"].rps, 1),
                "ratio": round(ratio, 3),
                "round_ratios": [round(r, 3) for r, _ in ratios],
                "p99_at_max_ms": top.p99_ms,
                "p99_at_half_ms": half.p99_ms,
                "at_half": half.as_dict(),
                "half_pacing": report.pacing(half.as_dict()),
                "round_orders": orders,
            }
            run.results["scenarios"][f"{scenario}-vs-reference{suffix}/{kind}"] = entry
            entries[side] = entry
            print(
                f"  {scenario}-vs-reference{suffix}/{kind}: {top.rps:.0f} req/s p99 {top.p99_ms:.1f} ms "
                f"(at half: {half.rps:.0f} req/s p99 {half.p99_ms:.1f} ms) "
                f"errors {top.errors + half.errors}; "
                f"{ratio:.3f} of the reference (rounds {entry['round_ratios']})",
                flush=True,
            )
        if "before" in entries:
            gains = sorted(r["after"].rps / r["before"].rps if r["before"].rps else 0.0 for r in rounds)
            references = sorted(r["reference"].rps for r in rounds)
            run.results.setdefault("before_after", {})[f"{scenario}/{kind}"] = {
                "reference_rps": round(references[len(references) // 2], 1),
                "before": {k: entries["before"][k] for k in _BEFORE_AFTER_KEYS},
                "after": {k: entries["after"][k] for k in _BEFORE_AFTER_KEYS},
                "after_over_before": round(gains[len(gains) // 2], 3),
                "round_after_over_before": [round(g, 3) for g in gains],
                "round_orders": orders,
            }
    for name in pings:
        run._servers.pop(name).stop()


def round_order(number: int, sides: list[str]) -> list[str]:
    """The order of the sides in round ``number`` (from 0): as given, then reversed, and so on (ABBA), so an
    order effect (a warm cache, a machine slowing down within a round) does not always land on one side."""
    return list(sides) if number % 2 == 0 else list(reversed(sides))


_BEFORE_AFTER_KEYS = (
    "rps", "p99_at_max_ms", "p99_at_half_ms", "half_pacing", "errors", "ratio", "round_ratios",
)  # fmt: skip


def get(run: Run) -> None:
    ids = {kind: run.database(kind)[2] for kind in run.stores}
    _framework_bound(
        run, "get-build", lambda url, key: [f"/builds/{i}" for i in ids[_kind_of(run, key)][::7]]
    )


def _kind_of(run: Run, key: str) -> str:
    return next(kind for kind, (_, k, _) in run._services.items() if k == key)


def _check_paths(url: str, key: str) -> list[str]:
    """One Concourse check per resource: a combo (and sometimes a states filter), after its newest event."""
    paths = []
    for n, (p, o, t) in enumerate(
        (p, o, t) for p in dataset.PLATFORMS for o in dataset.OS_VERSIONS for t in dataset.IMAGE_TYPES
    ):
        query = f"platform={p}&os_version={o}&image_type={t}" + ("&states=succeeded" if n % 3 == 0 else "")
        request = urllib.request.Request(
            f"{url}/events?{query}&order=desc&limit=1", headers={"X-API-Key": key}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            events = json.loads(response.read())["events"]
        after = events[0]["seq"] - 1 if events else 0
        paths.append(f"/events?{query}&after={after}&limit=1000")
    return paths


def check(run: Run) -> None:
    _framework_bound(run, "check-poll", _check_paths)


def summary(run: Run) -> None:
    _framework_bound(run, "summary", lambda _url, _key: ["/dashboard/summary"])


def _state_builds(run: Run, kind: str, db: databases.Database, tag: str) -> str:
    fresh = dataset.load(
        db, 64 * CONNECTIONS, prefix=f"state-{tag}-{time.monotonic_ns()}", fresh=True, keep_ids=True
    )
    return run.paths_file(f"state-{kind}", fresh.build_ids)


# The store ceiling each store's writes are compared with: the fastest way to do the same writes from Python
# (on PostgreSQL, group commit of the one-statement append: faster than one statement each, ``store``).
STORE_BOUND = {"postgresql": "pg-grouped", "sqlite": "sqlite-transaction"}


def state(run: Run) -> None:
    for kind in run.stores:
        server, key, db, _ = run.service(kind)
        variant = STORE_BOUND[kind]

        def changes(
            server: servers.Server = server, key: str = key, db: databases.Database = db, kind: str = kind
        ) -> wrk.Load:
            env = {"BENCH_BUILDS": _state_builds(run, kind, db, "max"), "BENCH_API_KEY": key}
            return run.load(server.url, "state", env=env)

        run.paired("post-state", kind, variant, lambda variant=variant: run.store_ceiling(variant), changes)


def pipeline(run: Run) -> None:
    for kind in run.stores:
        server, key, _, _ = run.service(kind)
        variant = STORE_BOUND[kind]

        def flow(server: servers.Server = server, key: str = key) -> wrk.Load:
            env = {
                "BENCH_API_KEY": key,
                "BENCH_PIPELINES": str(64 * CONNECTIONS),
                "BENCH_RUN": f"pl{time.time_ns()}",
            }
            return run.load(server.url, "pipeline", env=env)

        run.paired("pipeline", kind, variant, lambda variant=variant: run.store_ceiling(variant), flow)


def curve(run: Run) -> None:
    """Latency against offered load for GET /builds/{ref} and POST state, at fractions of their maximum."""
    for kind in run.stores:
        points: dict[str, list[dict[str, Any]]] = {}
        server, key, db, ids = run.service(kind)
        get_env = {
            "BENCH_PATHS": run.paths_file(f"builds-{kind}", [f"/builds/{i}" for i in ids[::7]]),
            "BENCH_API_KEY": key,
        }

        def state_env(kind: str = kind, db: databases.Database = db, key: str = key) -> dict[str, str]:
            return {"BENCH_BUILDS": _state_builds(run, kind, db, "curve"), "BENCH_API_KEY": key}

        def get_env_of(env: dict[str, str] = get_env) -> dict[str, str]:
            return env

        # The paced points are open loop (bench/lua/paced.lua): latency from each request's scheduled send.
        for name, script, env_of in (("get-build", "get", get_env_of), ("post-state", "state", state_env)):
            peak = run.load(server.url, script, env=env_of())
            points[name] = [{"fraction": 1.0, **peak.as_dict()}]
            for fraction in CURVE_FRACTIONS:
                paced = run.load(server.url, script, env=env_of(), rate=peak.rps * fraction)
                points[name].append({"fraction": fraction, **paced.as_dict()})
                print(
                    f"  curve {name}/{kind} at {fraction:.0%} of {peak.rps:.0f}: {paced.rps:.0f} req/s "
                    f"p99 {paced.p99_ms:.1f} ms",
                    flush=True,
                )
        run.results.setdefault("curves", {})[kind] = points


def resource(run: Run) -> None:
    kind = "postgresql" if "postgresql" in run.stores else run.stores[0]
    server, key, db, _ = run.service(kind)
    build = dataset.load(db, 1, prefix=f"resource-{time.time_ns()}", fresh=True, keep_ids=True).build_ids[0]
    runs = 5 if run.seconds < 5 else 20
    result = resource_procs.measure(server.url, key, runs=runs, build_id=build)
    run.results["resource"] = result
    for name in ("bare", "check", "in", "out"):
        r = result[name]
        print(
            f"  resource {name}: {r['median_ms']} ms (+{r['over_bare_ms']} ms), {r['peak_rss_mib']} MiB",
            flush=True,
        )


def scale_(run: Run) -> None:
    run.stop_servers()
    for kind in run.stores:
        result = scale.run(kind, run.sizes, run.work)
        run.results.setdefault("scale", {})[kind] = result
        for size, r in result.items():
            times = ", ".join(f"{q} {v['median_ms']} ms" for q, v in r["queries"].items())
            print(f"  scale {kind} {size}: load {r['load_seconds']} s; {times}", flush=True)


RUNNERS: dict[str, Callable[[Run], None]] = {
    "framework": framework,
    "store": store,
    "reference": reference,
    "get": get,
    "check": check,
    "summary": summary,
    "state": state,
    "pipeline": pipeline,
    "curve": curve,
    "resource": resource,
    "scale": scale_,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "scenarios",
        nargs="+",
        choices=(*SCENARIOS, "all"),
        metavar="scenario",
        help=f"one or more of {', '.join(SCENARIOS)}, or all",
    )
    parser.add_argument("--store", action="append", choices=STORES, help="default: both")
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="ceiling/scenario pairs per ratio (default 3)")
    parser.add_argument(
        "--sizes", default="10000,100000", help="scale: builds per size (default 10000,100000)"
    )
    parser.add_argument("--out", type=Path, default=servers.ROOT / "artifacts/bench")
    parser.add_argument(
        "--before",
        type=Path,
        default=None,
        metavar="CHECKOUT",
        help="reference: also measure the service of this checkout (its own .venv, e.g. a worktree of "
        "an older commit) in the same rounds, for a before/after table",
    )
    parser.add_argument("--smoke", action="store_true", help="2 s per measurement and 10k builds only")
    parser.add_argument(
        "--key-cache-seconds",
        type=float,
        default=0.0,
        help="BUILDSTATE_KEY_CACHE_SECONDS of the services it starts (default 0: the service's default, "
        "the key cache every revocation invalidates; > 0: the older grace cache)",
    )
    args = parser.parse_args(argv)
    args.store = args.store or list(STORES)
    if args.before is not None:
        args.before = args.before.resolve()
        if not servers.cli(args.before).exists():
            parser.error(f"--before: {servers.cli(args.before)} does not exist (bootstrap that checkout)")
    servers.KEY_CACHE_SECONDS["value"] = str(args.key_cache_seconds)
    args.sizes = [int(s) for s in args.sizes.split(",")]
    if args.smoke:
        args.seconds, args.sizes, args.rounds = min(args.seconds, 2.0), [10_000], 1
    with contextlib.ExitStack() as stack:
        if "postgresql" in args.store:
            private = stack.enter_context(pg.private_server())
            if private is not None:
                databases.use_server(private)
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    if "postgresql" in args.store and not databases.pg_available():
        print(f"PostgreSQL is not reachable at {databases.PG_ADMIN}; running on SQLite only", file=sys.stderr)
        args.store = [s for s in args.store if s != "postgresql"] or ["sqlite"]
    chosen = list(SCENARIOS) if "all" in args.scenarios else [s for s in SCENARIOS if s in args.scenarios]
    run = Run(args)
    try:
        for name in chosen:
            print(f"== {name}", flush=True)
            RUNNERS[name](run)
    finally:
        run.close()
    run.results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    written = report.write(run.results, args.out)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
