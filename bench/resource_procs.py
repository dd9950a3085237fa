"""The Concourse resource's check, in and out as whole processes, against bare interpreter start-up.

Each script runs as the image runs it (``/opt/resource/check`` is ``from buildstate_resource.check import
main; main()`` on the image's python3): here the interpreter the venv was made from, by its absolute path
(a pyenv or similar shim would add its own start-up), with only ``resource/`` on ``PYTHONPATH`` and no
site-packages of the project, byte-compiled ahead as the image is. The baseline is the same interpreter
running ``-c pass``. Wall time from fork to exit; peak memory is the child's ``ru_maxrss``.
"""

from __future__ import annotations

import compileall
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.servers import ROOT
from bench.store_ceiling import percentile

INTERPRETER = str(Path(os.path.realpath(ROOT / ".venv/bin/python")))
SCRIPTS = {"check": "check", "in": "get", "out": "put"}


GNU_TIME = "/usr/bin/time"


def _run(argv: list[str], stdin: bytes, env: dict[str, str]) -> tuple[float, int, int, bytes]:
    """(seconds, peak RSS in KiB, exit status, stdout) of one child process.

    The peak RSS comes from GNU time (Debian's ``time``), which forks the script from its own small
    process: a child forked from this one would report this process's size as its peak, since the
    high-water mark survives exec. Both the scripts and the bare interpreter pay time's fork alike.
    """
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as report:
        measured = Path(GNU_TIME).exists()
        command = [GNU_TIME, "-f", "%M", "-o", report.name, *argv] if measured else argv
        began = time.perf_counter()
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
        )
        out, _ = process.communicate(stdin, timeout=60)
        seconds = time.perf_counter() - began
        text = report.read().strip().splitlines()
    peak = int(text[-1]) if measured and text and text[-1].isdigit() else 0
    return seconds, peak, process.returncode, out


def measure(url: str, key: str, *, runs: int, build_id: str) -> dict[str, Any]:
    compileall.compile_dir(str(ROOT / "resource/buildstate_resource"), quiet=1)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "resource")}
    source = {"url": url, "api_key": key, "platform": "aws"}
    sources = Path(tempfile.mkdtemp(prefix="bench-resource-"))
    out_env = {
        **env,
        "BUILD_TEAM_NAME": "bench",
        "BUILD_PIPELINE_NAME": "bench",
        "BUILD_JOB_NAME": "build",
        "BUILD_NAME": "1",
        "BUILD_ID": "1",
        "ATC_EXTERNAL_URL": "http://127.0.0.1",
    }
    # A version to check from and to get: the newest aws event.
    _, _, code, first = _run(
        [INTERPRETER, "-c", "from buildstate_resource.check import main; main()"],
        json.dumps({"source": source}).encode(),
        env,
    )
    if code != 0:
        raise RuntimeError("the resource's check failed against the bench service")
    version = json.loads(first)[0]
    cases = {
        "bare": ([INTERPRETER, "-c", "pass"], b"", env),
        "check": (
            [INTERPRETER, "-c", "from buildstate_resource.check import main; main()"],
            json.dumps({"source": source, "version": version}).encode(),
            env,
        ),
        "in": (
            [INTERPRETER, "-c", "from buildstate_resource.get import main; main()", str(sources / "in")],
            json.dumps({"source": source, "version": version}).encode(),
            env,
        ),
    }
    samples: dict[str, list[tuple[float, int]]] = {name: [] for name in [*cases, "out"]}
    for i in range(runs):  # interleaved, so drift in machine load hits every case alike
        for name, (argv, stdin, run_env) in cases.items():
            seconds, rss, code, _ = _run(argv, stdin, run_env)
            if code != 0:
                raise RuntimeError(f"resource {name} failed (exit {code})")
            samples[name].append((seconds, rss))
        put = {"source": source, "params": {"build": build_id, "state": min(100, 5 * (i + 1))}}
        seconds, rss, code, _ = _run(
            [INTERPRETER, "-c", "from buildstate_resource.put import main; main()", str(sources)],
            json.dumps(put).encode(),
            out_env,
        )
        if code != 0:
            raise RuntimeError(f"resource out failed (exit {code})")
        samples["out"].append((seconds, rss))
    report: dict[str, Any] = {"interpreter": INTERPRETER, "runs": runs}
    bare_ms = percentile([s for s, _ in samples["bare"]], 50) * 1000
    for name, values in samples.items():
        median_ms = percentile([s for s, _ in values], 50) * 1000
        report[name] = {
            "median_ms": round(median_ms, 1),
            "p90_ms": round(percentile([s for s, _ in values], 90) * 1000, 1),
            "peak_rss_mib": round(max(r for _, r in values) / 1024, 1),
            "over_bare_ms": round(median_ms - bare_ms, 1),
        }
    return report
