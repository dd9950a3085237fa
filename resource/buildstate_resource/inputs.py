"""The files a ``put`` reads: paths under the build's sources directory (``$1``), named by ``*_file`` params.

Each path must stay under that directory (its first part is an artifact listed in the put's ``inputs``), and
every failure to read one is a one-line ``ConfigError`` that says which param named it and what to check.
"""

from pathlib import Path

from .errors import ConfigError


def read_input(sources: Path, relative: str, where: str, *, max_bytes: int | None = None) -> bytes:
    """The bytes of ``relative`` under ``sources``, for the param ``where``; at most ``max_bytes``."""
    path = Path(relative)
    base = sources.resolve()
    try:
        full = (base / path).resolve()
    except ValueError:  # a NUL in the name: no file has one
        full = None
    if full is None or path.is_absolute() or not full.is_relative_to(base):
        raise ConfigError(
            f"{where} must be a path under the put's inputs (like input/file), got {relative!r}"
        )
    try:
        if max_bytes is not None and (size := full.stat().st_size) > max_bytes:
            raise ConfigError(f"{where} {relative!r} holds {size} bytes; at most {max_bytes} are read")
        return full.read_bytes()
    except FileNotFoundError:
        first = path.parts[0] if path.parts else relative
        raise ConfigError(
            f"{where}: no file {relative!r} under the put's inputs; is {first!r} an output of "
            "an earlier step and listed in the put's inputs?"
        ) from None
    except OSError as error:
        raise ConfigError(f"{where}: cannot read {relative!r}: {error.strerror}") from None
