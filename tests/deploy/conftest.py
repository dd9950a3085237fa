"""Loading the deployment files: compose (with its !reset and !override tags), manifests, Dockerfiles."""

from __future__ import annotations

import sys
from pathlib import Path

# --import-mode=importlib puts no folder on sys.path; the loaders module has a name no other folder uses.
sys.path.insert(0, str(Path(__file__).parent))
