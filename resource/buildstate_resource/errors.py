"""Errors a script reports as one line on stderr, never as a traceback.

Anything raised that is not a :class:`ResourceError` is a bug in the resource; ``protocol`` still
reports it as one line, and adds the traceback only when ``source.debug`` is on.
"""


class ResourceError(Exception):
    """A failure the pipeline author can act on; ``str()`` is the whole message."""


class ConfigError(ResourceError):
    """``source``, ``params``, ``version`` or an input file is not usable."""


class ApiError(ResourceError):
    """The service refused the request, or did not answer within the retry budget."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
