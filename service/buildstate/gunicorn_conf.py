"""gunicorn settings for buildstate, read from ``BUILDSTATE_*`` like everything else.

``buildstate serve`` loads this module; plain gunicorn can too::

    gunicorn -c python:buildstate.gunicorn_conf 'buildstate.web.runner:gunicorn_app'

What happens where
------------------
master, once (``on_starting``)
    apply pending migrations (a failure stops the start with the reason, instead of every worker failing
    to boot in a loop), then empty or create the Prometheus multiprocess directory and export it as
    ``PROMETHEUS_MULTIPROC_DIR`` so every worker forked afterwards writes its metrics there.
    The master never imports the application or prometheus_client's value classes before this point.
workers (``post_fork``, then in the worker)
    each gets its listening sockets as plain sockets (see ``post_fork``), then builds the aiohttp app
    (``create_app``), with its own database pool.
master, per dead worker (``child_exit``)
    tell prometheus_client, so the worker's ``livesum`` gauges (requests in progress, pool connections)
    stop counting; its counters stay in the totals.

Signals (to the master)
-----------------------
``SIGTERM``  graceful stop: listeners close, in-flight requests get ``graceful_timeout`` seconds to finish.
``SIGHUP``   reload: new workers start on the same sockets, then the old ones finish what they hold and
             exit; no request is refused meanwhile. ``SIGTTIN``/``SIGTTOU`` add or remove a worker.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from buildstate.config import Settings, load_settings
from buildstate.observability.logging import logging_config
from buildstate.store import describe_url, migrate
from buildstate.web.runner import KEEPALIVE_SECONDS

_settings = load_settings()

bind = _settings.bind
workers = _settings.workers
worker_class = "aiohttp.GunicornUVLoopWebWorker"
# SIGTERM: how long in-flight requests may run on; compose's stop_grace_period and Kubernetes'
# terminationGracePeriodSeconds are set longer so gunicorn, not the platform, ends the drain.
graceful_timeout = _settings.graceful_timeout_seconds
# A worker whose event loop stops for this long is killed and replaced.
timeout = 60
# The aiohttp worker runs web/runner.py's GracefulRunner, which sets keep-alive (75 s, longer than nginx's
# 60 s) and the shutdown timeout itself; this value is for anything that reads gunicorn's config.
keepalive = KEEPALIVE_SECONDS
# The app writes one structured record per request (observability/web.py) with the route, actor and
# request id: that is the access log (BUILDSTATE_ACCESS_LOG).
accesslog = None
errorlog = "-"
loglevel = _settings.log_level.lower()
logconfig_dict = logging_config(_settings.log_level, _settings.log_format)
proc_name = "buildstate"
# gunicorn >= 24 opens a control socket at one fixed path per user: several instances on one host would
# fight over it, and the image's non-root user has no home to put it in. Signals do the same job.
control_socket_disable = True
# The workers' heartbeat files: on tmpfs where there is one, since a container's overlay disk can stall.
worker_tmp_dir = "/dev/shm" if Path("/dev/shm").is_dir() else None  # noqa: S108 - a fixed system tmpfs

log = logging.getLogger("gunicorn.error")
_created_metrics_dir: Path | None = None


def prepare_metrics_dir(settings: Settings) -> Path:
    """Empty ``BUILDSTATE_METRICS_DIR`` of earlier runs' files, or make a private temporary directory.

    Only prometheus_client's ``*.db`` files are removed, so pointing the setting at a wrong directory cannot
    delete anything else. Each instance needs its own directory: two masters sharing one would add up each
    other's workers and wipe each other's files at start.
    """
    global _created_metrics_dir  # noqa: PLW0603 - one directory per master process
    if settings.metrics_dir:
        path = Path(settings.metrics_dir)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
    else:
        path = Path(tempfile.mkdtemp(prefix="buildstate-metrics-"))
        _created_metrics_dir = path
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    return path


def on_starting(_server: Any) -> None:
    settings = load_settings()
    applied = migrate(settings)
    target = describe_url(settings.effective_database_url)
    if applied:
        log.info("migrated %s: %s", target, ", ".join(applied))
    else:
        log.info("schema of %s is current", target)
    from buildstate.auth.startup import prepare  # noqa: PLC0415 - after migrate: it reads the schema

    for hint in prepare(settings):  # the JWT secret (required in production), first-admin hint
        log.warning(hint)
    path = prepare_metrics_dir(settings)
    log.info("prometheus multiprocess directory: %s", path)


def post_fork(_server: Any, worker: Any) -> None:
    """Give the worker its listening sockets as plain ``socket.socket`` objects, not gunicorn's wrappers.

    uvloop closes a listening socket's descriptor itself when the worker stops serving, then closes the
    object it was handed: a plain socket knows its descriptor is gone, gunicorn's wrapper does not, and logged
    ``Error while closing socket [Errno 9] Bad file descriptor`` on every stop. The master keeps its own."""
    worker.sockets = [getattr(listener, "sock", listener) for listener in worker.sockets]


def child_exit(_server: Any, worker: Any) -> None:
    from buildstate.observability.metrics import mark_dead  # noqa: PLC0415 - after on_starting set the dir

    mark_dead(worker.pid)


def on_exit(_server: Any) -> None:
    if _created_metrics_dir is not None:
        shutil.rmtree(_created_metrics_dir, ignore_errors=True)
