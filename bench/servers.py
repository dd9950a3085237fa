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
# with its own .venv gives a before/after with the same bench, ceilings and reference server
# (``--before`` measures a second checkout in the same run). Each checkout migrates its own databases and
# makes its own keys with its own CLI, so each service gets the schema it accepts.
SERVICE_ROOT = Path(os.environ.get("BENCH_SERVICE_ROOT") or ROOT)


def cli(root: Path) -> Path:
    """The ``buildstate`` command of the checkout at ``root`` (its own .venv)."""
    return root / ".venv/bin/buildstate"


def is_other(root: Path) -> bool:
    """Whether ``root`` is another checkout than the bench's own (whose migrations the bench imports)."""
    return root.resolve() != ROOT.resolve()


def python_of(root: Path) -> str:
    """The interpreter that runs ``root``'s service: its own .venv's for another checkout, with its own
    dependencies, and this one's for the bench's own."""
    return str(root / ".venv/bin/python") if is_other(root) else sys.executable


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


def service_env(db: Database, data_dir: Path, workers: int, root: Path = SERVICE_ROOT) -> dict[str, str]:
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
        PYTHONPATH=f"{root / 'service'}{os.pathsep}{ROOT}",
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
    """The minimal server on its own database: aiohttp + asyncpg (``bench/reference.py``) on PostgreSQL,
    aiohttp + sqlite3 (``bench/reference_sqlite.py``) on SQLite."""
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
    return Server(f"reference-{db.kind}", command, env, log)


def service_with_ping(
    db: Database, data_dir: Path, log: Path, workers: int = 2, root: Path = SERVICE_ROOT
) -> Server:
    """buildstate as ``buildstate serve`` runs it, plus GET /bench/ping (scope read)."""
    command = [
        python_of(root),
        "-m",
        "bench.serve",
        "service",
        "--bind",
        "127.0.0.1:{port}",
        "--workers",
        str(workers),
    ]
    return Server("service+ping", command, service_env(db, data_dir, workers, root), log)


def service(db: Database, data_dir: Path, log: Path, workers: int = 2, root: Path = SERVICE_ROOT) -> Server:
    """``buildstate serve`` itself."""
    command = [str(cli(root)), "serve", "--bind", "127.0.0.1:{port}", "--workers", str(workers)]
    return Server("buildstate", command, service_env(db, data_dir, workers, root), log)


def _buildstate(root: Path, db: Database, data_dir: Path, *args: str) -> str:
    done = subprocess.run(
        [str(cli(root)), *args],
        env=service_env(db, data_dir, 1, root),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if done.returncode:
        raise RuntimeError(f"{cli(root)} {' '.join(args)} failed ({done.returncode}): {done.stderr}")
    return done.stdout


def migrate(db: Database, data_dir: Path, root: Path = SERVICE_ROOT) -> None:
    """``buildstate migrate`` of the checkout at ``root``: the schema that checkout's service accepts."""
    _buildstate(root, db, data_dir, "migrate")


def create_key(db: Database, data_dir: Path, root: Path = SERVICE_ROOT) -> str:
    """An API key made as an operator makes one: ``buildstate keys create``."""
    out = _buildstate(
        root, db, data_dir, "keys", "create", "--name", "bench", "--scope", "read", "--scope", "write"
    )
    return out.strip().splitlines()[-1]
