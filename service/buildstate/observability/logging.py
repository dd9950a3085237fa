"""Logs as one JSON object a line when nobody is watching a terminal, plain text when somebody is.

Every record carries a UTC timestamp, the level, the logger name and the message; request records (written by
``web.observe``) add ``request_id``, ``method``, ``route``, ``path``, ``status``,
``duration_ms``, ``actor`` and ``remote``. Other fields on a record are dropped: only the names in
``REQUEST_FIELDS`` leave the process, so a stray ``extra=`` cannot leak a header or a body.

Secrets: requests are logged by route and path, never with headers or bodies; as a second line of defence
``scrub`` (``redaction.redact``) blanks anything shaped like a credential (URL passwords, secret-named query
values, Authorization values of any scheme, API-key headers, API keys, JWTs, webhook secrets) from every
line before it is written. aiohttp's refusals of malformed requests become one line each
(``web.parser_log.ParserRejections``, named here by its dotted path so that this package imports no aiohttp).
"""

from __future__ import annotations

import json
import logging
import logging.config
import math
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from buildstate.redaction import redact

REQUEST_FIELDS = ("request_id", "method", "route", "path", "status", "duration_ms", "actor", "remote")
# The fields a client writes freely (the others are ours, a route template, or checked: the request id):
# a key pasted into a path by mistake (curl $URL/builds/$KEY) is blanked there as in a message.
CLIENT_TEXT_FIELDS = frozenset({"path"})


def scrub(text: str) -> str:
    """``text`` with credentials blanked: ``redaction.redact``, the one rule for every text that leaves."""
    return redact(text)


# Characters that end a line for some reader (Python's splitlines, JavaScript, many log viewers) although
# JSON lets them stand in a string unescaped: a client who puts one in a path must not be able to start a
# line of its own making. JSON lines escape them; text lines escape every control character too.
_LINE_BREAKS_IN_JSON = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})
_ONE_LINE_TEXT = str.maketrans(
    {chr(c): f"\\x{c:02x}" for c in (*range(0x20), 0x7F, 0x85)} | {"\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def _message(record: logging.LogRecord, *, one_line: bool = False) -> str:
    message = record.getMessage()
    if one_line:
        message = message.translate(_ONE_LINE_TEXT)
    if record.exc_info:
        message = f"{message}\n{logging.Formatter().formatException(record.exc_info)}"
    return scrub(message)


# Nothing here prints a record's thread or process name: skip looking them up for every record (the access
# log writes one record per request). The pid stays (``logProcesses``): JSON lines carry it.
logging.logThreads = False
logging.logMultiprocessing = False
# One encoder for every line: json.dumps with keyword arguments builds a new one per call.
_ENCODE = json.JSONEncoder(ensure_ascii=False, default=str).encode


_MILLIS = tuple(f".{n:03d}+00:00" for n in range(1000))


class _Timestamps:
    """``2026-11-27T09:48:01.123+00:00`` for a record's ``created``, the part up to the second formatted
    once per second (the same as ``datetime.isoformat(timespec="milliseconds")``, a few times cheaper)."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def format(self, created: float) -> str:
        second = int(created)
        micros = round((created - second) * 1_000_000)  # rounded to the microsecond, as datetime does
        if micros >= 1_000_000:
            second, micros = second + 1, micros - 1_000_000
        if second != self._second:
            self._second = second
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return self._prefix + _MILLIS[micros // 1000]


def _json(value: Any) -> str:
    """``value`` as ``_ENCODE`` writes it, without the encoder's call for the types a log line holds."""
    kind = type(value)
    if kind is str:
        return _json_string(value)
    if kind is int:
        return int.__repr__(value)
    if kind is float and math.isfinite(value):
        return float.__repr__(value)
    return _ENCODE(value)


# json's own string encoder (C), the one _ENCODE uses for every string when ensure_ascii is off.
_json_string: Callable[[str], str] = json.encoder.encode_basestring
# The part of a line after its timestamp and before its message, by level and logger name: a few dozen.
_HEADS: dict[tuple[str, str], str] = {}
_HEADS_LIMIT = 1024
# Each request field: its name, its key as the line spells it, and whether it is the client's text.
_FIELD_KEYS = tuple(
    (name, f", {_json_string(name)}: ", name in CLIENT_TEXT_FIELDS) for name in REQUEST_FIELDS
)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, keys in a stable order: the line ``json.dumps`` (``ensure_ascii`` off)
    makes of the entry, written directly (a line per request: the encoder's walk over a dict was a
    measurable share of a small request's time)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timestamp = _Timestamps().format  # a bound method: cheaper to call than an instance

    def format(self, record: logging.LogRecord) -> str:
        head = _HEADS.get((record.levelname, record.name))
        if head is None:
            head = f'"level": {_json(record.levelname.lower())}, "logger": {_json(record.name)}, "message": '
            if len(_HEADS) < _HEADS_LIMIT:
                _HEADS[record.levelname, record.name] = head
        line = (
            f'{{"timestamp": "{self._timestamp(record.created)}", {head}{_json_string(_message(record))}, '
            f'"pid": {_json(record.process)}'
        )
        fields = record.__dict__
        for field, key, clients_text in _FIELD_KEYS:
            value = fields.get(field)
            if value is not None:
                if clients_text:
                    value = scrub(value)
                kind = type(value)  # _json, inline
                if kind is str:
                    line += key + _json_string(value)
                elif kind is int:
                    line += key + int.__repr__(value)
                else:
                    line += key + _json(value)
        line += "}"
        # Only text outside ASCII can hold the line breaks JSON leaves unescaped.
        return line if line.isascii() else line.translate(_LINE_BREAKS_IN_JSON)


class LineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """``logging.StreamHandler`` writing each record as one line, flushed at once, without taking its lock a
    second time to flush (the access log writes one record per request). Not held back to write several
    at once: a line is on disk before its response leaves, and one write costs about a microsecond."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + "\n")
            self.stream.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


class TextFormatter(logging.Formatter):
    """For a human at a terminal: time, level, logger, message, then the request fields as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S.%f")[:-3]
        values = {name: record.__dict__.get(name) for name in REQUEST_FIELDS}
        shown = {
            name: (scrub(str(value)) if name in CLIENT_TEXT_FIELDS else str(value)).translate(_ONE_LINE_TEXT)
            for name, value in values.items()
            if value is not None
        }
        fields = " ".join(f"{name}={value}" for name, value in shown.items())
        line = f"{stamp} {record.levelname:<7} {record.name}: {_message(record, one_line=True)}"
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
    handler = {"class": f"{__name__}.LineHandler", "formatter": "buildstate", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"buildstate": {"()": formatter}},
        "handlers": {"stderr": handler},
        "filters": {"parser_rejections": {"()": "buildstate.web.parser_log.ParserRejections"}},
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        "loggers": {
            "aiohttp.server": {"level": level.upper(), "filters": ["parser_rejections"]},
            "gunicorn.error": {"level": level.upper(), "handlers": ["stderr"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
            # aiohttp's access logger duplicates web.observe's request line.
            "aiohttp.access": {"level": "WARNING", "handlers": [], "propagate": True},
        },
    }


def configure(level: str, fmt: str) -> None:
    """Set up logging for this process (the CLI, or a test); gunicorn repeats it in master and workers."""
    logging.config.dictConfig(logging_config(level, fmt))
