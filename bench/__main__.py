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
    """One bench run: its settings, its results, and the one server it has running at a time."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.seconds: float = args.seconds
        self.stores: list[str] = args.store
        self.sizes: list[int] = args.sizes
        self.out: Path = args.out
        self.work = self.out / "work"
        self.work.mkdir(parents=True, exist_ok=True)
        self.results: dict[str, Any] = {
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine(),
            "settings": {
                "seconds": self.seconds,
                "connections": CONNECTIONS,
                "ceiling_connections": CEILING_CONNECTIONS,
                "workers": 2,
            },
            "ceilings": {},
            "scenarios": {},
        }
        self._services: dict[str, tuple[databases.Database, str, list[str]]] = {}
        self._running: servers.Server | None = None
        self._running_kind: str | None = None

    # ------------------------------------------------------------------ processes

    def database(self, kind: str) -> tuple[databases.Database, str, list[str]]:
        """The service's database for ``kind`` (10k builds of history) and an API key."""
        if kind not in self._services:
            db = databases.create(kind, self.work)
            loaded = dataset.load(db, HISTORY_BUILDS, keep_ids=True)
            key = servers.create_key(db, self.work / f"data-{kind}")
            self._services[kind] = (db, key, loaded.build_ids)
        return self._services[kind]

    def service(self, kind: str) -> tuple[servers.Server, str, databases.Database, list[str]]:
        db, key, ids = self.database(kind)
        if self._running_kind != f"service-{kind}":
            self.stop()
            self._running = servers.service(db, self.work / f"data-{kind}", self.work / f"service-{kind}.log")
            self._running.start()
            self._running_kind = f"service-{kind}"
        assert self._running is not None
        return self._running, key, db, ids

    def stop(self) -> None:
        if self._running is not None:
            self._running.stop()
        self._running = self._running_kind = None

    def close(self) -> None:
        self.stop()
        for db, _, _ in self._services.values():
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

    def scenario(
        self, name: str, kind: str, load: wrk.Load, ceiling: str, extra: dict[str, Any] | None = None
    ) -> None:
        entry = {**load.as_dict(), "store": kind, "ceiling": ceiling, **(extra or {})}
        bound = self.ceiling_value(ceiling)
        entry["ratio"] = round(load.rps / bound, 3) if bound else None
        self.results["scenarios"][f"{name}/{kind}"] = entry
        print(
            f"  {name}/{kind}: {load.rps:.0f} req/s p50 {load.p50_ms:.1f} ms p99 {load.p99_ms:.1f} ms "
            f"errors {load.errors}; {entry['ratio']} of {ceiling}",
            flush=True,
        )

    def ceiling_value(self, name: str) -> float | None:
        found = self.results["ceilings"].get(name)
        if found is None:
            return None
        return float(found.get("rps") or found.get("tps") or 0)

    def need_framework_ceiling(self) -> None:
        if "framework" not in self.results["ceilings"]:
            framework(self)

    def need_store_ceiling(self, kind: str) -> None:
        wanted = "pg-one-statement" if kind == "postgresql" else "sqlite-transaction"
        if wanted not in self.results["ceilings"]:
            store(self, only=kind)


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
    """The framework ceiling, and the same route behind the whole middleware stack with a real key."""
    run.stop()
    ping = run.paths_file("ping", ["/ping"])
    with servers.trivial(run.work / "trivial.log") as bare:
        load = run.load(bare.url, "get", env={"BENCH_PATHS": ping}, connections=CEILING_CONNECTIONS)
    run.results["ceilings"]["framework"] = {
        **load.as_dict(),
        "what": "gunicorn -w 2, uvloop worker, bare route",
    }
    print(f"  framework ceiling: {load.rps:.0f} req/s", flush=True)
    for kind in run.stores:
        db, key, _ = run.database(kind)
        server = servers.service_with_ping(db, run.work / f"data-{kind}", run.work / f"ping-{kind}.log")
        with server:
            authed = run.load(
                server.url,
                "get",
                env={"BENCH_PATHS": run.paths_file("bping", ["/bench/ping"]), "BENCH_API_KEY": key},
                connections=CEILING_CONNECTIONS,
            )
            public = run.load(
                server.url,
                "get",
                env={"BENCH_PATHS": run.paths_file("health", ["/health"])},
                connections=CEILING_CONNECTIONS,
            )
        run.scenario(
            "auth-ping",
            kind,
            authed,
            "framework",
            {"middleware_cost": round(1 - authed.rps / run.ceiling_value("framework"), 3)},
        )  # type: ignore[operator]
        run.scenario("health", kind, public, "framework")


def store(run: Run, only: str | None = None) -> None:
    """The store ceilings: a state change's transaction straight from Python, two processes."""
    run.stop()
    for kind in [only] if only else run.stores:
        variants = store_ceiling.PG_VARIANTS if kind == "postgresql" else store_ceiling.SQLITE_VARIANTS
        with databases.temporary(kind, run.work) as db:
            dataset.load(db, HISTORY_BUILDS)
            for variant in variants:
                result = store_ceiling.measure(db, variant, run.seconds)
                run.results["ceilings"][variant] = result.as_dict()
                print(
                    f"  store ceiling {variant}: {result.tps:.0f} tx/s p99 {result.p99_ms:.1f} ms", flush=True
                )


def get(run: Run) -> None:
    run.need_framework_ceiling()
    for kind in run.stores:
        server, key, _, ids = run.service(kind)
        paths = run.paths_file(f"builds-{kind}", [f"/builds/{i}" for i in ids[::7]])
        run.scenario(
            "get-build",
            kind,
            run.load(server.url, "get", env={"BENCH_PATHS": paths, "BENCH_API_KEY": key}),
            "framework",
        )


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
    run.need_framework_ceiling()
    for kind in run.stores:
        server, key, _, _ = run.service(kind)
        paths = run.paths_file(f"check-{kind}", _check_paths(server.url, key))
        run.scenario(
            "check-poll",
            kind,
            run.load(server.url, "get", env={"BENCH_PATHS": paths, "BENCH_API_KEY": key}),
            "framework",
        )


def summary(run: Run) -> None:
    run.need_framework_ceiling()
    for kind in run.stores:
        server, key, _, _ = run.service(kind)
        paths = run.paths_file("summary", ["/dashboard/summary"])
        run.scenario(
            "summary",
            kind,
            run.load(server.url, "get", env={"BENCH_PATHS": paths, "BENCH_API_KEY": key}),
            "framework",
        )


def _state_builds(run: Run, kind: str, db: databases.Database, tag: str) -> str:
    fresh = dataset.load(
        db, 16 * CONNECTIONS, prefix=f"state-{tag}-{time.monotonic_ns()}", fresh=True, keep_ids=True
    )
    return run.paths_file(f"state-{kind}", fresh.build_ids)


def state(run: Run) -> None:
    for kind in run.stores:
        run.need_store_ceiling(kind)
        server, key, db, _ = run.service(kind)
        builds = _state_builds(run, kind, db, "max")
        load = run.load(server.url, "state", env={"BENCH_BUILDS": builds, "BENCH_API_KEY": key})
        ceiling = "pg-one-statement" if kind == "postgresql" else "sqlite-transaction"
        extra = {}
        for other in ("pg-transaction", "pg-store", "sqlite-store"):
            value = run.ceiling_value(other)
            if value and other.startswith(kind[:2]):
                extra[f"ratio_to_{other}"] = round(load.rps / value, 3)
        run.scenario("post-state", kind, load, ceiling, extra)


def pipeline(run: Run) -> None:
    for kind in run.stores:
        run.need_store_ceiling(kind)
        server, key, _, _ = run.service(kind)
        env = {
            "BENCH_API_KEY": key,
            "BENCH_PIPELINES": str(16 * CONNECTIONS),
            "BENCH_RUN": f"pl{time.time_ns()}",
        }
        ceiling = "pg-one-statement" if kind == "postgresql" else "sqlite-transaction"
        run.scenario("pipeline", kind, run.load(server.url, "pipeline", env=env), ceiling)


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
    run.stop()
    for kind in run.stores:
        result = scale.run(kind, run.sizes, run.work)
        run.results.setdefault("scale", {})[kind] = result
        for size, r in result.items():
            times = ", ".join(f"{q} {v['median_ms']} ms" for q, v in r["queries"].items())
            print(f"  scale {kind} {size}: load {r['load_seconds']} s; {times}", flush=True)


RUNNERS: dict[str, Callable[[Run], None]] = {
    "framework": framework,
    "store": store,
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
    parser.add_argument("--seconds", type=float, default=8.0, help="per measurement (default 8)")
    parser.add_argument(
        "--sizes", default="10000,100000", help="scale: builds per size (default 10000,100000)"
    )
    parser.add_argument("--out", type=Path, default=servers.ROOT / "artifacts/bench")
    parser.add_argument("--smoke", action="store_true", help="2 s per measurement and 10k builds only")
    args = parser.parse_args(argv)
    args.store = args.store or list(STORES)
    args.sizes = [int(s) for s in args.sizes.split(",")]
    if args.smoke:
        args.seconds, args.sizes = 2.0, [10_000]
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
