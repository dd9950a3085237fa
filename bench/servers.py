"""The processes a bench run starts on loopback, each in its own process group, stopped by its own pid."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bench.db import Database

ROOT = Path(__file__).resolve().parents[1]
# The checkout whose service is measured (``BENCH_SERVICE_ROOT``, default this one): another worktree
# with its own .venv gives a before/after with the same bench, ceilings and reference server.
SERVICE_ROOT = Path(os.environ.get("BENCH_SERVICE_ROOT") or ROOT)
CLI = SERVICE_ROOT / ".venv/bin/buildstate"
# Far above any rate the bench reaches: the limiter still runs on every request, it just never refuses.
BENCH_RATE_LIMIT = "1000000"
# BUILDSTATE_KEY_CACHE_SECONDS of the servers this run starts (``--key-cache-seconds``): 0, the service's
# default, keeps the key cache that every revocation invalidates at once; > 0 is the older grace cache.
KEY_CACHE_SECONDS = {"value": "0"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def status_of(url: str, headers: dict[str, str] | None = None) -> int | None:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return None


def service_env(db: Database, data_dir: Path, workers: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUILDSTATE_", "PROMETHEUS_"))}
    env.update(
        BUILDSTATE_DATABASE_URL=db.url,
        BUILDSTATE_DATA_DIR=str(data_dir),
        BUILDSTATE_WORKERS=str(workers),
        BUILDSTATE_LOG_FORMAT="json",
        BUILDSTATE_RATE_LIMIT_PER_SECOND=BENCH_RATE_LIMIT,
        BUILDSTATE_RATE_LIMIT_BURST=BENCH_RATE_LIMIT,
        BUILDSTATE_JWT_SECRET=secrets.token_urlsafe(48),
        BUILDSTATE_KEY_CACHE_SECONDS=KEY_CACHE_SECONDS["value"],
        PYTHONPATH=f"{SERVICE_ROOT / 'service'}{os.pathsep}{ROOT}",
    )
    return env


@dataclass
class Server:
    name: str
    command: list[str]
    env: dict[str, str]
    log: Path
    ready_path: str = "/health"
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> Server:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        command = [part.replace("{port}", str(self.port)) for part in self.command]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=ROOT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if status_of(self.url + self.ready_path) == 200:
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.name} did not become ready; see {self.log}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def trivial(log: Path, workers: int = 2) -> Server:
    """The framework ceiling: gunicorn + aiohttp's uvloop worker serving one JSON route."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable,
        "-m",
        "bench.serve",
        "trivial",
        "--bind",
        "127.0.0.1:{port}",
        "--workers",
        str(workers),
    ]
    return Server("trivial", command, env, log, ready_path="/ping")


def reference(db: Database, log: Path, workers: int = 2, pool: int = 4) -> Server:
    """The minimal aiohttp + asyncpg server (``bench/reference.py``) on its own database."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "BENCH_REFERENCE_DSN": db.url,
        "BENCH_REFERENCE_POOL": str(pool),
    }
    command = [
        sys.executable,
        "-m",
        "bench.serve",
        "reference",
        "--bind",
        "127.0.0.1:{port}",
        "--workers",
        str(workers),
    ]
    return Server("reference", command, env, log)


def service_with_ping(db: Database, data_dir: Path, log: Path, workers: int = 2) -> Server:
    """buildstate as ``buildstate serve`` runs it, plus GET /bench/ping (scope read)."""
    command = [
        sys.executable,
        "-m",
        "bench.serve",
        "service",
        "--bind",
        "127.0.0.1:{port}",
        "--workers",
        str(workers),
    ]
    return Server("service+ping", command, service_env(db, data_dir, workers), log)


def service(db: Database, data_dir: Path, log: Path, workers: int = 2) -> Server:
    """``buildstate serve`` itself."""
    command = [str(CLI), "serve", "--bind", "127.0.0.1:{port}", "--workers", str(workers)]
    return Server("buildstate", command, service_env(db, data_dir, workers), log)


def create_key(db: Database, data_dir: Path) -> str:
    """An API key made as an operator makes one: ``buildstate keys create``."""
    created = subprocess.run(
        [str(CLI), "keys", "create", "--name", "bench", "--scope", "read", "--scope", "write"],
        env=service_env(db, data_dir, 1),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return created.stdout.strip().splitlines()[-1]
