"""What a ``put`` records about the Concourse build that made it, and the request's idempotency key.

Concourse gives build metadata to ``in``/``out`` only, as ``BUILD_*`` environment variables
(one-off builds lack the job and pipeline ones; ``BUILD_STATUS`` exists only inside hooks).

The idempotency key is a hash of the build's identity and the exact request. ``attempts:``, an
ATC or worker restart, or our own retry re-run the same ``out`` with the same variables and the
same params, so they send the same key and the service records the change once. A different
Concourse build (or different params) sends a different key and is recorded as a new change.
Hashing the final body rather than the raw params means one key can never carry two bodies (which
the service would reject with 422), even when a ``*_file`` changed between two runs.
"""

import hashlib
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from . import log

IDENTITY_VARIABLES = (
    "BUILD_ID",
    "BUILD_NAME",
    "BUILD_JOB_NAME",
    "BUILD_PIPELINE_NAME",
    "BUILD_PIPELINE_INSTANCE_VARS",
    "BUILD_TEAM_NAME",
)
PROVENANCE_TEXT_LIMIT = 200  # the service's limit for each provenance string
BUILD_URL_LIMIT = 2000


def provenance_from_env(env: Mapping[str, str]) -> dict[str, Any] | None:
    """The ``provenance`` body field, or ``None`` when not run by Concourse (no build variables)."""
    if not env.get("BUILD_ID") and not env.get("BUILD_TEAM_NAME"):
        return None
    instance_vars = _instance_vars(env.get("BUILD_PIPELINE_INSTANCE_VARS"))
    return {
        "team": _text(env.get("BUILD_TEAM_NAME")),
        "pipeline": _text(env.get("BUILD_PIPELINE_NAME")),
        "instance_vars": instance_vars,
        "job": _text(env.get("BUILD_JOB_NAME")),
        "build_name": _text(env.get("BUILD_NAME")),
        "build_id": _text(env.get("BUILD_ID")),
        "build_url": _text(build_url(env, instance_vars), BUILD_URL_LIMIT),
        "build_status": _text(env.get("BUILD_STATUS")),
        "created_by": _text(env.get("BUILD_CREATED_BY")),
    }


def build_url(env: Mapping[str, str], instance_vars: Mapping[str, Any] | None) -> str | None:
    """``BUILD_URL`` when Concourse provides it, else the same link built from its parts."""
    if env.get("BUILD_URL"):
        return env["BUILD_URL"]
    external = (env.get("ATC_EXTERNAL_URL") or "").rstrip("/")
    if not external:
        return None
    names = [
        env.get(key) for key in ("BUILD_TEAM_NAME", "BUILD_PIPELINE_NAME", "BUILD_JOB_NAME", "BUILD_NAME")
    ]
    if not all(names):
        return (
            f"{external}/builds/{quote(env.get('BUILD_ID') or '', safe='')}" if env.get("BUILD_ID") else None
        )
    team, pipeline, job, name = (quote(str(part), safe="") for part in names)
    url = f"{external}/teams/{team}/pipelines/{pipeline}/jobs/{job}/builds/{name}"
    if instance_vars:
        pairs = (
            f"vars.{quote(key, safe='')}={quote(json.dumps(value), safe='')}"
            for key, value in sorted(instance_vars.items())
        )
        url += "?" + "&".join(pairs)
    return url


def idempotency_key(env: Mapping[str, str], method: str, path: str, body: Mapping[str, Any]) -> str:
    identity = {name: env.get(name) for name in IDENTITY_VARIABLES}
    material = json.dumps(
        {"identity": identity, "request": [method, path, body]},
        sort_keys=True,
        separators=(",", ":"),
    )
    return "concourse-" + hashlib.sha256(material.encode()).hexdigest()


def _instance_vars(raw: str | None) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        log.info("BUILD_PIPELINE_INSTANCE_VARS is not JSON; leaving instance_vars out of the provenance")
        return None
    return value if isinstance(value, dict) else None


def _text(value: str | None, limit: int = PROVENANCE_TEXT_LIMIT) -> str | None:
    return value[:limit] if value else None
