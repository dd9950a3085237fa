"""``in``: fetch exactly the event named by the version and write it into the destination.

``in`` is cached by Concourse per (source, params, version), so it must be a pure function of the
version: it reads ``GET /events/{seq}``, never "the latest", and fails when that event is gone. A channel
resource's version is an assignment, whose event's build is the build the channel then pointed at: the
files are that build's, as of the move.
"""

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import artifacts, channels, log
from .client import Client, path_for
from .config import GET_PARAMS_KEYS, parse_source, reject_unknown_keys, require_mapping
from .errors import ApiError, ConfigError
from .events import build_as_of, metadata_of, require_event, seq_of_version, version_of
from .protocol import run


def get(request: Mapping[str, Any], args: list[str]) -> dict[str, Any]:
    if not args:
        raise ConfigError("in needs the destination directory as its first argument")
    destination = Path(args[0])
    source = parse_source(request.get("source"))
    log.set_debug(source.debug)
    params = require_mapping(request.get("params"), "params", allow_missing=True)
    reject_unknown_keys(params, GET_PARAMS_KEYS, "params")
    version = request.get("version")
    seq = seq_of_version(version)
    if seq is None:
        raise ConfigError(f"version {version!r} has no usable 'seq': in fetches one event by its seq")
    client = Client(source)
    try:
        event = require_event(client.get(path_for("events", seq)), f"GET /events/{seq}")
    except ApiError as error:
        if error.status == 404:
            raise ApiError(f"event seq {seq} no longer exists in {source.url} ({error})") from None
        raise
    expected_build = version.get("build") if isinstance(version, Mapping) else None
    if expected_build is not None and str(expected_build) != event["build"]["build_id"]:
        raise ApiError(
            f"event seq {seq} now belongs to build {event['build']['build_id']!r}, not "
            f"{expected_build!r}: the service's store was replaced; re-check the resource"
        )
    if source.channel is not None and not channels.is_assignment(event, source.channel):
        raise ApiError(
            f"event seq {seq} is not an assignment of channel {source.channel!r} (it is a "
            f"{event.get('type')!r} event): a channel resource fetches the builds its channel pointed at"
        )
    recorded = artifacts.as_of(client, event)
    write_files(destination, event, recorded)
    log.info(
        f"fetched event {seq}: build {event['build']['build_id']} state {event.get('state_code')} "
        f"({event.get('status')}), {len(recorded)} artifact{'' if len(recorded) == 1 else 's'}"
    )
    return {
        "version": version_of(event),
        "metadata": metadata_of(source.url, event) + artifacts.metadata_of(recorded),
    }


def write_files(destination: Path, event: Mapping[str, Any], recorded: Sequence[Mapping[str, Any]]) -> None:
    """``build.json``, ``event.json``, ``artifacts.json`` and one plain value per file (no newline, for
    ``cat``); ``artifact_id`` only for a single artifact (``artifacts.files_for``)."""
    destination.mkdir(parents=True, exist_ok=True)
    build = build_as_of(event)
    files = {
        "build.json": json.dumps(build, indent=2, sort_keys=True) + "\n",
        "event.json": json.dumps(event, indent=2, sort_keys=True) + "\n",
        "id": str(build["id"]),
        "build_id": str(build["build_id"]),
        "state": str(build["state_code"]),
        "status": str(build["status"]),
        "seq": str(event["seq"]),
        **artifacts.files_for(recorded),
    }
    for name, content in files.items():
        (destination / name).write_text(content, encoding="utf-8")


def main() -> None:
    run("in", get)
