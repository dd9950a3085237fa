"""Helpers for tests that run the real service as a separate process, the way users and CI do."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / ".venv/bin/buildstate"


def fresh_copy(target: Path) -> Path:
    """The files a clone has: tracked ones, and new ones not ignored (this checkout's own work); no .venv,
    no .env, no data."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


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


def cli_key(env: dict[str, str], name: str, *scopes: str) -> str:
    """A key with these scopes, made with the CLI as an operator would."""
    command = [
        CLI,
        "keys",
        "create",
        "--name",
        name,
        *(part for scope in scopes for part in ("--scope", scope)),
    ]
    created = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return created.stdout.strip().splitlines()[-1]


def admin_key(env: dict[str, str]) -> str:
    """A key with every scope."""
    return cli_key(env, "test-admin", "read", "write", "admin")


def assert_no_drift(env: dict[str, str]) -> dict[str, Any]:
    """``buildstate verify --json`` on the database of ``env``: the maintained tables agree with the event
    log (store/verify.py). Run at the end of every test that writes through several processes."""
    done = subprocess.run(
        [CLI, "verify", "--json"], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"buildstate verify found drift:\n{done.stdout}\n{done.stderr}"
    report: dict[str, Any] = json.loads(done.stdout)
    return report


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


# ---------------------------------------------------------------- talking to a served process


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: Any
    seconds: float


def call(
    url: str,
    method: str = "GET",
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> Answer:
    """One request on a fresh connection (no keep-alive, so a killed process can only break the request
    in flight on it). HTTP errors are answers; a broken connection raises ``OSError``."""
    data = json.dumps(body).encode() if body is not None else None
    sent = {**({"Content-Type": "application/json"} if data is not None else {}), **(headers or {})}
    request = urllib.request.Request(url, data=data, headers=sent, method=method)
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, got, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        status, got, raw = error.code, dict(error.headers), error.read()
    elapsed = time.monotonic() - started
    decoded: Any = raw.decode(errors="replace")
    if "json" in got.get("Content-Type", "") and decoded:
        decoded = json.loads(decoded)
    return Answer(status, got, decoded, elapsed)


def all_events(url: str, headers: dict[str, str], **filters: str) -> list[dict[str, Any]]:
    """The whole event feed, paged with ``after`` as a reader does."""
    events: list[dict[str, Any]] = []
    after = 0
    query = "".join(f"&{name}={value}" for name, value in filters.items())
    for _ in range(10_000):
        page = call(f"{url}/events?after={after}&limit=1000{query}", headers=headers).body
        events.extend(page["events"])
        after = page["next_after"]
        if not page["has_more"]:
            return events
    raise AssertionError("the feed did not end")


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (a gunicorn master's workers)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited while we looked
        state, parent = fields[0], int(fields[1])
        if parent == pid and state != "Z":
            found.append(int(stat.parent.name))
    return sorted(found)


def wait_for(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"gave up after {seconds:g}s waiting for {what}")


# ---------------------------------------------------------------- a steady write load


@dataclass(frozen=True)
class Ack:
    """A write the service acknowledged (2xx): the event it says it recorded."""

    seq: int
    build_id: str
    type: str
    state_code: int
    at: float  # time.monotonic() when the answer arrived


@dataclass(frozen=True)
class Failed:
    """A write that was not acknowledged: a status, or the connection error's name."""

    what: str
    started: float
    ended: float
    content_type: str = ""
    retry_after: str | None = None


@dataclass
class WriteLoad:
    """Clients (threads) that each walk builds of their own from 0 to 100, then start a new build, and log
    every acknowledged event. Every request uses a fresh connection and is never retried, so a fault
    shows up as failures, and the log says exactly which writes the service promised to have stored.

    ``clients`` bounds the requests in flight at any moment, and so the failures a crash may cause;
    ``limit`` (if set) the requests each client sends in all.
    """

    url: str
    headers: dict[str, str]
    clients: int = 4
    platform: str = "aws"
    timeout: float = 30
    limit: int | None = None
    acks: list[Ack] = field(default_factory=list)
    failures: list[Failed] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> WriteLoad:
        for index in range(self.clients):
            thread = threading.Thread(target=self._client, args=(index,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)

    def _client(self, index: int) -> None:
        number, code = 0, 100
        build_id = ""
        sent = 0
        while not self._stop.is_set() and (self.limit is None or sent < self.limit):
            sent += 1
            if code == 100:
                number += 1
                build_id = f"load-{self.platform}-{index}-{number}-{uuid.uuid4().hex[:6]}"
                path, body = "/builds", {"platform": self.platform, "os_version": "rhel-8.8",
                                         "image_type": "base", "build_id": build_id}  # fmt: skip
                code = 0
            else:
                code += 5
                path, body = f"/builds/{build_id}/state", {"state_code": code}
            started = time.monotonic()
            try:
                answer = call(self.url + path, "POST", body, self.headers, timeout=self.timeout)
            except OSError as error:
                self._failed(type(error).__name__, started)
                if path == "/builds":
                    code = 100  # the build may not exist: start another
                continue
            if answer.status in (200, 201):
                event = answer.body["event"]
                ack = Ack(event["seq"], build_id, event["type"], event["state_code"], time.monotonic())
                with self._lock:
                    self.acks.append(ack)
            else:
                content_type = answer.headers.get("Content-Type", "")
                self._failed(str(answer.status), started, content_type, answer.headers.get("Retry-After"))
                if path == "/builds":
                    code = 100

    def _failed(
        self, what: str, started: float, content_type: str = "", retry_after: str | None = None
    ) -> None:
        with self._lock:
            self.failures.append(Failed(what, started, time.monotonic(), content_type, retry_after))

    def acked_between(self, start: float, end: float) -> int:
        return sum(1 for ack in self.acks if start <= ack.at <= end)


def assert_every_ack_is_stored(load: WriteLoad, url: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    """Each acknowledged event is in the feed, as acknowledged; the feed holds at most one unacknowledged
    event per failed request (a write can commit and lose its answer)."""
    stored = {event["seq"]: event for event in all_events(url, headers, platform=load.platform)}
    missing = [ack for ack in load.acks if ack.seq not in stored]
    assert not missing, f"{len(missing)} acknowledged writes are not stored, e.g. {missing[:3]}"
    for ack in load.acks:
        event = stored[ack.seq]
        assert (event["build"]["build_id"], event["type"], event["state_code"]) == (
            ack.build_id, ack.type, ack.state_code,
        ), ack  # fmt: skip
    assert len({ack.seq for ack in load.acks}) == len(load.acks), "one seq acknowledged twice"
    unacknowledged = len(stored) - len(load.acks)
    assert 0 <= unacknowledged <= len(load.failures), (unacknowledged, load.failures)
    return list(stored.values())


# ---------------------------------------------------------------- racing client processes


def hammer(url: str, headers: dict[str, str], build: str, seed: int, count: int) -> list[int]:
    """One client process: a random mix of transitions, failures and resets on the same build; the
    statuses it got (for a ``ProcessPoolExecutor``, so it must live in an importable module)."""
    rng = random.Random(seed)
    statuses = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.75:
            path, body = "state", {"state_code": rng.randrange(5, 101, 5)}
        elif roll < 0.9:
            path, body = "failure", {"error_message": f"boom {rng.randrange(3)}", "component": "packer"}
        else:
            path, body = "reset", {"reason": "retry"}
        statuses.append(call(f"{url}/builds/{build}/{path}", "POST", body, headers).status)
    return statuses


def post_at(
    start_at: float, url: str, body: dict[str, Any], headers: dict[str, str]
) -> tuple[int, dict[str, Any], bool]:
    """Sleep until the wall-clock ``start_at`` (so that processes fire together), then POST: the status,
    the body and whether the answer was an idempotent replay."""
    time.sleep(max(0.0, start_at - time.time()))
    answer = call(url, "POST", body, headers)
    return answer.status, answer.body, answer.headers.get("Idempotent-Replayed") == "true"


def assert_valid_history(history: dict[str, Any]) -> None:
    """The rules, replayed over a build's events: monotonic within an attempt, failure sticky until a
    reset, nothing after success, strictly increasing seqs, and the build row equal to its last event."""
    events = history["events"]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs)), "seqs not strictly increasing"
    assert events[0]["type"] == "created"
    attempt, code, failed = 1, 0, False
    for event in events[1:]:
        if event["type"] == "reset":
            assert event["attempt"] == attempt + 1
            attempt, code, failed = event["attempt"], 0, False
        elif event["type"] == "failure":
            assert not failed, "a second failure without a reset"
            assert (event["attempt"], event["state_code"]) == (attempt, code)
            failed = True
        else:
            assert not failed, "a transition was recorded on a failed build"
            assert event["attempt"] == attempt
            assert event["state_code"] > code, "state moved backwards within an attempt"
            assert code != 100, "a transition was recorded after success"
            code = event["state_code"]
        assert event["status"] == ("failed" if failed else "succeeded" if code == 100 else "running")
    last, row = events[-1], history["build"]
    assert (row["state_code"], row["status"], row["attempt"], row["last_event_seq"]) == (
        last["state_code"], last["status"], last["attempt"], last["seq"],
    )  # fmt: skip
