"""``out``: record one change (create, state, failure or reset), with or without the build's artifacts
(recorded first, ``artifacts``) and a channel assignment (last, ``assign_channel``), and print the last
event's version.

The printed version comes from the event the service returns, formatted by the same function that
``check`` uses, so the put's version and the checked version are the same Concourse version, and
the implicit ``get`` after the put fetches exactly that event.
"""

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from . import artifacts, channels, log
from .client import Answer, Client, path_for
from .config import (
    ASSIGN_CHANNEL_KEYS,
    BUCKET_KEYS,
    CREATE_KEYS,
    FAILURE_FIELDS,
    FAILURE_KEYS,
    PUT_PARAMS_KEYS,
    RESET_KEYS,
    Source,
    channel_name,
    optional_string,
    parse_source,
    reject_unknown_keys,
    require_mapping,
    state_code,
    string,
)
from .errors import ApiError, ConfigError
from .events import Event, metadata_of, require_event, version_of
from .inputs import read_input
from .protocol import run
from .provenance import idempotency_key, provenance_from_env

ACTIONS = ("create", "state", "failure", "reset")
# The service's limits; text read from files keeps its end, where a log says what went wrong.
TEXT_LIMITS = {
    "message": 4000,
    "error_message": 4000,
    "reason": 2000,
    "error_code": 200,
    "component": 200,
}
DETAILS_TEXT_LIMIT = 16000
# A details_file holding a JSON object is sent as it is up to this size; a larger one is sent as the tail
# of its text, like any other file (the service refuses details past 64 KiB of text, 10,000 values).
DETAILS_JSON_LIMIT = 60000


@dataclass(frozen=True)
class Change:
    path: str
    body: dict[str, Any]
    summary: str
    records_artifacts: bool = False
    method: str = "POST"
    # The channel an assignment (``PUT /channels/{name}``) moves; its bucket is added by ``put``.
    channel: str | None = None

    @property
    def carries_provenance(self) -> bool:
        """A manifest is sent as Packer wrote it and an assignment has a reason instead; every other body
        takes the Concourse build's provenance."""
        return not self.path.endswith("/packer-manifest") and self.channel is None


def put(request: Mapping[str, Any], args: list[str]) -> dict[str, Any]:
    if not args:
        raise ConfigError("out needs the build's sources directory as its first argument")
    sources = Path(args[0])
    source = parse_source(request.get("source"))
    log.set_debug(source.debug)
    params = require_mapping(request.get("params"), "params", allow_missing=True)
    provenance = provenance_from_env(os.environ)
    client = Client(source)
    recorded: list[Mapping[str, Any]] = []
    last: Event | None = None
    # The version is the last change's event: the assignment's, else the action's (artifacts go first).
    for planned in plan_put(params, sources, source.channel):
        change = _with_bucket(client, source, planned, last) if planned.channel else planned
        answer, event = _record(client, change, provenance)
        last = event
        if change.records_artifacts:
            recorded = _recorded_artifacts(answer.body)
        _report(change, answer, version_of(event), len(recorded))
    return {
        "version": version_of(event),
        "metadata": metadata_of(source.url, event) + artifacts.metadata_of(recorded),
    }


def _report(change: Change, answer: Answer, version: Mapping[str, str], artifact_count: int) -> None:
    """One line in the build log for what a request recorded; or that it had been sent before (the same
    Idempotency-Key: a re-run put, answered as the first time with ``Idempotent-Replayed``); or that what
    it asks was true already (``replayed`` in the answer)."""
    body = answer.body
    already = isinstance(body, Mapping) and body.get("replayed") is True
    build, seq, state = version["build"], version["seq"], version["state"]
    if change.channel:
        what = f"channel {change.channel} pointing at build {build}"
    elif change.records_artifacts:
        what = f"{artifact_count} artifact{'' if artifact_count == 1 else 's'}"
    else:
        what = f"state {state}"
    if answer.replayed and not already:
        log.info(
            f"nothing recorded: this put ran before in this Concourse build; event {seq} recorded {what}"
        )
    elif already and change.channel:
        log.info(
            f"nothing recorded: build {build} already heads channel {change.channel} (event {seq}); the "
            "version is that event"
        )
    elif already and change.records_artifacts:
        log.info(f"nothing recorded: build {build} has the {what} already (event {seq})")
    elif already:
        log.info(
            f"nothing recorded: build {build} is already at {what} (event {seq}); the version is that event"
        )
    elif change.channel:
        log.info(f"recorded event {seq}: channel {change.channel} points at build {build}")
    elif change.records_artifacts:
        log.info(f"recorded event {seq}: {what} of build {build}")
    else:
        log.info(f"recorded event {seq}: build {build} {what}")


def _record(
    client: Client, change: Change, provenance: dict[str, Any] | None
) -> tuple[Answer, Mapping[str, Any]]:
    """Send one change with its idempotency key: the answer, and the event it recorded (or replayed)."""
    body = (
        {**change.body, "provenance": provenance} if provenance and change.carries_provenance else change.body
    )
    key = idempotency_key(os.environ, change.method, change.path, body)
    log.info(f"recording {change.summary}")
    answer = client.send(change.method, change.path, body, key)
    if change.channel:
        bucket = {name: str(body[name]) for name in BUCKET_KEYS}
        return answer, channels.assignment_event(client, answer.body, change.channel, bucket)
    return answer, _event_of(client, answer.body, change.path)


def _with_bucket(client: Client, source: Source, change: Change, last: Event | None) -> Change:
    """The assignment with its bucket: the source's platform, OS version and image type, the rest from the
    build (the one this put just changed, else ``GET /builds/{ref}``)."""
    bucket = source.bucket()
    if len(bucket) < len(BUCKET_KEYS):
        ref = str(change.body["build"])
        build = last["build"] if last is not None else client.get(path_for("builds", ref))
        if not isinstance(build, Mapping) or not all(isinstance(build.get(key), str) for key in BUCKET_KEYS):
            raise ApiError(f"GET /builds/{ref} did not answer with a build")
        bucket = {**{key: str(build[key]) for key in BUCKET_KEYS}, **bucket}
    return replace(change, body={**change.body, **bucket})


def _recorded_artifacts(response: object) -> list[Mapping[str, Any]]:
    """The artifacts an artifacts POST answered with (the build's, or those it recorded)."""
    listed = response.get("artifacts") if isinstance(response, Mapping) else None
    return [item for item in listed if isinstance(item, Mapping)] if isinstance(listed, list) else []


def plan_put(params: Mapping[str, Any], sources: Path, channel: str | None = None) -> list[Change]:
    """Validate ``params`` into the requests to send, in order, reading any ``*_file`` under ``sources``;
    ``channel`` is the resource's ``source.channel``.

    Artifacts are recorded before the state change or failure they come with, so a build is never seen
    succeeded (by a check that triggers a deployer on 100) before its AMIs can be looked up; a channel is
    assigned last, once the build has what the channel's users look up.
    """
    reject_unknown_keys(params, PUT_PARAMS_KEYS, "params")
    has_artifacts = params.get("artifacts") is not None or params.get("artifacts_file") is not None
    assigns = params.get("assign_channel") is not None
    chosen = [action for action in ACTIONS if params.get(action) is not None]
    if len(chosen) > 1 or not (chosen or has_artifacts or assigns):
        given = ", ".join(chosen) or "none"
        raise ConfigError(
            f"params needs exactly one of {', '.join(ACTIONS)}, or artifacts / artifacts_file or "
            f"assign_channel alone (given: {given})"
        )
    if channel is not None and not assigns:
        raise ConfigError(
            f"a put to a channel resource (source.channel: {channel}) moves the channel: params needs "
            "assign_channel ({reason: ...}); record other changes through a resource without a channel"
        )
    if assigns and chosen and chosen[0] != "state":
        raise ConfigError(
            f"params.assign_channel goes with state (a build is assigned once it succeeded), or alone; "
            f"not with {chosen[0]}"
        )
    if has_artifacts and chosen and chosen[0] in ("create", "reset"):
        raise ConfigError(
            f"params.artifacts and params.artifacts_file go with state or failure, or alone; not with "
            f"{chosen[0]} (record them in a put of their own)"
        )
    changes: list[Change] = []
    if has_artifacts:
        ref = _build_ref(params, sources)
        path, body = artifacts.from_params(params, sources, ref)
        changes.append(Change(path, body, f"artifacts of build {ref}", records_artifacts=True))
    if chosen:
        changes.append(_action(chosen[0], params, sources))
    if assigns:
        changes.append(_assignment(params, sources, channel))
    return changes


def _assignment(params: Mapping[str, Any], sources: Path, channel: str | None) -> Change:
    """``assign_channel: {name, reason}``: ``PUT /channels/{name}`` of the build the put names (its bucket
    is added by ``put``, which may need to ask the service)."""
    assign = require_mapping(params["assign_channel"], "params.assign_channel")
    reject_unknown_keys(assign, ASSIGN_CHANNEL_KEYS, "params.assign_channel")
    if assign.get("name") is not None:
        name = channel_name(assign["name"], "params.assign_channel.name")
        if channel is not None and name != channel:
            raise ConfigError(
                f"params.assign_channel.name {name!r} is not this resource's channel {channel!r} "
                "(source.channel); leave the name out or put to that channel's resource"
            )
    elif channel is not None:
        name = channel
    else:
        raise ConfigError("params.assign_channel needs name (or a resource with source.channel)")
    reason = _text_or_file(assign, "reason", sources, "params.assign_channel")
    if reason is None:
        raise ConfigError("params.assign_channel needs reason or reason_file (kept in the channel's history)")
    ref = _build_ref(params, sources)
    body = {"build": ref, "reason": reason}
    return Change(
        path_for("channels", name), body, f"channel {name} -> build {ref}", method="PUT", channel=name
    )


def _action(action: str, params: Mapping[str, Any], sources: Path) -> Change:
    """The action of ``params`` (create, state, failure or reset) as a request."""
    if action != "state" and ("message" in params or "message_file" in params):
        raise ConfigError("params.message and params.message_file go with params.state only")
    if action == "create":
        if "build" in params or "build_file" in params:
            raise ConfigError("params.create names its own build_id; drop params.build / params.build_file")
        return _create(require_mapping(params["create"], "params.create"), sources)
    ref = _build_ref(params, sources)
    if action == "state":
        code = state_code(params["state"], "params.state")
        body: dict[str, Any] = {"state_code": code}
        message = _text_or_file(params, "message", sources, "params")
        if message is not None:
            body["message"] = message
        return Change(path_for("builds", ref, "state"), body, f"state {code} for build {ref}")
    if action == "failure":
        return _failure(require_mapping(params["failure"], "params.failure"), sources, ref)
    reset = require_mapping(params["reset"], "params.reset")
    reject_unknown_keys(reset, RESET_KEYS, "params.reset")
    reason = _text_or_file(reset, "reason", sources, "params.reset")
    if reason is None:
        raise ConfigError("params.reset needs reason or reason_file")
    return Change(path_for("builds", ref, "reset"), {"reason": reason}, f"reset of build {ref}")


def _create(create: Mapping[str, Any], sources: Path) -> Change:
    reject_unknown_keys(create, CREATE_KEYS, "params.create")
    body: dict[str, Any] = {}
    for key in ("platform", "os_version", "image_type"):
        if create.get(key) is None:
            raise ConfigError(f"params.create.{key} is required")
        body[key] = string(create[key], f"params.create.{key}")
    if (create.get("build_id") is None) == (create.get("build_id_file") is None):
        raise ConfigError("params.create needs exactly one of build_id and build_id_file")
    if create.get("build_id") is not None:
        body["build_id"] = string(create["build_id"], "params.create.build_id")
    else:
        where = "params.create.build_id_file"
        body["build_id"] = _read_value(sources, create["build_id_file"], where)
    labels = require_mapping(create.get("labels"), "params.create.labels", allow_missing=True)
    if labels:
        body["labels"] = {
            str(key): string(value, f"params.create.labels.{key}") for key, value in labels.items()
        }
    return Change("/builds", body, f"creation of build {body['build_id']}")


def _failure(failure: Mapping[str, Any], sources: Path, ref: str) -> Change:
    reject_unknown_keys(failure, FAILURE_KEYS, "params.failure")
    body: dict[str, Any] = {}
    for field in FAILURE_FIELDS:
        if field == "details":
            details = _details(failure, sources)
            if details is not None:
                body["details"] = details
            continue
        value = _text_or_file(failure, field, sources, "params.failure")
        if value is not None:
            body[field] = value
    if "error_message" not in body:
        raise ConfigError("params.failure needs error_message or error_message_file")
    return Change(path_for("builds", ref, "failure"), body, f"failure of build {ref}")


def _details(failure: Mapping[str, Any], sources: Path) -> dict[str, Any] | None:
    """``details`` inline (a mapping), or a file: a JSON object as is, any other text wrapped."""
    if failure.get("details") is not None and failure.get("details_file") is not None:
        raise ConfigError("params.failure takes details or details_file, not both")
    if failure.get("details") is not None:
        return dict(require_mapping(failure["details"], "params.failure.details"))
    if failure.get("details_file") is None:
        return None
    relative = string(failure["details_file"], "params.failure.details_file")
    text = _read_file(sources, relative, "params.failure.details_file")
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and len(text) <= DETAILS_JSON_LIMIT:
        return parsed
    return {"file": relative, "text": _tail(text.rstrip(), DETAILS_TEXT_LIMIT)}


def _build_ref(params: Mapping[str, Any], sources: Path) -> str:
    if (params.get("build") is None) == (params.get("build_file") is None):
        raise ConfigError(
            "params needs exactly one of build (a build id) and build_file "
            "(a file under the put's inputs, e.g. state/build_id from an earlier get)"
        )
    if params.get("build") is not None:
        return string(params["build"], "params.build")
    return _read_value(sources, params["build_file"], "params.build_file")


def _text_or_file(mapping: Mapping[str, Any], field: str, sources: Path, where: str) -> str | None:
    inline, from_file = mapping.get(field), mapping.get(f"{field}_file")
    if inline is not None and from_file is not None:
        raise ConfigError(f"{where} takes {field} or {field}_file, not both")
    if inline is not None:
        return optional_string(mapping, field, where)
    if from_file is None:
        return None
    text = _read_file(sources, string(from_file, f"{where}.{field}_file"), f"{where}.{field}_file").strip()
    if not text:
        raise ConfigError(f"{where}.{field}_file {from_file!r} is empty")
    return _tail(text, TEXT_LIMITS.get(field, 4000))


def _read_value(sources: Path, relative: object, where: str) -> str:
    """A one-line value such as a build id, from a file that an earlier step wrote."""
    value = _read_file(sources, string(relative, where), where).strip()
    if not value:
        raise ConfigError(f"{where} {relative!r} is empty")
    return value


def _read_file(sources: Path, relative: str, where: str) -> str:
    """Text as ``open()`` reads it: invalid UTF-8 replaced, any line ending read as ``\\n``."""
    text = read_input(sources, relative, where).decode("utf-8", errors="replace")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _tail(text: str, limit: int) -> str:
    return text if len(text) <= limit else "..." + text[-(limit - 3) :]


def _event_of(client: Client, response: object, path: str) -> Mapping[str, Any]:
    """The event a POST recorded; an answer without one (an older service) is looked up by seq."""
    if isinstance(response, Mapping) and response.get("event") is not None:
        return require_event(response["event"], f"POST {path}")
    seq = response.get("last_event_seq") if isinstance(response, Mapping) else None
    if isinstance(seq, bool) or not isinstance(seq, int):
        return require_event(response, f"POST {path}")
    return require_event(client.get(path_for("events", seq)), f"GET /events/{seq}")


def main() -> None:
    run("out", put)
