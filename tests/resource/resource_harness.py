"""Run the installed resource scripts the way the Concourse ATC does.

- The request goes to stdin as one JSON object, with empty keys left out (no ``version`` on the
  first check, no ``params`` when a step has none).
- ``check`` gets an empty environment; ``in``/``out`` get the ``BUILD_*`` variables only.
- ``in`` gets its destination directory and ``out`` the build's sources directory as ``$1``.
- The result must be exactly one JSON value on stdout (the ATC decodes the first value, so
  anything before it breaks the step); on failure stdout must be empty.

The scripts are the console commands installed in the venv, called by absolute path, exactly as
``/opt/resource/{check,in,out}`` are in the image (or those, when BUILDSTATE_RESOURCE_SCRIPTS_DIR
names them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VENV_BIN = Path(sys.executable).parent
# In the image's test stage this is /opt/resource: the suite then runs the image's own scripts.
SCRIPTS_DIR = os.environ.get("BUILDSTATE_RESOURCE_SCRIPTS_DIR")
SCRIPTS = (
    {name: Path(SCRIPTS_DIR) / name for name in ("check", "in", "out")}
    if SCRIPTS_DIR
    else {name: VENV_BIN / f"buildstate-resource-{name}" for name in ("check", "in", "out")}
)
OMIT: Any = object()
# The test-only switch that shrinks exponential backoff (Retry-After is still honoured).
FAST_BACKOFF = {"BUILDSTATE_RESOURCE_BACKOFF_SCALE": "0.01"}


@dataclass(frozen=True)
class Run:
    script: str
    returncode: int
    stdout: str
    stderr: str

    def result(self) -> Any:
        """The one JSON value on stdout; fails the test on an error exit or any extra output."""
        assert self.returncode == 0, f"{self.script} failed ({self.returncode}): {self.stderr}"
        assert self.stdout.strip(), f"{self.script} printed nothing on stdout"
        # json.loads rejects anything after the first value ("Extra data"), unlike the ATC, so
        # this is stricter than Concourse itself.
        return json.loads(self.stdout)

    def error(self) -> str:
        """The one-line reason of a failed run; asserts stdout stayed empty and no traceback."""
        assert self.returncode != 0, f"{self.script} unexpectedly succeeded: {self.stdout}"
        assert self.stdout == "", f"{self.script} wrote to stdout on failure: {self.stdout!r}"
        assert "Traceback" not in self.stderr, self.stderr
        lines = [line for line in self.stderr.splitlines() if line.startswith("buildstate ")]
        assert len(lines) == 1, f"expected one error line, got: {self.stderr}"
        return lines[0]


def build_env(**overrides: str | None) -> dict[str, str]:
    """What the ATC sets for ``in``/``out`` in a pipeline job build (no PATH, no HOME)."""
    env = {
        "BUILD_ID": "4242",
        "BUILD_NAME": "17",
        "BUILD_JOB_NAME": "build-image",
        "BUILD_PIPELINE_NAME": "images",
        "BUILD_TEAM_NAME": "main",
        "ATC_EXTERNAL_URL": "https://ci.example.com",
    }
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run_script(
    script: str, request: dict[str, Any], args: list[str], env: dict[str, str], timeout: float = 90
) -> Run:
    return run_raw(script, json.dumps(request), args, env, timeout)


def run_raw(script: str, stdin: str, args: list[str], env: dict[str, str], timeout: float = 90) -> Run:
    completed = subprocess.run(
        [str(SCRIPTS[script]), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    return Run(script, completed.returncode, completed.stdout, completed.stderr)


def check(source: Any, version: Any = OMIT, env: dict[str, str] | None = None) -> Run:
    request: dict[str, Any] = {"source": source}
    if version is not OMIT:
        request["version"] = version
    return run_script("check", request, [], env or {})


def get(
    source: Any,
    version: Any,
    destination: Path,
    params: Any = OMIT,
    env: dict[str, str] | None = None,
) -> Run:
    request: dict[str, Any] = {"source": source, "version": version}
    if params is not OMIT:
        request["params"] = params
    return run_script("in", request, [str(destination)], build_env() if env is None else env)


def put(source: Any, params: Any, sources_dir: Path, env: dict[str, str] | None = None) -> Run:
    request: dict[str, Any] = {"source": source}
    if params is not OMIT:
        request["params"] = params
    return run_script("out", request, [str(sources_dir)], build_env() if env is None else env)


def put_then_get(
    source: Any,
    params: Any,
    workdir: Path,
    env: dict[str, str] | None = None,
    get_params: Any = OMIT,
) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """A ``put`` step as the ATC runs it: ``out``, then the implicit ``in`` with out's version."""
    sources = workdir / "put"
    sources.mkdir(parents=True, exist_ok=True)
    out = put(source, params, sources, env).result()
    destination = workdir / "get"
    fetched = get(source, out["version"], destination, get_params, env).result()
    return out, fetched, destination
