"""A newcomer follows README.md and docs/resource.md literally, in a fresh copy of the project.

The copy holds the project's files as a clone would (no .venv, no node_modules, no data). ``scripts/serve``
sets it up on first run and starts the service; the README's other command blocks, its ``events tail``
line and the resource page's hand-run ``check`` then run as written, in one shell in the copy, each
command's failure failing the test. Two things differ from a newcomer's terminal, on purpose: the service
listens on a free port rather than 8080 (``BUILDSTATE_BIND`` and ``BUILDSTATE_URL``, and the blocks'
``127.0.0.1:8080`` rewritten to it, so that parallel runs cannot collide), and ``scripts/test`` in the first
block is not run (it is this suite). The default store is used, under an XDG data home of the test's own.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support import free_port, fresh_copy

# A fresh set-up (pip install into a new .venv, a minute or more) and a real server.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
FENCE = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)
TAIL = re.compile(r"`(BUILDSTATE_API_KEY=\$KEY \.venv/bin/buildstate events tail --after 0)`")


def sh_blocks(path: Path) -> list[str]:
    return FENCE.findall(path.read_text())


@pytest.fixture(scope="module")
def newcomer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str], str, Path]]:
    work = tmp_path_factory.mktemp("newcomer")
    copy = fresh_copy(work / "buildstate")
    port = free_port()
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(work / "home"),
        "XDG_DATA_HOME": str(work / "xdg"),
        "LANG": "C.UTF-8",
        "BUILDSTATE_BIND": f"127.0.0.1:{port}",
        "BUILDSTATE_URL": f"http://127.0.0.1:{port}",  # where `events tail` looks, 8080 by default
    }
    (work / "home").mkdir()
    pip_cache = Path.home() / ".cache" / "pip"  # the machine's download cache, as a newcomer's pip has one
    if pip_cache.is_dir():
        env["PIP_CACHE_DIR"] = str(pip_cache)
    log = work / "serve.log"
    with log.open("wb") as out:
        served = subprocess.Popen(
            ["scripts/serve"], cwd=copy, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600  # the first run installs .venv
        while time.monotonic() < deadline:
            if served.poll() is not None:
                pytest.fail(f"scripts/serve exited:\n{log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{url}/ready", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"scripts/serve never became ready:\n{log.read_text()[-4000:]}")
        yield copy, env, url, log
    finally:
        served.terminate()
        try:
            served.wait(30)
        except subprocess.TimeoutExpired:
            served.kill()
            served.wait(10)


def test_the_readme_and_the_resource_page_run_as_written(
    newcomer: tuple[Path, dict[str, str], str, Path],
) -> None:
    copy, env, url, log = newcomer
    readme, resource = sh_blocks(copy / "README.md"), sh_blocks(copy / "docs/resource.md")
    assert readme[0].split()[:1] == ["scripts/serve"] and "scripts/test" in readme[0]
    [tail] = TAIL.findall((copy / "README.md").read_text())
    [check] = resource
    script = "\n".join(
        [
            "set -euo pipefail",
            *readme[1:],
            "echo '--- tail'",
            # It follows the feed for ever, as it should: its first six lines are the build's events.
            f"export KEY; timeout 10 bash -c '{tail}' > tail.out || [ $? -eq 124 ]",
            "cat tail.out",
            "echo '--- check'",
            check,
        ]
    ).replace("127.0.0.1:8080", url.removeprefix("http://"))
    ran = subprocess.run(
        ["bash", "-c", script], cwd=copy, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert ran.returncode == 0, f"stdout:\n{ran.stdout}\nstderr:\n{ran.stderr}"
    out, err = ran.stdout, ran.stderr
    assert "Traceback" not in out + err

    first_steps, _, rest = out.partition("--- tail")
    assert "created user alice (operator)" in first_steps
    assert '"succeeded": 1' in first_steps and '"running": 0' in first_steps  # the summary's counts
    tail_lines, _, checked = rest.partition("--- check")
    events = [line for line in tail_lines.splitlines() if "rhel-8.8-base-1" in line]
    assert [line.split()[5] for line in events] == ["0", "10", "25", "50", "75", "100"], tail_lines
    assert json.loads(checked) == [{"build": "rhel-8.8-base-1", "seq": "6", "state": "100"}], checked
    # Every command said which store it used, and the same one the service uses.
    store = f"sqlite:///{env['XDG_DATA_HOME']}/buildstate/buildstate.db"
    assert f"buildstate: store {store} (the default data dir" in err
    assert store in log.read_text()


def test_the_serve_log_names_runnable_commands_and_the_dashboard(
    newcomer: tuple[Path, dict[str, str], str, Path],
) -> None:
    _, _, url, log = newcomer
    text = log.read_text()
    assert f"dashboard: {url}/ui/" in text
    hint = next(line for line in text.splitlines() if "no admin credential exists yet" in line)
    assert ".venv/bin/buildstate keys create --name admin --scope admin" in hint
    assert " buildstate keys" not in hint
