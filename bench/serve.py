"""Run an aiohttp app under gunicorn exactly as ``buildstate serve`` does, for the framework ceilings.

    python -m bench.serve trivial --bind 127.0.0.1:9000 --workers 2    a bare JSON route, nothing else
    python -m bench.serve service --bind 127.0.0.1:9001 --workers 2    buildstate plus GET /bench/ping
    python -m bench.serve reference --bind 127.0.0.1:9002              the minimal server: bench/reference.py
                                                                       (bench/reference_sqlite.py when
                                                                       BENCH_REFERENCE_DSN is sqlite:///)

``trivial`` uses the same worker class (aiohttp's uvloop worker), worker count and keep-alive as the
service, and no middleware. ``service`` is ``buildstate serve`` (same gunicorn_conf, same create_app) with
one more route in ``ROUTES`` that needs the ``read`` scope and returns the same body as ``trivial``: the
difference between the two is the cost of the middleware stack (request id, metrics and access log, CORS,
problems, auth with its key lookup and rate limit). ``BENCH_WITHOUT_MIDDLEWARES`` (comma-separated
function names) leaves some out, for the cost of each layer.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from aiohttp import web
from gunicorn.app.base import BaseApplication

BODY = b'{"ok":true}'


async def ping(_request: web.Request) -> web.Response:
    return web.Response(body=BODY, content_type="application/json")


async def trivial_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/ping", ping)
    return app


async def service_app() -> web.Application:
    from buildstate.web.app import create_app  # noqa: PLC0415 - in the worker, after fork
    from buildstate.web.routing import ROUTES, Route  # noqa: PLC0415

    if not any(r.path == "/bench/ping" for r in ROUTES):
        ROUTES.append(
            Route("GET", "/bench/ping", ping, "bench: trivial authenticated route", "read", "bench")
        )
    app = create_app()
    # The layer breakdown (``python -m bench framework``): the same app without some middlewares.
    without = set(filter(None, os.environ.get("BENCH_WITHOUT_MIDDLEWARES", "").split(",")))
    unknown = without - {middleware.__name__ for middleware in app.middlewares}
    if unknown:  # a layer renamed or folded into another: the variant would silently measure everything
        named = ", ".join(sorted(unknown))
        raise SystemExit(f"BENCH_WITHOUT_MIDDLEWARES names no middleware of the app: {named}")
    for middleware in list(app.middlewares):
        if middleware.__name__ in without:
            app.middlewares.remove(middleware)
    return app


class _App(BaseApplication):  # type: ignore[misc]
    def __init__(self, which: str, bind: str, workers: int) -> None:
        self.which, self.bind, self.workers = which, bind, workers
        super().__init__()

    def load_config(self) -> None:
        if self.which == "service":
            from buildstate import gunicorn_conf  # noqa: PLC0415

            for key, value in vars(gunicorn_conf).items():
                if key in self.cfg.settings:
                    self.cfg.set(key, value)
        else:
            self.cfg.set("worker_class", "aiohttp.GunicornUVLoopWebWorker")
            self.cfg.set("keepalive", 75)
            self.cfg.set("accesslog", None)
            self.cfg.set("control_socket_disable", True)
        self.cfg.set("bind", self.bind)
        self.cfg.set("workers", self.workers)

    def load(self) -> Any:
        if self.which == "reference":
            if os.environ.get("BENCH_REFERENCE_DSN", "").startswith("sqlite:///"):
                from bench import reference_sqlite  # noqa: PLC0415

                return reference_sqlite.reference_app
            from bench.reference import reference_app  # noqa: PLC0415

            return reference_app
        return service_app if self.which == "service" else trivial_app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.serve")
    parser.add_argument("app", choices=("trivial", "service", "reference"))
    parser.add_argument("--bind", required=True)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    _App(args.app, args.bind, args.workers).run()


if __name__ == "__main__":
    main()
