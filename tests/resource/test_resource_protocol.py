"""The Concourse contract of every script: one JSON value on stdout, whatever else writes there."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import resource_harness as harness
from resource_fake_server import FakeServer

NOISY_HANDLER = """
import os, subprocess, sys
from buildstate_resource.protocol import run

def handler(request, args):
    print("print noise")
    sys.stdout.write("sys.stdout noise\\n")
    os.write(1, b"fd 1 noise\\n")
    subprocess.run(["/bin/echo", "child process noise"], check=True)
    if request.get("explode"):
        raise KeyError("surprise")
    return [{"seq": "1", "build": "b", "state": "0"}]

run("check", handler)
"""


def _noisy(stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", NOISY_HANDLER],
        input=stdin,
        capture_output=True,
        text=True,
        env={},
        check=False,
        timeout=30,
    )


def test_stdout_is_guarded_at_the_file_descriptor_level() -> None:
    completed = _noisy('{"source": {}}')

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == '[{"seq": "1", "build": "b", "state": "0"}]\n'
    for noise in ("print noise", "sys.stdout noise", "fd 1 noise", "child process noise"):
        assert noise in completed.stderr


def test_an_unexpected_error_is_one_line_without_traceback() -> None:
    completed = _noisy('{"explode": true}')
    run = harness.Run("check", completed.returncode, completed.stdout, completed.stderr)

    assert run.error() == "buildstate check: internal error (KeyError): 'surprise'"


def test_scripts_do_not_import_the_service_dependencies() -> None:
    heavy = ("pydantic", "aiohttp", "asyncpg", "gunicorn", "uvloop", "buildstate")
    probe = (
        "import sys, buildstate_resource.check, buildstate_resource.get, buildstate_resource.put\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r}))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env={}
    )

    assert completed.stdout.strip() == "[]"


def test_check_runs_with_an_empty_environment(fake_server: FakeServer, tmp_path: Path) -> None:
    run = harness.check({"url": fake_server.url}, env={})

    assert run.result() == []
    assert run.stderr == ""
