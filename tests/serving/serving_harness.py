"""Start ``buildstate serve`` as an operator would, talk to it over loopback, read its JSON logs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / ".venv/bin/buildstate"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def service_env(database_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUILDSTATE_", "PROMETHEUS_"))}
    env.update(BUILDSTATE_DATABASE_URL=database_url, BUILDSTATE_DATA_DIR=str(data_dir))
    env.update(BUILDSTATE_LOG_FORMAT="json", BUILDSTATE_GRACEFUL_TIMEOUT_SECONDS="10")
    # The tests send bursts from one key; the per-key rate limit has tests of its own.
    env.update(BUILDSTATE_RATE_LIMIT_BURST="1000000", BUILDSTATE_RATE_LIMIT_PER_SECOND="1000000")
    env.update(extra)
    return env


def api_headers(env: dict[str, str]) -> dict[str, str]:
    """Credentials for a pipeline that reads, writes and resets: an API key made as an operator makes one,
    with ``buildstate keys create`` (the key is the last line it prints)."""
    subprocess.run([CLI, "migrate"], env=env, capture_output=True, check=True, timeout=60)
    created = subprocess.run(
        [CLI, "keys", "create", "--name", "t", "--scope", "read", "--scope", "write", "--scope", "admin"],
        env=env, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return {"X-API-Key": created.stdout.strip().splitlines()[-1]}


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: Any


def request(url: str, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None,
            timeout: float = 10) -> Response:  # fmt: skip
    """One request on a fresh connection; HTTP errors are answers, not exceptions."""
    data = json.dumps(body).encode() if body is not None else None
    all_headers = {**(headers or {}), **({"Content-Type": "application/json"} if data else {})}
    req = urllib.request.Request(url, data=data, headers=all_headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as answer:
            raw, status, got = answer.read(), answer.status, dict(answer.headers)
    except urllib.error.HTTPError as error:
        raw, status, got = error.read(), error.code, dict(error.headers)
    text = raw.decode()
    is_json = "json" in got.get("Content-Type", "")
    return Response(status, got, json.loads(text) if is_json and text else text)


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    headers: dict[str, str] = field(default_factory=dict)

    def log(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.startswith("{")]

    def worker_pids(self) -> list[int]:
        """Workers booted so far, in order (gunicorn logs each boot)."""
        return [e["pid"] for e in self.log() if e["message"].startswith("Booting worker")]

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.process.pid, sig)


def wait_until(predicate: Any, seconds: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {seconds}s waiting for {what}")


def is_ready(url: str) -> bool:
    try:
        return request(f"{url}/ready", timeout=2).status == 200
    except OSError:
        return False


@contextmanager
def serve(env: dict[str, str], log_path: Path, workers: int = 2, port: int | None = None) -> Iterator[Served]:
    """``buildstate serve`` until the block ends (SIGTERM, then SIGKILL if it will not stop)."""
    port = port or free_port()
    headers = api_headers(env)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [CLI, "serve", "--bind", f"127.0.0.1:{port}", "--workers", str(workers)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    served = Served(process, f"http://127.0.0.1:{port}", log_path, headers)
    try:
        wait_until(lambda: is_ready(served.url) or process.poll() is not None, 60, "the service")
        if process.poll() is not None:
            raise AssertionError(f"serve exited with {process.returncode}:\n{log_path.read_text()}")
        wait_until(lambda: len(served.worker_pids()) >= workers, 30, f"{workers} workers to boot")
        yield served
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
