"""A real ``buildstate serve`` for the browser tests, an API client to seed it, and the seed data itself."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import Page

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / ".venv/bin/buildstate"
CHROMIUM = Path("/usr/bin/chromium")
# Debian's Chromium, headless, with everything that would phone out switched off.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
README_SCREENSHOT = ROOT / "docs" / "img" / "dashboard.png"

# make_page(width=1280, height=900, *, dark=False): a page in a fresh browser context (see conftest).
PageMaker = Callable[..., Page]

ADMIN = ("ada", "correct horse battery staple")
VIEWER = ("vic", "viewer password 1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ApiError(AssertionError):
    pass


@dataclass
class Api:
    """Just enough HTTP for seeding: JSON in and out, a Bearer token from ``POST /token``."""

    base: str
    token: str | None = None

    def call(self, method: str, path: str, body: Any = None, *, expect: int | None = None) -> Any:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body).encode()
        request = urllib.request.Request(f"{self.base}{path}", data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                status, text = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, text = error.code, error.read()
        if expect is not None and status != expect:
            raise ApiError(f"{method} {path}: expected {expect}, got {status}: {text[:500]!r}")
        return json.loads(text) if text else None

    def sign_in(self, username: str, password: str) -> Api:
        grant = self.call("POST", "/token", {"username": username, "password": password}, expect=200)
        return Api(self.base, grant["access_token"])

    # The calls a pipeline makes, as the Concourse resource would make them.
    def create(self, platform: str, os_version: str, image_type: str, build_id: str, **extra: Any) -> Any:
        body = {
            "platform": platform,
            "os_version": os_version,
            "image_type": image_type,
            "build_id": build_id,
        }
        return self.call("POST", "/builds", body | extra, expect=201)

    def state(self, ref: str, code: int, message: str | None = None, **extra: Any) -> Any:
        return self.call(
            "POST", f"/builds/{ref}/state", {"state_code": code, "message": message, **extra}, expect=200
        )

    def fail(self, ref: str, message: str, code: str, component: str, **extra: Any) -> Any:
        body = {"error_message": message, "error_code": code, "component": component, **extra}
        return self.call("POST", f"/builds/{ref}/failure", body, expect=200)

    def reset(self, ref: str, reason: str) -> Any:
        return self.call("POST", f"/builds/{ref}/reset", {"reason": reason}, expect=200)

    def artifacts(self, ref: str, *artifacts: dict[str, Any]) -> Any:
        return self.call("POST", f"/builds/{ref}/artifacts", {"artifacts": list(artifacts)}, expect=200)


@dataclass
class Service:
    url: str
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def stop(self) -> None:
        if self.process is None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


def start_service(workdir: Path, **extra_env: str) -> Service:
    """Migrate, create the test users with the CLI (as an operator would), then serve on a free port."""
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUILDSTATE_", "PROMETHEUS_"))}
    env.update(
        BUILDSTATE_DATA_DIR=str(data),
        BUILDSTATE_DATABASE_URL=f"sqlite:///{data / 'buildstate.db'}",
        BUILDSTATE_LOG_FORMAT="text",
        # Browsers fetch a dozen files at once; the per-user rate limit has tests of its own.
        BUILDSTATE_RATE_LIMIT_BURST="100000",
        BUILDSTATE_RATE_LIMIT_PER_SECOND="100000",
        BUILDSTATE_STREAM_HEARTBEAT_SECONDS="2",
    )
    env.update(extra_env)
    subprocess.run([CLI, "migrate"], env=env, check=True, capture_output=True, timeout=60)
    for (username, password), role in ((ADMIN, "admin"), (VIEWER, "viewer")):
        subprocess.run(
            [CLI, "users", "create", "--username", username, "--role", role, "--password", password],
            env=env, check=True, capture_output=True, timeout=60,
        )  # fmt: skip
    port = free_port()
    log = workdir / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [CLI, "serve", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    service = Service(f"http://127.0.0.1:{port}", env, log, process)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"buildstate serve exited:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{service.url}/ready", timeout=2) as response:
                if response.status == 200:
                    return service
        except OSError:
            time.sleep(0.2)
    service.stop()
    raise RuntimeError(f"buildstate serve did not become ready:\n{log.read_text()}")


def concourse(pipeline: str, job: str, number: int) -> dict[str, str]:
    """Provenance as the resource records it (the host is never contacted: nothing leaves 127.0.0.1)."""
    return {
        "team": "images",
        "pipeline": pipeline,
        "job": job,
        "build_name": str(number),
        "build_url": f"https://ci.example.test/teams/images/pipelines/{pipeline}/jobs/{job}/builds/{number}",
    }


STEPS = [
    (10, "Packer build started"),
    (25, "Base image booted"),
    (50, "Starting Ansible configuration"),
    (75, "Ansible configuration completed"),
    (90, "Snapshot and image registration"),
    (100, "Image published"),
]


def run_to(api: Api, build: dict[str, Any], code: int, provenance: dict[str, str] | None = None) -> None:
    for step, message in STEPS:
        if step > code:
            break
        api.state(build["id"], step, message, provenance=provenance)


@dataclass
class Seeded:
    """The builds the dashboard tests look for, by what they show."""

    succeeded: dict[str, Any]
    running: dict[str, Any]
    failed: dict[str, Any]
    reset: dict[str, Any]
    superseded: dict[str, Any]


def seed(api: Api) -> Seeded:
    """A small fleet: three platforms, four OS versions, three image types, every status, resets."""
    labels = {"region": "eu-west-1", "packer": "1.11.2", "owner": "platform-images"}

    superseded = api.create("aws", "rhel-9.4", "base", "rhel-9.4-base-0999", labels=labels)
    run_to(api, superseded, 50)
    api.fail(superseded["id"], "Timed out waiting for SSH", "PACKER_TIMEOUT", "packer")

    succeeded = api.create(
        "aws", "rhel-9.4", "base", "rhel-9.4-base-1001", labels=labels,
        provenance=concourse("rhel-9.4", "build-base", 41),
    )  # fmt: skip
    run_to(api, succeeded, 100, concourse("rhel-9.4", "build-base", 41))

    running = api.create("aws", "rhel-9.4", "cis-hardened", "rhel-9.4-cis-1002", labels=labels)
    run_to(api, running, 75, concourse("rhel-9.4", "build-cis", 17))

    failed = api.create("aws", "rhel-8.10", "base", "rhel-8.10-base-1003", labels=labels)
    run_to(api, failed, 50, concourse("rhel-8.10", "build-base", 88))
    api.fail(
        failed["id"], "Timeout waiting for SSH to become available after 20m0s", "PACKER_TIMEOUT", "packer",
        details={"stage": "packer-build", "exit_code": 1, "builder": "amazon-ebs"},
        provenance=concourse("rhel-8.10", "build-base", 88),
    )  # fmt: skip

    reset = api.create("aws", "ubuntu-22.04", "base", "ubuntu-22.04-base-1004", labels=labels)
    run_to(api, reset, 25)
    api.fail(reset["id"], "Instance quota exceeded in eu-west-1", "QUOTA_EXCEEDED", "aws-ec2")
    api.reset(reset["id"], "Quota raised by cloud team (ticket OPS-4411); retrying")
    run_to(api, reset, 25, concourse("ubuntu-22.04", "build-base", 12))

    gpu = api.create("aws", "ubuntu-22.04", "gpu", "ubuntu-22.04-gpu-1005")
    run_to(api, gpu, 50)

    for os_version, code in (("rhel-9.4", 100), ("ubuntu-22.04", 10)):
        build = api.create("azure", os_version, "base", f"az-{os_version}-base-2001")
        run_to(api, build, code)
    windows = api.create("azure", "windows-2022", "base", "az-windows-2022-base-2002")
    run_to(api, windows, 25)
    api.fail(windows["id"], "WinRM host unreachable", "ANSIBLE_UNREACHABLE", "ansible")

    vsphere = api.create("vsphere", "rhel-8.10", "base", "vs-rhel-8.10-base-3001")
    run_to(api, vsphere, 100)
    cis = api.create("vsphere", "rhel-9.4", "cis-hardened", "vs-rhel-9.4-cis-3002")
    run_to(api, cis, 75)
    api.fail(cis["id"], "12 CIS rules failed after remediation", "CIS_SCAN_FAILED", "openscap")
    win = api.create("vsphere", "windows-2022", "base", "vs-windows-2022-base-3003")
    run_to(api, win, 90)

    return Seeded(succeeded, running, failed, reset, superseded)


def screenshot(page: Page, name: str, *, full_page: bool = True) -> Path:
    """Save what the page shows under artifacts/screenshots/ (git-ignored; CI can keep it as an artifact)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page, animations="disabled", caret="hide")
    return path


def sign_in(page: Page, username: str, password: str, start: str = "/ui/") -> None:
    """Open the dashboard as a new visitor does and sign in through the form."""
    page.goto(start)
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
