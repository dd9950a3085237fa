"""Artifacts (the AMIs, gallery versions, images a build made): what ``out`` sends and ``in`` writes.

``out`` takes ``params.artifacts`` (a list written in the pipeline) or ``params.artifacts_file`` (a file an
earlier step wrote): either Packer's manifest (``{"builds": [...], "last_run_uuid": ...}``, sent as it is to
``POST /builds/{ref}/packer-manifest``, where the service reads each builder's ``artifact_id``) or our own
list (``[{"kind", "external_id", ...}]``, or ``{"artifacts": [...]}`` as ``in`` and the API write it), sent to
``POST /builds/{ref}/artifacts``. The resource checks shapes and keys so that a typo fails before any
request; the service checks values (slugs, lengths).

``in`` is cached by Concourse per version, so the artifacts it writes are those of the event's build as of
that event: its attempt's artifacts recorded at or before the event, never ones recorded later.
"""

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .client import Client, path_for
from .config import ARTIFACT_KEYS, reject_unknown_keys, require_mapping, string
from .errors import ApiError, ConfigError
from .inputs import read_input

# The service's bound of one request's list; the resource stops a longer one before sending it.
MAX_ARTIFACTS = 200
# An artifacts_file larger than this is not an artifact list or a manifest an image build writes.
MAX_FILE_BYTES = 4 << 20
# Metadata in the Concourse UI: this many artifacts by name, then a count.
SHOWN_ARTIFACTS = 10


def from_params(params: Mapping[str, Any], sources: Path, ref: str) -> tuple[str, dict[str, Any]]:
    """The (path, body) that records ``params.artifacts`` or ``params.artifacts_file`` (one is given)."""
    inline, named = params.get("artifacts"), params.get("artifacts_file")
    if inline is not None and named is not None:
        raise ConfigError("params takes artifacts or artifacts_file, not both")
    if inline is not None:
        return path_for("builds", ref, "artifacts"), {"artifacts": _listed(inline, "params.artifacts")}
    if named is None:
        raise ConfigError("params needs artifacts or artifacts_file")
    where = "params.artifacts_file"
    relative = string(named, where)
    doc = _json_file(sources, relative, where)
    if isinstance(doc, Mapping) and "builds" in doc:
        if not isinstance(doc["builds"], list) or not doc["builds"]:
            raise ConfigError(f"{where} {relative!r} is a Packer manifest without builds")
        return path_for("builds", ref, "packer-manifest"), dict(doc)
    if isinstance(doc, Mapping) and "artifacts" in doc:
        reject_unknown_keys(doc, ("artifacts",), f"{where} {relative!r}")
        doc = doc["artifacts"]
    if not isinstance(doc, list):
        raise ConfigError(
            f'{where} {relative!r} is neither a Packer manifest ({{"builds": [...]}}, the manifest '
            'post-processor\'s output) nor a list of artifacts ([{"kind": ..., "external_id": ...}])'
        )
    return path_for("builds", ref, "artifacts"), {"artifacts": _listed(doc, f"{where} {relative!r}")}


def _listed(value: object, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise ConfigError(
            f"{where} must be a non-empty list of {{kind, external_id, region, platform, labels}}"
        )
    if len(value) > MAX_ARTIFACTS:
        raise ConfigError(f"{where} lists {len(value)} artifacts; one put records at most {MAX_ARTIFACTS}")
    return [_artifact(item, f"{where}[{index}]") for index, item in enumerate(value)]


def _artifact(value: object, where: str) -> dict[str, Any]:
    item = require_mapping(value, where)
    reject_unknown_keys(item, ARTIFACT_KEYS, where)
    artifact: dict[str, Any] = {}
    for key in ("kind", "external_id"):
        if item.get(key) is None:
            raise ConfigError(f"{where}.{key} is required")
        artifact[key] = string(item[key], f"{where}.{key}")
    for key in ("platform", "region"):
        if item.get(key) is not None:
            artifact[key] = string(item[key], f"{where}.{key}") if item[key] != "" else ""
    labels = require_mapping(item.get("labels"), f"{where}.labels", allow_missing=True)
    if labels:
        artifact["labels"] = {str(k): _label(v, f"{where}.labels.{k}") for k, v in labels.items()}
    return artifact


def _label(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string (quote numbers in YAML)")
    return value


def _json_file(sources: Path, relative: str, where: str) -> Any:
    raw = read_input(sources, relative, where, max_bytes=MAX_FILE_BYTES)
    try:
        return json.loads(raw)
    except json.JSONDecodeError as error:
        # Where, not what: the text may hold anything (a secret in custom_data).
        raise ConfigError(
            f"{where} {relative!r} is not JSON (line {error.lineno}, column {error.colno})"
        ) from None
    except ValueError:
        raise ConfigError(f"{where} {relative!r} is not UTF-8 JSON") from None
    except RecursionError:  # within the size bound, [[[[...]]]] deeper than the parser goes
        raise ConfigError(
            f"{where} {relative!r} is nested too deeply to be artifacts or a manifest"
        ) from None


# ---------------------------------------------------------------- in


def as_of(client: Client, event: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The artifacts of the event's build and attempt recorded at or before the event (oldest first)."""
    build_uuid = str(event["build"]["id"])
    try:
        answer = client.get(path_for("builds", build_uuid, "artifacts"))
    except ApiError as error:
        if error.status == 404:  # a service from before artifacts, or a build that is gone
            return []
        raise
    listed = answer.get("artifacts") if isinstance(answer, Mapping) else answer
    if not isinstance(listed, list):
        raise ApiError(f"GET /builds/{build_uuid}/artifacts did not answer with a list of artifacts")
    recorded = _time(event.get("recorded_at"))
    return [
        artifact
        for artifact in listed
        if isinstance(artifact, Mapping)
        and artifact.get("attempt") == event.get("attempt")
        and _recorded_by(artifact, event, recorded)
    ]


def _recorded_by(artifact: Mapping[str, Any], event: Mapping[str, Any], recorded: datetime | None) -> bool:
    seq, event_seq = artifact.get("event_seq"), event.get("seq")
    if isinstance(seq, int) and isinstance(event_seq, int):
        return seq <= event_seq
    when = _time(artifact.get("recorded_at"))
    return recorded is None or (when is not None and when <= recorded)


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def files_for(artifacts: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """``artifacts.json`` always; ``artifact_id`` only when there is exactly one artifact (with several, such
    as an AMI per region, no one of them is "the" id: read artifacts.json)."""
    files = {"artifacts.json": json.dumps(list(artifacts), indent=2, sort_keys=True) + "\n"}
    if len(artifacts) == 1:
        files["artifact_id"] = str(artifacts[0]["external_id"])
    return files


def metadata_of(artifacts: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """``artifact`` pairs (``eu-west-1 ami ami-0abc``), at most ``SHOWN_ARTIFACTS``, then ``artifacts``: the
    count. URLs are shown without what may hold a credential."""
    pairs = [{"name": "artifact", "value": describe(artifact)} for artifact in artifacts[:SHOWN_ARTIFACTS]]
    if artifacts:
        pairs.append({"name": "artifacts", "value": str(len(artifacts))})
    return pairs


def describe(artifact: Mapping[str, Any]) -> str:
    """``eu-west-1 ami ami-0abc`` (no region: ``gcp-image debian-12``)."""
    parts = (artifact.get("region"), artifact.get("kind"), shown_id(str(artifact.get("external_id"))))
    return " ".join(str(part) for part in parts if part)


def shown_id(external_id: str) -> str:
    """An id as the build log and the UI show it: a URL without its user info, query and fragment."""
    try:
        url = urlsplit(external_id)
    except ValueError:
        return external_id
    if not url.scheme or not url.netloc or not (url.query or url.fragment or "@" in url.netloc):
        return external_id
    return urlunsplit((url.scheme, url.netloc.rpartition("@")[2], url.path, "", ""))
