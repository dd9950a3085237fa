"""A real container engine for tests/containers: find or start one, make sure the base images exist.

Order of preference, so that the same test runs on a developer's machine and on the CI machines:

1. An engine that already answers ``docker info`` is used as it is.
2. Otherwise (unless ``DOCKER_HOST`` names another engine), as root with the machine's container tools
   (``BUILDSTATE_CONTAINER_TOOLS``, else ``../shared/tools/containers`` beside the checkout or its parent,
   else ``/work/shared/tools/containers``), ``engine-up.sh`` installs and starts one (and a Compose v2
   plugin). It is left running: its images and build cache make the next run warm. ``engine-down.sh``
   stops it.
3. The base images the Dockerfiles and compose files name: present locally, used; else ``docker pull``;
   where the registry cannot be reached, ``make-base-images.sh`` builds local stand-ins (1.5-3 min, once
   per machine, kept by the engine).

Anything missing (no engine, not root to start one, Compose older than 2.24) skips the suite with the
reason, or fails it under CI (``CI`` set), where it must run.
"""

from __future__ import annotations

import calendar
import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_MIN = (2, 24)
# What the suite measured; conftest.py prints it at the end of the run and writes it to REPORT_FILE.
REPORT: dict[str, Any] = {}
REPORT_FILE = ROOT / "artifacts" / "containers.json"


class Unavailable(Exception):
    """No engine can be used here; the message says why."""


def unavailable(reason: str) -> NoReturn:
    """Skip the suite with the reason; under CI, where it must run, fail it."""
    if os.environ.get("CI"):
        pytest.fail(f"tests/containers must run in CI: {reason}")
    pytest.skip(reason)


def tools_dir() -> Path | None:
    candidates = [os.environ.get("BUILDSTATE_CONTAINER_TOOLS", "")]
    candidates += [str(base / "shared/tools/containers") for base in (ROOT.parent, ROOT.parent.parent)]
    candidates.append("/work/shared/tools/containers")
    for candidate in filter(None, candidates):
        if (Path(candidate) / "engine-up.sh").is_file():
            return Path(candidate)
    return None


def run(
    args: Sequence[str | Path],
    *,
    timeout: float = 120,
    check: bool = True,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(a) for a in args], input=stdin, capture_output=True, text=True, timeout=timeout,
        check=False, env=env, cwd=cwd,
    )  # fmt: skip
    if check and done.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, args))} exited {done.returncode}\n"
            f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
        )
    return done


# Every container a test runs carries it, so that a run that was cut short can be swept by the next one.
TEST_LABEL = "buildstate-tests=1"


def docker(*args: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """``docker ...``; a foreground ``docker run`` gets a name and the test label, and is removed however it
    ends: a timeout kills only the CLI, which left the container running."""
    if not args or args[0] != "run" or "-d" in args:
        return run(["docker", *args], **kwargs)
    name = f"buildstate-test-{os.getpid()}-{time.monotonic_ns()}"
    try:
        return run(["docker", "run", "--name", name, "--label", TEST_LABEL, *args[1:]], **kwargs)
    finally:
        run(["docker", "rm", "-f", name], check=False, timeout=60)


def _older_than(kind: str, ids: list[str], seconds: float) -> list[str]:
    """Those of ``ids`` (containers, networks or volumes) created more than ``seconds`` ago."""
    if not ids:
        return []
    done = docker(kind, "inspect", "--format", "{{.CreatedAt}}" if kind == "volume" else "{{.Created}}",
                  *ids, check=False, timeout=60)  # fmt: skip
    cutoff, old = time.time() - seconds, []
    for ident, created in zip(ids, done.stdout.split("\n"), strict=False):
        stamp = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)", created.strip().replace(" ", "T", 1))
        if stamp and calendar.timegm(time.strptime(stamp[1], "%Y-%m-%dT%H:%M:%S")) < cutoff:
            old.append(ident)
    return old


def sweep_leftovers(max_age_seconds: float = 2 * 3600) -> None:
    """What runs that never got to clean up (a cancelled CI job, a killed pytest) left on the engine, made
    over two hours ago (a concurrent run from another checkout is younger and keeps its own), is removed:
    labelled containers, the containers, networks and volumes of ``buildstate-test-*`` compose projects, and
    the dangling layers of earlier builds (the cache tags stay)."""

    def listed(kind: str, *filters: str) -> list[str]:
        args = [kind, "ls", "-q", *(f"--filter={f}" for f in filters)]
        if kind == "container":
            args = ["ps", "-aq", *(f"--filter={f}" for f in filters)]
        return docker(*args, check=False, timeout=60).stdout.split()

    project = "label=com.docker.compose.project"
    mine = set(listed("container", f"label={TEST_LABEL}"))
    for kind in ("container", "network", "volume"):
        found = listed(kind, project)
        lister = ["ps", "-a"] if kind == "container" else [kind, "ls"]
        label = '{{.Label "com.docker.compose.project"}}'
        named = docker(*lister, "--filter", project, "--format", label, check=False, timeout=60)
        ours = [
            i
            for i, p in zip(found, named.stdout.split("\n"), strict=False)
            if p.startswith("buildstate-test-")
        ]
        old = _older_than(kind, sorted(set(ours) | (mine if kind == "container" else set())), max_age_seconds)
        if old:
            docker(
                *(["rm", "-f", "-v"] if kind == "container" else [kind, "rm"]), *old, check=False, timeout=120
            )
    docker("image", "prune", "-f", f"--filter=until={int(max_age_seconds)}s", check=False, timeout=120)


def _engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    return docker("info", "--format", "{{.ServerVersion}}", check=False, timeout=30).returncode == 0


def _compose_version() -> tuple[int, ...] | None:
    if shutil.which("docker") is None:
        return None
    done = docker("compose", "version", "--short", check=False, timeout=30)
    found = re.match(r"v?(\d+)\.(\d+)", done.stdout.strip()) if done.returncode == 0 else None
    return (int(found[1]), int(found[2])) if found else None


@contextmanager
def machine_lock() -> Iterator[None]:
    """One test run at a time starts the engine or builds stand-ins (other checkouts share the machine)."""
    with Path(tempfile.gettempdir(), "buildstate-containers.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_engine() -> dict[str, Any]:
    """An engine and Compose 2.24+, started if need be; raises ``Unavailable`` with the reason."""
    started = time.monotonic()
    tools = tools_dir()
    with machine_lock():
        if not _engine_answers() or (_compose_version() or (0,)) < COMPOSE_MIN:
            if os.environ.get("DOCKER_HOST"):  # another engine was chosen: never start a local one instead
                raise Unavailable(f"DOCKER_HOST={os.environ['DOCKER_HOST']} does not answer `docker info`")
            if tools is None:
                raise Unavailable(
                    "no container engine answers `docker info` (with Compose 2.24+) and no engine-up.sh "
                    "to start one (set BUILDSTATE_CONTAINER_TOOLS)"
                )
            if os.geteuid() != 0:
                raise Unavailable("no container engine answers `docker info`, and starting one needs root")
            for _ in range(10):  # apt-get may find dpkg locked by another install (scripts/test's, say)
                up = run(["bash", tools / "engine-up.sh"], timeout=900, check=False)
                if up.returncode == 0 or "/var/lib/dpkg/lock" not in up.stderr + up.stdout:
                    break
                time.sleep(15)
            if up.returncode != 0 or not _engine_answers():
                raise Unavailable(
                    f"engine-up.sh could not start an engine:\n{up.stdout}\n{up.stderr}"[-3000:]
                )
        version = _compose_version()
        if version is None or version < COMPOSE_MIN:
            raise Unavailable(f"Docker Compose 2.24 or newer is needed (found {version})")
    info = json.loads(docker("version", "--format", "{{json .Server}}").stdout)
    return {
        "engine": info.get("Version"),
        "compose": ".".join(map(str, version)),
        "engine_ready_seconds": round(time.monotonic() - started, 1),
    }


def base_images() -> list[str]:
    """The registry images the Dockerfiles (ARG ..._IMAGE defaults) and compose files (image:) name."""
    names = set()
    for dockerfile in ("service.Dockerfile", "resource.Dockerfile"):
        names.update(re.findall(r"^ARG \w+_IMAGE=(\S+)$", (ROOT / dockerfile).read_text(), re.MULTILINE))
    for compose_file in ("docker-compose.yml", "docker-compose.sqlite.yml"):
        names.update(re.findall(r"^\s+image: ([^$\s]+)$", (ROOT / compose_file).read_text(), re.MULTILINE))
    return sorted(names)


def _present(image: str) -> bool:
    return docker("image", "inspect", image, check=False, timeout=30).returncode == 0


def ensure_base_images() -> dict[str, Any]:
    """Every base image present: kept from an earlier run, pulled, or (no registry) a local stand-in."""
    started = time.monotonic()
    where: dict[str, str] = {}
    with machine_lock():
        for image in base_images():
            if _present(image):
                where[image] = "present"
            elif docker("pull", "-q", image, check=False, timeout=300).returncode == 0:
                where[image] = "pulled"
        missing = [image for image in base_images() if image not in where]
        if missing:
            tools = tools_dir()
            if tools is None:
                raise Unavailable(
                    f"cannot pull {', '.join(missing)} and no make-base-images.sh to build them"
                )
            with tempfile.TemporaryDirectory(prefix="buildstate-base-images-") as scratch:
                run(["bash", tools / "make-base-images.sh"], timeout=1200, env={**os.environ, "W": scratch})
            for image in missing:
                assert _present(image), f"make-base-images.sh did not make {image}"
                where[image] = "stand-in (built locally: no registry)"
    return {"base_images": where, "base_images_seconds": round(time.monotonic() - started, 1)}


def image_size(image: str) -> int:
    return int(docker("image", "inspect", "--format", "{{.Size}}", image).stdout.strip())


def build(context: Path, dockerfile: str, tag: str, *extra: str) -> dict[str, Any]:
    """``docker build`` with the classic builder, which works offline and builds every stage before the
    target (so each stage of a file is proven to build); the time, size and how much came from cache."""
    started = time.monotonic()
    done = docker(
        "build", "--force-rm", "-f", dockerfile, "-t", tag, *extra, ".",
        cwd=context, timeout=1200, env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )  # fmt: skip
    steps = len(re.findall(r"^Step \d+/\d+ :", done.stdout, re.MULTILINE))
    cached = done.stdout.count("---> Using cache")
    return {
        "build_seconds": round(time.monotonic() - started, 1),
        "steps": steps,
        "steps_from_cache": cached,
        "size_mb": round(image_size(tag) / 1e6, 1),
    }


def started_to_healthy(container: str) -> float | None:
    """Seconds from the container's start to its first passing healthcheck, as the engine recorded them."""
    state = json.loads(docker("inspect", "--format", "{{json .State}}", container).stdout)
    passed = [probe for probe in (state.get("Health") or {}).get("Log", []) if probe["ExitCode"] == 0]
    if not passed:
        return None
    return round(_timestamp(passed[0]["End"]) - _timestamp(state["StartedAt"]), 1)


def _timestamp(text: str) -> float:
    """Docker's RFC 3339 times carry nanoseconds, which ``datetime`` does not parse."""
    from datetime import datetime

    found = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    assert found, text
    whole = datetime.fromisoformat(found[1] + ("+00:00" if found[3] == "Z" else found[3]))
    return whole.timestamp() + float(f"0.{found[2] or 0}")
