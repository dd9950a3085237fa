"""What gunicorn's aiohttp worker runs: the app inside a runner that stops accepting before it drains.

aiohttp's own shutdown closes every connection that has no request in progress, right after it stops
accepting. A connection accepted a moment earlier, whose request is still on its way, counts as idle and
is closed unanswered: under a steady load, a reload (SIGHUP) or a stop (SIGTERM) dropped about one request
in two thousand that way. ``GracefulRunner`` stops accepting first, waits ``SETTLE_SECONDS`` for such
requests to arrive and start, and only then lets aiohttp close what is idle and wait for what is running.
The worker takes a runner as it is when the app factory returns one, so the settings it would pass to
its own (keep-alive, shutdown timeout) are set here.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from buildstate.config import Settings, load_settings

# Longer than nginx's upstream keepalive_timeout (60 s): the proxy, not the app, closes idle connections,
# so it never sends a request down a connection the app is closing.
KEEPALIVE_SECONDS = 75
# A request sent right after its connection was accepted arrives well within this, even across a network.
SETTLE_SECONDS = 0.5


class GracefulRunner(web.AppRunner):
    async def cleanup(self) -> None:
        for site in list(self.sites):
            await site.stop()  # the listening sockets stay open in the master and the other workers
        await asyncio.sleep(SETTLE_SECONDS)
        await super().cleanup()


def graceful_runner(app: web.Application, settings: Settings) -> GracefulRunner:
    return GracefulRunner(
        app,
        handle_signals=False,  # gunicorn's worker handles them
        access_log=None,  # observability.web writes the structured access log
        keepalive_timeout=KEEPALIVE_SECONDS,
        # As gunicorn's aiohttp worker computes it: a little under gunicorn's own graceful timeout.
        shutdown_timeout=settings.graceful_timeout_seconds * 0.95,
    )


async def gunicorn_app() -> GracefulRunner:
    """Entry point for plain gunicorn: ``gunicorn -c python:buildstate.gunicorn_conf
    'buildstate.web.runner:gunicorn_app'`` (``buildstate serve`` does the same)."""
    from buildstate.web.app import create_app  # noqa: PLC0415 - the worker builds the app after the fork

    settings = load_settings()
    return graceful_runner(create_app(settings), settings)
