"""Files and folders that hold secrets or the data: made for their owner only.

The data directory holds the SQLite database (its -wal and -shm files, the writers' lock), the development
JWT secret and the webhook key: a database readable by others hands out the users' argon2 hashes and the
webhook secrets' ciphertext, a readable secret file the power to sign tokens. So each is created 0700
(folders) or 0600 (files) whatever the umask, and a database file found readable by others is tightened
with a warning (as ``auth/secret.py`` does for the JWT secret). SQLite creates -wal and -shm with the
database file's permissions, so a private database file makes them private too.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
from pathlib import Path

log = logging.getLogger("buildstate")

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_dir(path: Path) -> Path:
    """Make ``path`` (and missing parents) if needed; a folder this creates is its owner's only. An
    existing folder is left as the operator made it (a mount point, a volume)."""
    if not path.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir(mode=PRIVATE_DIR, exist_ok=True)
        path.chmod(PRIVATE_DIR)  # mkdir's mode passes through the umask, which may be wider
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty and 0600 if it is missing; tighten it to 0600 if others may read it."""
    private_dir(path.parent)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    except FileExistsError:
        mode = path.stat().st_mode
        if mode & 0o077:
            log.warning(
                "%s was readable by others (mode %o); restricting it to its owner", path, mode & 0o777
            )
            path.chmod(PRIVATE_FILE)
    return path


class DataDirUnwritable(OSError):
    """The folder of the SQLite database cannot be written; the message (one line) says what to do."""


# The errors that mean "this process may not write here", from the OS or from SQLite itself.
_UNWRITABLE_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM}
_UNWRITABLE_SQLITE = ("unable to open database file", "readonly database")


def unwritable(directory: Path, exc: BaseException) -> DataDirUnwritable | None:
    """A ``DataDirUnwritable`` naming ``directory`` if ``exc`` means it cannot be written, else None.

    The usual cause is a container: a read-only root file system (compose's ``read_only``, Kubernetes'
    ``readOnlyRootFilesystem``) with no volume on the data directory, or a volume the image's user does not
    own. Without this, SQLite only says ``unable to open database file``."""
    if isinstance(exc, sqlite3.OperationalError):
        if not any(text in str(exc) for text in _UNWRITABLE_SQLITE):
            return None
        reason = str(exc)
    elif isinstance(exc, OSError) and exc.errno in _UNWRITABLE_ERRNOS:
        reason = exc.strerror or str(exc)
    else:
        return None
    return DataDirUnwritable(
        f"cannot write {directory} ({reason}): the SQLite database lives there, so it must be writable by "
        f"uid {os.getuid()}: mount a volume on it (docker run -v buildstate-data:{directory} ...), "
        "or set BUILDSTATE_DATA_DIR to a writable folder, or BUILDSTATE_DATABASE_URL to PostgreSQL"
    )
