"""The Prometheus metrics of one service process, and their exposition.

Several processes, one answer
-----------------------------
Under gunicorn every worker is a process with its own counters. ``gunicorn_conf.on_starting`` points
``PROMETHEUS_MULTIPROC_DIR`` at an empty directory in the master before any worker forks; prometheus_client
then keeps every value in a memory-mapped file per worker there, and a scrape (answered by whichever worker
nginx picks) merges all the files: counters and histograms are summed over workers, live and dead (a dead
worker's file stays, so totals never go backwards), and the gauges declare how to merge (``livesum``: the sum
over live workers; ``child_exit`` drops a dead worker's live gauges). Without that variable (tests, a plain
``create_app``) each ``Metrics`` keeps its values in memory in its own registry.

What a request costs
--------------------
In that mode every update of a value is a write to a memory-mapped file under a lock, and a request made
five (in progress up and down, the request counter, the histogram's sum and bucket): a measurable share
of a small request's time. So the per-request values are kept in this process and reach the files in
batches: ``flush`` adds up what accumulated, and runs every ``FLUSH_SECONDS`` (``metrics_flusher``),
before this process answers a scrape, and when it stops. A scrape therefore sees the other workers'
requests of the last second or less a moment late, never wrongly; a worker killed outright loses at most
that second of request counts (its build-event counts are written at once). The in-progress gauge is
written when it is flushed and whenever it drops back to zero, so an idle worker always reports 0.

Bounded labels
--------------
Label values are route templates (``/builds/{ref}``, never the raw path), fixed sets (method, status, event
type, state code), the platforms and failure components the operator lists (``BUILDSTATE_METRICS_PLATFORMS``,
``BUILDSTATE_METRICS_COMPONENTS``; any other name a pipeline sends is ``other``), and the service's own
refusal reasons (``BoundedLabel``). Platforms and components were once capped per process, first come first
served: every worker (and every worker started since, whose files stay in the totals) added its own 64,
and a pipeline that sent 64 made-up platforms first pushed the real ones into ``other``. A fixed list is
the same in every process and cannot be filled by a client.
"""

from __future__ import annotations

import os
import re
from bisect import bisect_left
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from buildstate.domain import EVENT_RULES, EventType
from buildstate.models import BuildWithEvent

__all__ = ["CONTENT_TYPE_LATEST", "BoundedLabel", "FixedLabel", "Metrics", "multiprocess_dir"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Seconds between an event being recorded and a reader of the feed receiving it: from a sub-second
# follower to a Concourse check that polls every minute, to a consumer that fell hours behind.
FEED_LAG_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0, 21600.0)
FLUSH_SECONDS = 1.0
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_LABEL_SHAPE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def multiprocess_dir() -> str | None:
    """The directory shared by this service's processes, if it runs under gunicorn's master."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return path if path and Path(path).is_dir() else None


class BoundedLabel:
    """Client-supplied label values, capped at ``limit`` distinct slug-shaped values per process."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: object) -> str:
        if value is None or value == "":
            return "none"
        text = str(value).lower()
        if text in self._seen:
            return text
        if len(self._seen) >= self._limit or not _LABEL_SHAPE.match(text):
            return "other"
        self._seen.add(text)
        return text


class FixedLabel:
    """Client-supplied names as label values: those in ``allowed`` as they are (lower case), the rest
    ``other``, and no name ``none``."""

    def __init__(self, allowed: Iterable[str]) -> None:
        self._allowed = frozenset(name.lower() for name in allowed)

    def __call__(self, value: object) -> str:
        if value is None or value == "":
            return "none"
        text = str(value).lower()
        return text if text in self._allowed else "other"


DEFAULT_PLATFORMS = ("aws", "azure", "gcp", "vsphere")
DEFAULT_COMPONENTS = ("packer", "ansible", "concourse")


class Metrics:
    """Every collector the service updates. One instance per application (per process in production)."""

    def __init__(
        self, platforms: Iterable[str] = DEFAULT_PLATFORMS, components: Iterable[str] = DEFAULT_COMPONENTS
    ) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "buildstate_http_requests",
            "HTTP requests answered, by method, route template and status code.",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "buildstate_http_request_duration_seconds",
            "Time from the request reaching the application to the response being ready.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_progress = Gauge(
            "buildstate_http_requests_in_progress",
            "Requests being handled right now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.transitions = Counter(
            "buildstate_build_transitions",
            f"Build events recorded ({', '.join(EventType)}), by platform and the state code after.",
            ["platform", "type", "state"],
            registry=r,
        )
        self.failures = Counter(
            "buildstate_build_failures",
            "Build failures reported, by platform and by the component the pipeline named.",
            ["platform", "component"],
            registry=r,
        )
        self.auth_failures = Counter(
            "buildstate_auth_failures",
            "Requests refused by authentication or authorisation, by reason.",
            ["reason"],
            registry=r,
        )
        self.db_pool = Gauge(
            "buildstate_db_pool_connections",
            "PostgreSQL pool connections over all live workers: in_use, idle and max (the configured cap).",
            ["state"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.feed_lag = Histogram(
            "buildstate_event_feed_lag_seconds",
            "For each page of GET /events?after=N that returns events: how long ago its oldest event was "
            "recorded, i.e. how far behind the feed's readers are.",
            buckets=FEED_LAG_BUCKETS,
            registry=r,
        )
        self.platform_label = FixedLabel(platforms)
        self.component_label = FixedLabel(components)
        self.reason_label = BoundedLabel(limit=32)
        # labels() validates and hashes its values on every call: keep the children it returns. Bounded:
        # methods, route templates and status codes are all fixed sets.
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        # Requests since the last flush: (method, route, status) -> [count, seconds, per-bucket counts].
        self._pending: dict[tuple[str, str, int], list[Any]] = {}
        self._in_flight = 0
        self._published_in_flight = 0
        if multiprocess_dir() is None:  # one process: the gauge can read the count itself when collected
            self.in_progress.set_function(lambda: self._in_flight)

    # ------------------------------------------------------------------ recording

    def request_started(self) -> None:
        self._in_flight += 1

    def request_finished(self, method: str, route: str, status: int, seconds: float) -> None:
        self._in_flight -= 1
        if self._in_flight == 0 and self._published_in_flight:
            self._publish_in_flight()
        key = (method, route, status)
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = [0, 0.0, [0] * (len(LATENCY_BUCKETS) + 1)]
        pending[0] += 1
        pending[1] += seconds
        pending[2][bisect_left(LATENCY_BUCKETS, seconds)] += 1  # the first bucket with seconds <= bound

    def flush(self) -> None:
        """Add the requests recorded since the last flush to the collectors (in the shared files under
        gunicorn). Call it on the event loop, like ``request_finished``."""
        pending, self._pending = self._pending, {}
        for (method, route, status), (count, seconds, buckets) in pending.items():
            counter, histogram = self._children(method, route, status)
            counter.inc(count)
            # Histogram.observe, for many observations at once: its sum, and the one bucket each falls in
            # (prometheus_client keeps buckets non-cumulative and adds them up when collected).
            histogram._sum.inc(seconds)
            for index, n in enumerate(buckets):
                if n:
                    histogram._buckets[index].inc(n)
        self._publish_in_flight()

    def _publish_in_flight(self) -> None:
        if self._published_in_flight != self._in_flight:
            self.in_progress.set(self._in_flight)
            self._published_in_flight = self._in_flight

    def _children(self, method: str, route: str, status: int) -> tuple[Any, Any]:
        children = self._request_children.get((method, route, status))
        if children is None:
            label = method if method in HTTP_METHODS else "OTHER"
            children = (self.requests.labels(label, route, str(status)), self.latency.labels(label, route))
            if len(self._request_children) < 4096:
                self._request_children[(method, route, status)] = children
        return children

    def record_event(self, build: BuildWithEvent) -> None:
        """Count the event a write recorded (``build.event``)."""
        event = build.event
        platform = self.platform_label(build.platform)
        self.transitions.labels(platform, event.type.value, str(event.state_code)).inc()
        if EVENT_RULES[event.type].records_failure:
            component = event.failure.component if event.failure is not None else None
            self.failures.labels(platform, self.component_label(component)).inc()

    def record_auth_failure(self, reason: str) -> None:
        self.auth_failures.labels(self.reason_label(reason)).inc()

    def record_feed_lag(self, recorded_at: datetime, now: datetime) -> None:
        self.feed_lag.observe(max(0.0, (now - recorded_at).total_seconds()))

    def record_pool(self, in_use: int, idle: int, maximum: int) -> None:
        for state, value in (("in_use", in_use), ("idle", idle), ("max", maximum)):
            self.db_pool.labels(state).set(value)

    # ------------------------------------------------------------------ exposition

    def exposition(self) -> bytes:
        """The text format for a scrape: every worker's values merged when running under gunicorn."""
        path = multiprocess_dir()
        if path is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=path)  # type: ignore[no-untyped-call]
        return generate_latest(merged)


def mark_dead(pid: int) -> None:
    """Called by the gunicorn master when a worker exits: drop that worker's ``live*`` gauge files."""
    if multiprocess_dir() is not None:
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
