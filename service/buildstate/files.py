"""Files and folders that hold secrets or the data: made for their owner only.

The data directory holds the SQLite database (its -wal and -shm files, the writers' lock), the development
JWT secret and the webhook key: a database readable by others hands out the users' argon2 hashes and the
webhook secrets' ciphertext, a readable secret file the power to sign tokens. So each is created 0700
(folders) or 0600 (files) whatever the umask, and a database file found readable by others is tightened
with a warning (as ``auth/secret.py`` does for the JWT secret). SQLite creates -wal and -shm with the
database file's permissions, so a private database file makes them private too.
"""

from __future__ import annotations

import logging
import os
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
