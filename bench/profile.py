"""Profile the service under one scenario's load: py-spy samples every worker while wrk drives it.

    python -m bench.profile post-state --store postgresql --seconds 10

Writes ``artifacts/bench/profiles/<scenario>-<store>.txt`` (collapsed stacks, for flamegraph tools or
speedscope) and prints the functions with the most samples, inclusive and self, summed over the workers.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench import dataset, pg, servers, wrk
from bench import db as databases
from bench.__main__ import CONNECTIONS, _check_paths

SCENARIOS = ("post-state", "pipeline", "get-build", "check-poll", "summary", "auth-ping", "health")


def _workers(master_pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(master_pid)], capture_output=True, text=True, check=False)
    children = [int(p) for p in found.stdout.split()]
    # buildstate serve -> (bash ->) gunicorn master -> workers
    nested = [int(p) for c in children for p in subprocess.run(
        ["pgrep", "-P", str(c)], capture_output=True, text=True, check=False).stdout.split()]  # fmt: skip
    return nested or children


def summarize(collapsed: list[Path], top: int = 25) -> str:
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for path in collapsed:
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            n = int(count)
            total += n
            frames = stack.split(";")
            for frame in set(frames):
                inclusive[frame] += n
            own[frames[-1]] += n
    lines = [f"{total} samples", "", "inclusive:"]
    lines += [f"{n / total:6.1%}  {frame}" for frame, n in inclusive.most_common(top)]
    lines += ["", "self:"]
    lines += [f"{n / total:6.1%}  {frame}" for frame, n in own.most_common(top)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("scenario", choices=SCENARIOS)
    parser.add_argument("--store", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=servers.ROOT / "artifacts/bench/profiles")
    args = parser.parse_args()
    work = args.out / "work"
    with contextlib.ExitStack() as stack:
        if args.store == "postgresql":
            private = stack.enter_context(pg.private_server())
            if private:
                databases.use_server(private)
        db = stack.enter_context(databases.temporary(args.store, work))
        loaded = dataset.load(db, 10_000, keep_ids=True)
        data = work / f"data-{args.store}"
        key = servers.create_key(db, data)
        make = servers.service_with_ping if args.scenario in {"auth-ping", "health"} else servers.service
        server = stack.enter_context(make(db, data, work / f"profile-{args.store}.log"))
        env = {"BENCH_API_KEY": key}
        script = "get"
        paths_file = work / "paths.txt"
        if args.scenario == "post-state":
            script = "state"
            fresh = dataset.load(
                db, 16 * CONNECTIONS, prefix=f"prof{time.time_ns()}", fresh=True, keep_ids=True
            )
            paths_file.write_text("\n".join(fresh.build_ids) + "\n")
            env["BENCH_BUILDS"] = str(paths_file)
        elif args.scenario == "pipeline":
            script = "pipeline"
            env.update(BENCH_PIPELINES=str(16 * CONNECTIONS), BENCH_RUN=f"prof{time.time_ns()}")
        else:
            paths = {
                "get-build": [f"/builds/{i}" for i in loaded.build_ids[::7]],
                "summary": ["/dashboard/summary"],
                "auth-ping": ["/bench/ping"],
                "health": ["/health"],
            }.get(args.scenario) or _check_paths(server.url, key)
            paths_file.write_text("\n".join(paths) + "\n")
            env["BENCH_PATHS"] = str(paths_file)
        assert server.process is not None
        pids = _workers(server.process.pid)
        args.out.mkdir(parents=True, exist_ok=True)
        outputs = [args.out / f"{args.scenario}-{args.store}-{pid}.txt" for pid in pids]
        # py-spy comes with the bench extra, next to this interpreter (the venv need not be activated).
        spy_bin = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        spies = [
            subprocess.Popen([spy_bin, "record", "--pid", str(pid), "--duration", str(int(args.seconds)),
                              "--rate", "200", "--format", "raw", "--nonblocking", "--output", str(out)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for pid, out in zip(pids, outputs, strict=True)
        ]  # fmt: skip
        load = wrk.run(
            server.url, script, seconds=args.seconds, connections=CONNECTIONS, env=env, workdir=work
        )
        for spy in spies:
            spy.wait(60)
    print(f"{args.scenario}/{args.store}: {load.rps:.0f} req/s, p99 {load.p99_ms} ms, errors {load.errors}")
    print(summarize([o for o in outputs if o.exists()]))


if __name__ == "__main__":
    main()
