"""Logs as one JSON object a line when nobody is watching a terminal, plain text when somebody is.

Every record carries a UTC timestamp, the level, the logger name and the message; request records (written by
``observability.middleware``) add ``request_id``, ``method``, ``route``, ``path``, ``status``,
``duration_ms``, ``actor`` and ``remote``. Other fields on a record are dropped: only the names in
``REQUEST_FIELDS`` leave the process, so a stray ``extra=`` cannot leak a header or a body.

Secrets: requests are logged by route and path, never with headers or bodies; as a second line of defence
``scrub`` blanks passwords in URLs, bearer tokens and API-key headers from any message before it is written.
"""

from __future__ import annotations

import json
import logging
import logging.config
import re
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

REQUEST_FIELDS = ("request_id", "method", "route", "path", "status", "duration_ms", "actor", "remote")

_SECRETS = (
    # scheme://user:password@host -> scheme://user:***@host
    (re.compile(r"(?P<keep>\b[a-z][a-z0-9+.-]*://[^:/@\s]+:)[^@\s]+(?=@)", re.IGNORECASE), r"\g<keep>***"),
    (re.compile(r"(?P<keep>\bBearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE), r"\g<keep>***"),
    (re.compile(r"(?P<keep>\bX-API-Key[\"']?\s*[:=]\s*[\"']?)[^\s,\"';]+", re.IGNORECASE), r"\g<keep>***"),
)


# Every pattern above needs one of these (case-insensitively): text without them is returned as it is,
# which spares the three regular expressions on nearly every line (an access log line per request).
_SECRET_MARKERS = ("://", "bearer", "api-key")


def scrub(text: str) -> str:
    """``text`` with credentials blanked (URL passwords, bearer tokens, API-key header values)."""
    lowered = text.lower()
    if not any(marker in lowered for marker in _SECRET_MARKERS):
        return text
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def _message(record: logging.LogRecord) -> str:
    message = record.getMessage()
    if record.exc_info:
        message = f"{message}\n{logging.Formatter().formatException(record.exc_info)}"
    return scrub(message)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, keys in a stable order."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": _message(record),
            "pid": record.process,
        }
        for name in REQUEST_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = value
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """For a human at a terminal: time, level, logger, message, then the request fields as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S.%f")[:-3]
        fields = " ".join(
            f"{name}={record.__dict__[name]}"
            for name in REQUEST_FIELDS
            if record.__dict__.get(name) is not None
        )
        line = f"{stamp} {record.levelname:<7} {record.name}: {_message(record)}"
        return f"{line} {fields}" if fields else line


def choose_format(setting: str, stream: TextIO | None = None) -> Literal["json", "text"]:
    """``auto`` means text on a terminal and JSON everywhere else (containers, files, pipes)."""
    if setting in {"json", "text"}:
        return "json" if setting == "json" else "text"
    stream = stream if stream is not None else sys.stderr
    return "text" if stream.isatty() else "json"


def logging_config(level: str, fmt: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for the app and gunicorn alike (gunicorn takes it as
    ``logconfig_dict``), so gunicorn's own lines have the same shape as the service's."""
    chosen = choose_format(fmt)
    formatter = f"{__name__}.{'JsonFormatter' if chosen == 'json' else 'TextFormatter'}"
    handler = {"class": "logging.StreamHandler", "formatter": "buildstate", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"buildstate": {"()": formatter}},
        "handlers": {"stderr": handler},
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": level.upper(), "handlers": ["stderr"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
            # aiohttp's access logger duplicates observability.middleware's request line.
            "aiohttp.access": {"level": "WARNING", "handlers": [], "propagate": True},
        },
    }


def configure(level: str, fmt: str) -> None:
    """Set up logging for this process (the CLI, or a test); gunicorn repeats it in master and workers."""
    logging.config.dictConfig(logging_config(level, fmt))
