"""Logging to stderr, the pipeline author's build log.

A deliberately tiny logger instead of :mod:`logging`: one global switch (``source.debug``) and one
redaction rule. Every line passes through :func:`redact`, so a secret registered with
:func:`add_secret` (the API key) cannot reach the build log even inside an echoed URL or error body.
"""

import sys

_state: dict[str, bool] = {"debug": False}
_secrets: set[str] = set()
REDACTED = "<redacted>"


def set_debug(enabled: bool) -> None:
    _state["debug"] = enabled


def debug_enabled() -> bool:
    return _state["debug"]


def add_secret(secret: str | None) -> None:
    """Register a value that must never appear in output (empty values would redact everything)."""
    if secret:
        _secrets.add(secret)


def redact(text: str) -> str:
    for secret in _secrets:
        text = text.replace(secret, REDACTED)
    return text


def info(message: str) -> None:
    _write(message)


def debug(message: str) -> None:
    if _state["debug"]:
        _write(f"debug: {message}")


def _write(message: str) -> None:
    sys.stderr.write(redact(message) + "\n")
    sys.stderr.flush()
