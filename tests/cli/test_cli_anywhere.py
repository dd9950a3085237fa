"""The ``buildstate`` command as a newcomer runs it: from any directory, beside a ``scripts/serve`` started
elsewhere, piped into other tools. Each test runs the installed command in a directory of its own."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from tests.support import CLI, ServiceProcess, call, clean_env


def cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def default_env(home: Path) -> dict[str, str]:
    """No BUILDSTATE_* at all: every store comes from the default data dir, under this XDG data home."""
    env = clean_env(home)
    del env["BUILDSTATE_DATA_DIR"]
    env["XDG_DATA_HOME"] = str(home)
    return env


@pytest.mark.slow
def test_a_key_made_in_another_directory_works_with_the_service_scripts_serve_started(
    tmp_path: Path,
) -> None:
    env = default_env(tmp_path / "xdg")
    served = ServiceProcess(env, tmp_path / "serve.log", workers=1).start()  # scripts/serve: cwd = the repo
    try:
        elsewhere = tmp_path / "somewhere-else"
        elsewhere.mkdir()
        made = cli("keys", "create", "--name", "elsewhere", "--scope", "read", cwd=elsewhere, env=env)
        assert made.returncode == 0, made.stderr
        store = tmp_path / "xdg" / "buildstate" / "buildstate.db"
        assert made.stderr.splitlines()[0] == (
            f"buildstate: store sqlite:///{store} (the default data dir; BUILDSTATE_DATA_DIR changes it)"
        )
        key = made.stdout.splitlines()[-1]
        assert call(f"{served.url}/builds", headers={"X-API-Key": key}).status == 200
        assert list(elsewhere.iterdir()) == []  # no ./data of its own
        assert f"store sqlite:///{store}" in (tmp_path / "serve.log").read_text()
    finally:
        served.stop()


@pytest.mark.parametrize(
    "command",
    [["migrate"], ["keys", "list"], ["users", "list"], ["webhooks", "list"]],
    ids=" ".join,
)
def test_every_store_command_says_on_stderr_which_store_it_used(command: list[str], tmp_path: Path) -> None:
    env = clean_env(tmp_path / "chosen")
    ran = cli(*command, cwd=tmp_path, env=env)
    assert ran.returncode == 0, ran.stderr
    chosen = tmp_path / "chosen" / "buildstate.db"
    assert f"buildstate: store sqlite:///{chosen} (BUILDSTATE_DATA_DIR)" in ran.stderr.splitlines()
    assert "buildstate: store" not in ran.stdout


def test_a_reader_that_stops_reading_ends_the_command_quietly(tmp_path: Path) -> None:
    env = clean_env(tmp_path / "data")
    piped = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {CLI} keys list --json | head -c0"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert "Traceback" not in piped.stderr and "BrokenPipe" not in piped.stderr, piped.stderr
    assert piped.returncode == 141  # as SIGPIPE ends other tools


def test_an_unreachable_store_is_one_line_that_never_shows_a_database_password(tmp_path: Path) -> None:
    url = "postgresql://builds:s3cret-pw@127.0.0.1:1/db?sslpassword=other-s3cret&sslmode=disable"
    ran = cli("keys", "list", cwd=tmp_path, env=clean_env(tmp_path / "data", url))
    shown = "postgresql://builds:***@127.0.0.1:1/db?sslpassword=***&sslmode=disable (BUILDSTATE_DATABASE_URL)"
    assert ran.returncode == 1  # nothing listens on port 1: one line that says so, no traceback
    refused = "ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', 1)"
    assert ran.stderr.splitlines() == [f"buildstate: store {shown}", f"buildstate: store {shown}: {refused}"]
    assert "s3cret" not in ran.stdout + ran.stderr


@pytest.mark.parametrize("command", [["migrate"], ["serve", "--bind", "127.0.0.1:0"]], ids=" ".join)
def test_a_data_dir_it_cannot_write_is_one_line_that_says_what_to_make_writable(
    command: list[str], tmp_path: Path
) -> None:
    """As in a container with a read-only root and no volume on /var/lib/buildstate: SQLite alone would say
    ``unable to open database file`` (or the OS "Read-only file system"), not which folder to fix."""
    # A folder nobody may create files in, root included (the tests may run as root, whom modes never stop).
    data = Path("/sys/kernel")
    env = clean_env(
        data, BUILDSTATE_ENV="production", BUILDSTATE_JWT_SECRET="x" * 40, BUILDSTATE_LOG_FORMAT="text"
    )
    ran = cli(*command, cwd=tmp_path, env=env)
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert "Traceback" not in ran.stderr
    [line] = [line for line in ran.stderr.splitlines() if "cannot write" in line]
    # /sys refuses writes even to root; where it is mounted read-only (inside a container) it says so.
    line = line.replace("(Read-only file system)", "(Permission denied)")
    assert line == (
        f"buildstate: store sqlite:///{data}/buildstate.db (BUILDSTATE_DATA_DIR): cannot write {data} "
        f"(Permission denied): the SQLite database lives there, so it must be writable by uid {os.getuid()}: "
        f"mount a volume on it (docker run -v buildstate-data:{data} ...), or set BUILDSTATE_DATA_DIR to a "
        "writable folder, or BUILDSTATE_DATABASE_URL to PostgreSQL"
    )


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        (
            "BUILDSTATE_JWT_SECRET",
            "a-mistyped-secret-2f9c",
            "BUILDSTATE_JWT_SECRET: Value should have at least 32",
        ),
        (
            "BUILDSTATE_DATABASE_URL",
            "mysql://u:pw-2f9c@db/x",
            "BUILDSTATE_DATABASE_URL: Value error, must start with sqlite:///",
        ),
        ("BUILDSTATE_WORKERS", "many-2f9c", "BUILDSTATE_WORKERS: Input should be a valid integer"),
        (
            "BUILDSTATE_PUBLIC_URL",
            "https://u:pw-2f9c@ci/",
            "BUILDSTATE_PUBLIC_URL: Value error, must be an http(s) URL",
        ),
    ],
)
def test_a_setting_that_does_not_validate_is_one_line_without_its_value(
    tmp_path: Path, name: str, value: str, said: str
) -> None:
    """pydantic's message quotes the value (a mistyped secret was printed) under a traceback."""
    done = cli("keys", "list", cwd=tmp_path, env={**clean_env(tmp_path / "data"), name: value})
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1].startswith("buildstate: settings: ") and said in done.stderr
    assert "2f9c" not in done.stderr + done.stdout and "Traceback" not in done.stderr
    # A mysql:// URL made a SQLite file named like it, password and all, in the working directory.
    assert sorted(p.name for p in tmp_path.iterdir()) == []
