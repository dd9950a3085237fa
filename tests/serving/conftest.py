"""Real ``buildstate serve`` processes (gunicorn master + aiohttp workers) on loopback ports."""

from __future__ import annotations

import sys
from pathlib import Path

# pytest runs with --import-mode=importlib, which puts no test folder on sys.path; the harness module has a
# name no other folder uses.
sys.path.insert(0, str(Path(__file__).parent))
