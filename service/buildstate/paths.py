"""Where buildstate keeps its files on this machine, and how to name its own command in a hint.

The default data directory is absolute, ``$XDG_DATA_HOME/buildstate`` (``~/.local/share/buildstate``), so
``scripts/serve`` and every ``buildstate`` command find the same SQLite database and development secrets
wherever they are run from; ``BUILDSTATE_DATA_DIR`` (or ``BUILDSTATE_DATABASE_URL``) chooses another.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def default_data_dir() -> Path:
    xdg = os.environ.get("XDG_DATA_HOME", "")
    if xdg and Path(xdg).is_absolute():  # the XDG spec: a relative value is to be ignored
        return Path(xdg) / "buildstate"
    try:
        return Path.home() / ".local" / "share" / "buildstate"
    except RuntimeError:  # no home directory to be found: the working directory, made absolute
        return Path("data").absolute()


def command() -> str:
    """How to run ``buildstate`` from here: the bare name when it is this one on PATH, else the path of the
    one installed beside this Python (``.venv/bin/buildstate`` in a checkout)."""
    beside = Path(sys.executable).parent / "buildstate"
    if not beside.exists():
        return "buildstate"
    found = shutil.which("buildstate")
    if found is not None and Path(found).resolve() == beside.resolve():
        return "buildstate"
    try:
        return str(beside.relative_to(Path.cwd()))
    except ValueError:
        return str(beside)
