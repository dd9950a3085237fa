"""A logging filter for aiohttp's own server logger, kept apart from everything else in ``web/``.

The gunicorn master applies the logging configuration, and so imports this module, before it sets up the
Prometheus multiprocess directory: it must import nothing but ``logging`` and aiohttp's exception types
(``web.observe`` imports prometheus_client, whose value classes must not be loaded in the master yet).
``observability.logging.configure`` names it by its dotted path, so that package imports no aiohttp.
"""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import HttpProcessingError


class ParserRejections(logging.Filter):
    """aiohttp logs a request its HTTP parser refuses (a NUL or a bare CR in a header, two
    Content-Length fields, Content-Length with Transfer-Encoding, an over-long line, a bad method) as
    "Error handling request" with a traceback, at ERROR: for a client's malformed bytes, not a fault of
    the service. This filter, on the ``aiohttp.server`` logger, makes each such record one WARNING line:
    the peer and the parser's reason, newlines folded, without the traceback (``scrub`` still blanks any
    credential the parser quoted from the refused line; ``observability.logging.configure`` names
    it). Other errors of that logger pass unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            reason = " ".join(str(error.message).split())
            peer = record.getMessage().rpartition(" from ")[2] or "unknown peer"
            record.msg = "refused a malformed HTTP request from %s (%s): %s"
            record.args = (peer, error.code, reason)
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True
