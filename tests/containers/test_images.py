"""Both images, run for real: users, sizes, the SQLite data directory, and the resource image's scripts
run the way Concourse runs them (JSON on stdin, ``/opt/resource/{check,in,out}``) against the service
image, on a network of the test's own."""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import container_engine as engine
import pytest

pytestmark = [pytest.mark.containers, pytest.mark.slow, pytest.mark.timeout(1800)]

JWT_SECRET = "containers-test-secret-0123456789abcdef0123456789"
TMPFS = "/tmp"  # noqa: S108 - the container's own, as compose's x-hardening mounts it
NON_ROOT = "65534:65534"  # nobody: any uid but root must do
# What the ATC sets for in/out in a job build; check gets nothing.
BUILD_ENV = {
    "BUILD_ID": "4242",
    "BUILD_NAME": "17",
    "BUILD_JOB_NAME": "build-image",
    "BUILD_PIPELINE_NAME": "images",
    "BUILD_TEAM_NAME": "main",
    "ATC_EXTERNAL_URL": "https://ci.example.com",
}


def fernet_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def config(image: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(
        engine.docker("image", "inspect", "--format", "{{json .Config}}", image).stdout
    )
    return found


def test_the_service_image_runs_as_its_user_and_the_resource_image_as_concourse_expects(
    images: dict[str, str],
) -> None:
    service, resource = config(images["service"]), config(images["resource"])
    assert service["User"] == "10001:10001"
    assert service["Healthcheck"]["Test"][0] == "CMD"
    assert resource.get("User", "") in ("", "root", "0")  # Concourse's get/put directories belong to root
    for image in images.values():  # nothing is installed at run time: no pip in either image
        done = engine.docker("run", "--rm", image, "python", "-m", "pip", "--version", check=False)
        assert done.returncode != 0 and "No module named pip" in done.stderr, done.stdout + done.stderr


def test_each_image_adds_little_to_its_base(images: dict[str, str]) -> None:
    base = engine.image_size("python:3.11-slim") / 1e6
    service, resource = (engine.image_size(images[name]) / 1e6 for name in ("service", "resource"))
    engine.REPORT["python_base_mb"] = round(base, 1)
    assert resource - base < 20, (resource, base)  # the standard-library package and a CA bundle
    assert service - base < 150, (service, base)  # the venv with the service's dependencies


def test_sqlite_on_a_read_only_root_with_no_volume_says_which_folder_to_mount(images: dict[str, str]) -> None:
    """The mistake of running the image read-only (compose's ``read_only``) without a data volume."""
    done = engine.docker(
        "run", "--rm", "--read-only", "--tmpfs", TMPFS, "-e", f"BUILDSTATE_JWT_SECRET={JWT_SECRET}",
        "-e", f"BUILDSTATE_WEBHOOK_KEY={fernet_key()}", images["service"],
        check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "buildstate: store sqlite:////var/lib/buildstate/buildstate.db (BUILDSTATE_DATA_DIR): cannot write "
        "/var/lib/buildstate (Read-only file system): the SQLite database lives there, so it must be "
        "writable by uid 10001: mount a volume on it (docker run -v buildstate-data:/var/lib/buildstate "
        "...), or set BUILDSTATE_DATA_DIR to a writable folder, or BUILDSTATE_DATABASE_URL to PostgreSQL"
    )


@dataclass(frozen=True)
class Service:
    name: str  # the container's name, also its host name on the network
    network: str
    url: str  # the port published on 127.0.0.1, for the test itself
    key: str  # read + write, made with the image's own CLI


def wait_ready(url: str, seconds: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        try:
            with urllib.request.urlopen(f"{url}/ready", timeout=2) as answer:
                if answer.status == 200:
                    return time.monotonic() - started
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} not ready after {seconds} s")


def wait_healthy(container: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status = engine.docker("inspect", "--format", "{{.State.Health.Status}}", container).stdout.strip()
        if status == "healthy":
            return
        time.sleep(0.5)
    raise AssertionError(f"{container} not healthy after {seconds} s")


@pytest.fixture(scope="module")
def service(images: dict[str, str], token: str) -> Iterator[Service]:
    """The service image on SQLite, hardened as compose runs it: read-only root, a volume for the data."""
    name, network, volume = (f"buildstate-test-{token}-{part}" for part in ("service", "net", "data"))
    engine.docker("network", "create", network)
    try:
        started = time.monotonic()
        engine.docker(
            "run", "-d", "--name", name, "--network", network, "-p", "127.0.0.1::8080",
            "--read-only", "--tmpfs", TMPFS, "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "-v", f"{volume}:/var/lib/buildstate",
            "-e", f"BUILDSTATE_JWT_SECRET={JWT_SECRET}", "-e", f"BUILDSTATE_WEBHOOK_KEY={fernet_key()}",
            images["service"],
        )  # fmt: skip
        port = engine.docker("port", name, "8080/tcp").stdout.split()[0]
        assert port.startswith("127.0.0.1:"), port
        url = f"http://{port}"
        ready = wait_ready(url, 90)
        wait_healthy(name, 120)
        engine.REPORT["service_container"] = {
            "start_to_ready_seconds": round(ready, 1),
            "start_to_healthy_seconds": engine.started_to_healthy(name),
            "since_docker_run_seconds": round(time.monotonic() - started, 1),
        }
        made = engine.docker(
            "exec", name, "buildstate", "keys", "create", "--name", "concourse", "--scope", "read",
            "--scope", "write",
        )  # fmt: skip
        yield Service(name, network, url, made.stdout.strip().splitlines()[-1])
    finally:
        logs = engine.docker("logs", "--tail", "50", name, check=False)
        engine.docker("rm", "-f", "-v", name, check=False)
        engine.docker("volume", "rm", "-f", volume, check=False)
        engine.docker("network", "rm", network, check=False)
        print(logs.stdout[-3000:], logs.stderr[-3000:])


def resource(
    images: dict[str, str],
    service: Service,
    script: str,
    request: dict[str, Any],
    *,
    user: str | None,
    directory: Path | None = None,
) -> Any:
    """One step as the ATC runs it: the script by path, the request on stdin, one JSON value on stdout; the
    container read-only and without capabilities (a script needs neither)."""
    args = ["run", "--rm", "-i", "--network", service.network, "--read-only", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges"]  # fmt: skip
    if user:
        args += ["--user", user]
    if script != "check":
        for name, value in BUILD_ENV.items():
            args += ["-e", f"{name}={value}"]
    command = [f"/opt/resource/{script}"]
    if directory is not None:
        inside = "/tmp/build/step"  # noqa: S108 - in the container, as Concourse names step directories
        args += ["-v", f"{directory}:{inside}"]
        command.append(inside)
    done = engine.docker(*args, images["resource"], *command, stdin=json.dumps(request), check=False)
    assert done.returncode == 0, f"{script} exited {done.returncode}: {done.stderr}"
    assert service.key not in done.stdout + done.stderr  # the key never shows in a build log
    return json.loads(done.stdout)


@pytest.mark.parametrize("user", [None, NON_ROOT], ids=["as-root-like-concourse", "as-uid-65534"])
def test_the_resource_image_records_and_triggers_on_a_build_in_the_service_container(
    images: dict[str, str], service: Service, token: str, tmp_path: Path, user: str | None
) -> None:
    platform = f"c{token}{'n' if user else 'r'}"
    source = {"url": f"http://{service.name}:8080", "api_key": service.key, "platform": platform}
    step = tmp_path / "step"
    step.mkdir()
    step.chmod(0o777)  # Concourse gives the step its directory; here it must suit any uid
    build_id = f"{platform}-rhel-8.8-base-1"
    create = {
        "create": {"platform": platform, "os_version": "rhel-8.8", "image_type": "base", "build_id": build_id}
    }

    def step_run(script: str, request: dict[str, Any], directory: Path | None = None) -> Any:
        return resource(images, service, script, request, user=user, directory=directory)

    created = step_run("out", {"source": source, "params": create}, step)
    assert created["version"]["build"] == build_id and created["version"]["state"] == "0"
    assert step_run("check", {"source": {**source, "states": [100]}}) == []
    done = step_run("out", {"source": source, "params": {"build": build_id, "state": 100}}, step)
    finished = done["version"]
    assert finished["state"] == "100"
    assert {"name": "status", "value": "succeeded"} in done["metadata"]

    checked = step_run("check", {"source": {**source, "states": [100]}})
    assert checked == [finished]  # what put printed is what check finds: one Concourse version
    got = step_run("in", {"source": source, "version": finished}, step)
    assert got["version"] == finished
    assert (step / "build_id").read_text() == build_id
    assert (step / "state").read_text() == "100"
    assert (step / "status").read_text() == "succeeded"
    assert json.loads((step / "event.json").read_text())["provenance"]["pipeline"] == "images"


def test_compose_builds_both_images_with_buildkit_too(
    checkout: Path, container_engine: dict[str, Any], token: str
) -> None:
    """``docker compose build`` as the docs say (BuildKit, the engine's own or buildx), with no frontend
    image to fetch: the files build with either builder. The fixtures above used the classic one."""
    tags = {
        "SERVICE_IMAGE": f"buildstate-test-{token}:service-bk",
        "RESOURCE_IMAGE": f"buildstate-test-{token}:resource-bk",
    }
    env = {name: os.environ[name] for name in ("PATH", "HOME", "DOCKER_HOST") if name in os.environ}
    # Compose reads the whole file to build, so the variables it requires must be set; nothing runs.
    env |= {
        "POSTGRES_PASSWORD": "unused",
        "BUILDSTATE_JWT_SECRET": JWT_SECRET,
        "BUILDSTATE_WEBHOOK_KEY": fernet_key(),
        **tags,
    }
    started = time.monotonic()
    try:
        engine.run(
            ["docker", "compose", "-p", f"buildstate-test-{token}-build", "build"],
            cwd=checkout,
            env=env,
            timeout=1200,
        )
        engine.REPORT["compose_build_buildkit_seconds"] = round(time.monotonic() - started, 1)
        for tag in tags.values():
            assert engine.image_size(tag) > 0
        assert config(tags["SERVICE_IMAGE"])["User"] == "10001:10001"
    finally:
        engine.docker("rmi", "--no-prune", *tags.values(), check=False)
