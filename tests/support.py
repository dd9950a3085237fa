"""Helpers for tests that run the real service as a separate process, the way users and CI do."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / ".venv/bin/buildstate"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def clean_env(data_dir: Path, database_url: str | None = None, **extra: str) -> dict[str, str]:
    """The caller's environment without any BUILDSTATE_* setting, plus these."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUILDSTATE_")}
    env["BUILDSTATE_DATA_DIR"] = str(data_dir)
    if database_url:
        env["BUILDSTATE_DATABASE_URL"] = database_url
    env.update(extra)
    return env


def admin_key(env: dict[str, str]) -> str:
    """A key with every scope, made with the CLI as an operator would."""
    created = subprocess.run(
        [CLI, "keys", "create", "--name", "test-admin", "--scope", "read", "--scope", "write",
         "--scope", "admin"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return created.stdout.strip().splitlines()[-1]


@dataclass
class ServiceProcess:
    """``scripts/serve`` (the README's command) on a loopback port, in its own process group."""

    env: dict[str, str]
    log: Path
    workers: int = 2
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> ServiceProcess:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                ["bash", str(ROOT / "scripts/serve"), "--bind", f"127.0.0.1:{self.port}",
                 "--workers", str(self.workers)],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/ready", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.2)
        self.stop()
        raise AssertionError(f"service did not become ready:\n{self.log.read_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, sig)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def kill(self) -> None:
        """Abruptly, as a crash or an OOM kill would: no graceful shutdown at all."""
        self.stop(signal.SIGKILL)
