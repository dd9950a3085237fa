"""The Concourse side of a script run: stdin in, exactly one JSON value out, one-line errors.

The ATC decodes the first JSON value on stdout, so a stray ``print`` (ours, a library's, a child
process's) before it breaks the step. :func:`run` therefore moves the real stdout away at the file
descriptor level before any work happens: it keeps a private duplicate of fd 1 for the result and
points fd 1 at stderr. Whatever writes to fd 1 afterwards lands in the build log instead.
"""

import json
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from . import log
from .errors import ConfigError, ResourceError

Handler = Callable[[Mapping[str, Any], list[str]], object]


def guard_stdout() -> int:
    """Return a private fd for the result; from now on fd 1 (and ``sys.stdout``) is stderr."""
    sys.stdout.flush()
    result_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return result_fd


def read_request(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        raise ConfigError("no request on stdin: expected a JSON object from Concourse")
    try:
        request = json.loads(raw)
    except ValueError as error:
        raise ConfigError(f"request on stdin is not valid JSON: {error}") from None
    if not isinstance(request, dict):
        raise ConfigError(f"request on stdin must be a JSON object, got {type(request).__name__}")
    return request


def write_result(result_fd: int, result: object) -> None:
    data = (json.dumps(result) + "\n").encode()
    while data:
        written = os.write(result_fd, data)
        data = data[written:]
    os.close(result_fd)


def one_line(text: str) -> str:
    return " ".join(text.split())


def run(script: str, handler: Handler) -> NoReturn:
    """Run ``handler(request, argv[1:])`` as the Concourse ``script`` and exit.

    Exit status 0 with the result on the real stdout, or 1 with one line on stderr and nothing on
    stdout. Unexpected exceptions are reported the same way; the traceback only with ``debug``.
    """
    result_fd = guard_stdout()
    try:
        request = read_request(sys.stdin.buffer.read())
        result = handler(request, sys.argv[1:])
    except ResourceError as error:
        _fail(script, str(error))
    except Exception as error:  # a bug must still fail the step in one line
        if log.debug_enabled():
            import traceback  # noqa: PLC0415 - only on this path

            log.info(traceback.format_exc())
        _fail(script, f"internal error ({type(error).__name__}): {error}")
    write_result(result_fd, result)
    sys.exit(0)


def _fail(script: str, reason: str) -> NoReturn:
    log.info(one_line(f"buildstate {script}: {reason}"))
    sys.exit(1)
