"""One ``docker compose`` project of the shipped files, set up as the docs say (``cp .env.example .env``, fill
in the secrets), with a project name, network and loopback port of its own."""

from __future__ import annotations

import base64
import json
import os
import random
import secrets
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import container_engine as engine
from tests.support import free_port

# The host's own networks (and Docker's default pools, 172.17-31.x and 192.168.x) stay clear of these.
SUBNETS = "10.{}.{}.0/24"


def env_file(checkout: Path, images: dict[str, str], port: int, subnet: str, **extra: str) -> str:
    """.env.example with the secrets filled in and the commented variables this run needs set."""
    values = {
        "POSTGRES_PASSWORD": secrets.token_hex(24),
        "BUILDSTATE_JWT_SECRET": secrets.token_urlsafe(48),
        "BUILDSTATE_WEBHOOK_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        "HTTP_PORT": f"127.0.0.1:{port}",
        "NETWORK_SUBNET": subnet,
        "SERVICE_IMAGE": images["service"],
        "RESOURCE_IMAGE": images["resource"],
        **extra,
    }
    lines = []
    for line in (checkout / ".env.example").read_text().splitlines():
        name = line.lstrip("# ").split("=", 1)[0]
        lines.append(f"{name}={values.pop(name)}" if "=" in line and name in values else line)
    lines += [f"{name}={value}" for name, value in values.items()]  # those .env.example does not list
    return "\n".join(lines) + "\n"


@dataclass
class Stack:
    name: str
    directory: Path
    files: list[str]
    port: int = field(default_factory=free_port)
    up_seconds: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def compose(
        self, *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        # Only what the engine needs from this process: every project variable comes from .env, as for a user.
        env = {name: os.environ[name] for name in ("PATH", "HOME", "DOCKER_HOST") if name in os.environ}
        files = [arg for name in self.files for arg in ("-f", name)]
        return engine.run(
            ["docker", "compose", "-p", self.name, "--project-directory", self.directory, *files, *args],
            timeout=timeout, check=check, env=env, cwd=self.directory,
        )  # fmt: skip

    def up(self, images: dict[str, str], *args: str, **extra_env: str) -> float:
        """``up -d --wait`` (every service running and healthy, migrate exited 0); the seconds it took.
        A subnet another network holds already is replaced by another random one."""
        for _ in range(5):
            subnet = SUBNETS.format(random.randrange(100, 250), random.randrange(256))
            text = env_file(self.directory, images, self.port, subnet, **extra_env)
            (self.directory / ".env").write_text(text)
            started = time.monotonic()
            done = self.compose(
                "up", "-d", "--wait", "--wait-timeout", "240", *args, timeout=300, check=False
            )
            if done.returncode == 0:
                self.up_seconds = round(time.monotonic() - started, 1)
                return self.up_seconds
            if "overlaps" not in done.stderr:
                logs = self.compose("logs", "--tail", "40", check=False, timeout=60)
                raise AssertionError(f"compose up failed:\n{done.stderr[-4000:]}\n{logs.stdout[-6000:]}")
            self.compose("down", "-v", check=False)
        raise AssertionError("no free subnet found for the project network")

    def containers(self, service: str | None = None, *, every: bool = False) -> list[dict[str, Any]]:
        args = ["ps", "--format", "json", *(["-a"] if every else []), *([service] if service else [])]
        out = self.compose(*args).stdout.strip()
        # One JSON object per line (Compose 2.21+), or one array (older 2.x).
        found: list[dict[str, Any]] = (
            json.loads(out)
            if out.startswith("[")
            else [json.loads(line) for line in out.splitlines() if line]
        )
        return found

    def exec(self, service: str, *command: str) -> str:
        return self.compose("exec", "-T", service, *command, timeout=120).stdout

    def key(self, *scopes: str, name: str = "tests") -> str:
        """A key made with the image's own CLI in an API container, as docs/operations.md says."""
        args = [arg for scope in scopes for arg in ("--scope", scope)]
        return (
            self.exec("api", "buildstate", "keys", "create", "--name", name, *args).strip().splitlines()[-1]
        )

    def healthy_seconds(self) -> dict[str, float | None]:
        """Each running container's start to its first passing healthcheck, as the engine recorded it."""
        return {c["Name"]: engine.started_to_healthy(c["Name"]) for c in self.containers() if c.get("Health")}

    def leftovers(self) -> dict[str, list[str]]:
        """Whatever of this project still exists on the engine."""
        label = f"label=com.docker.compose.project={self.name}"
        found = {}
        for kind, listing in (
            ("containers", ["ps", "-a"]),
            ("volumes", ["volume", "ls"]),
            ("networks", ["network", "ls"]),
        ):
            names = engine.docker(*listing, "-q", "--filter", label).stdout.split()
            if names:
                found[kind] = names
        return found

    def down(self) -> float:
        started = time.monotonic()
        self.compose("down", "-v", "--remove-orphans", "--timeout", "45", timeout=300)
        return round(time.monotonic() - started, 1)
