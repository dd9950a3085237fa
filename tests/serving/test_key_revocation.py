"""The key cache across processes: two instances of ``buildstate serve`` with two gunicorn workers each, on
one database, under load. Every worker answers the key from memory, and once the revocation is answered
every worker of both instances refuses it (within a second; by design before the revocation returns on
the instance that made it, and as soon as the NOTIFY or the file change arrives on the others)."""

from __future__ import annotations

import itertools
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from serving_harness import Served, request, serve, service_env

THREADS_PER_INSTANCE = 3
MAX_REQUESTS_PER_THREAD = 3000
WARM_SECONDS = 20.0  # at most: until every worker has answered the key
AFTER_SECONDS = 2.5  # the load goes on this long after the revocation was answered


@dataclass(frozen=True)
class Answer:
    instance: int
    rid: str
    sent: float
    status: int


class Load:
    """Bounded GET loops with the key against every instance, each request with an id of its own."""

    def __init__(self, instances: list[Served], key: str) -> None:
        self.instances, self.key = instances, key
        self.answers: list[Answer] = []
        self.stop = threading.Event()
        self._ids = itertools.count()
        self._lock = threading.Lock()

    def _loop(self, index: int) -> None:
        url = f"{self.instances[index].url}/builds?limit=1"
        for _ in range(MAX_REQUESTS_PER_THREAD):
            if self.stop.is_set():
                return
            rid = f"revocation-{index}-{next(self._ids)}"
            sent = time.monotonic()
            status = request(url, headers={"X-API-Key": self.key, "X-Request-ID": rid}).status
            with self._lock:
                self.answers.append(Answer(index, rid, sent, status))

    def start(self) -> list[threading.Thread]:
        threads = [
            threading.Thread(target=self._loop, args=(index,), daemon=True)
            for index in range(len(self.instances))
            for _ in range(THREADS_PER_INSTANCE)
        ]
        for thread in threads:
            thread.start()
        return threads


def pids_by_request(served: Served) -> dict[str, int]:
    return {e["request_id"]: e["pid"] for e in served.log() if str(e.get("request_id", "")).startswith("rev")}


def test_a_revoked_key_is_refused_by_every_worker_of_two_instances_within_a_second_under_load(
    database_url: str, tmp_path: Path
) -> None:
    # Every refused request counts against the client's address: past the allowance they are 429s.
    envs = [
        service_env(database_url, tmp_path / f"instance-{n}", BUILDSTATE_AUTH_FAILURES_PER_CLIENT="100000000")
        for n in range(2)
    ]
    with (
        serve(envs[0], tmp_path / "instance-0.log") as first,
        serve(envs[1], tmp_path / "instance-1.log") as second,
    ):
        instances = [first, second]
        admin = first.headers
        made = request(
            f"{first.url}/admin/keys", "POST", {"name": "revoked under load", "scopes": ["read"]}, admin
        )
        assert made.status == 201
        load = Load(instances, made.body["key"])
        threads = load.start()
        try:
            started = time.monotonic()
            while time.monotonic() < started + WARM_SECONDS:  # every worker has answered the key
                time.sleep(0.5)
                served = [set(pids_by_request(i).values()) for i in instances]
                if all(s >= set(i.worker_pids()) for s, i in zip(served, instances, strict=True)):
                    break
            time.sleep(1.0)  # and goes on answering it from memory for a while
            revoking = time.monotonic()
            revoked = request(f"{second.url}/admin/keys/{made.body['id']}/revoke", "POST", None, admin)
            assert revoked.status == 200
            answered = time.monotonic()
            time.sleep(AFTER_SECONDS)
        finally:
            load.stop.set()
            for thread in threads:
                thread.join(30)
        with load._lock:
            answers = list(load.answers)

    before = [a for a in answers if a.sent < revoking - 0.2]
    late = [a for a in answers if a.sent >= answered + 1.0]
    assert {a.status for a in before} == {200}
    assert late and {a.status for a in late} == {401}, sorted({a.status for a in late})
    for index, served in enumerate(instances):
        pids = pids_by_request(served)
        warm = {pids[a.rid] for a in before if a.instance == index and a.rid in pids}
        refused = {pids[a.rid] for a in late if a.instance == index and a.rid in pids}
        workers = set(served.worker_pids())
        assert warm == workers, (index, warm, workers)  # every worker had the key in memory
        assert refused == workers, (index, refused, workers)  # and every worker refuses it
    window = [a for a in answers if answered <= a.sent < answered + 1.0]
    by_status: dict[int, int] = defaultdict(int)
    for a in window:
        by_status[a.status] += 1
    print(f"{len(answers)} requests; in the second after the revocation: {dict(by_status)}")
