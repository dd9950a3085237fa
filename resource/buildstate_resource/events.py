"""How one buildstate event looks to Concourse: its version, its metadata, the files ``in`` writes.

:func:`version_of` is the only place a version is made. ``check`` and ``out`` both call it, so the
same event always yields byte-identical versions and Concourse's history never holds duplicates.
"""

from collections.abc import Mapping
from typing import Any

from .errors import ApiError
from .numbers import ascii_int

Event = Mapping[str, Any]
# A failure or reset keeps (or resets to) a state code, and a channel move, a revocation or a restore copies
# the build's, so the code alone would hide the event.
_STATE_BY_TYPE = {
    "failure": "failed",
    "reset": "reset",
    "channel": "channel",
    "revoked": "revoked",
    "restored": "restored",
}


def require_event(value: object, where: str) -> Event:
    """``value`` if it holds what versions, metadata and files need; raises otherwise."""
    if isinstance(value, Mapping):
        build = value.get("build")
        if isinstance(build, Mapping) and build.get("id") and build.get("build_id"):
            version_of(value)
            return value
    raise ApiError(f"{where} did not answer with an event: {str(value)[:200]}")


def version_of(event: Event) -> dict[str, str]:
    """``{"seq": "1042", "build": "<build_id>", "state": "75" | "0" | "failed" | "reset" | "revoked" ...}``.

    Short flat strings: readable in ``fly resource-versions`` and decodable by the ATC.
    """
    try:
        seq = int(event["seq"])
        build_id = str(event["build"]["build_id"])
        state = _STATE_BY_TYPE.get(str(event.get("type"))) or str(int(event["state_code"]))
    except (KeyError, TypeError, ValueError) as error:
        raise ApiError(f"the service returned an event without a usable {error}") from None
    return {"seq": str(seq), "build": build_id, "state": state}


def seq_of_version(version: object) -> int | None:
    """The ``seq`` of a version from history, or ``None`` when it has none usable.

    Lenient on purpose: versions come from older history, ``fly check-resource --from seq:N`` or a
    hand-written pin, so a number, padding or missing keys must not fail a check.
    """
    if not isinstance(version, Mapping):
        return None
    raw = version.get("seq")
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw if raw > 0 else None
    if isinstance(raw, str):
        return ascii_int(raw.strip()) or None
    return None


def build_as_of(event: Event) -> dict[str, Any]:
    """The build right after ``event``: the event's build plus the values the event set (api.md)."""
    return {
        **event["build"],
        "state_code": event.get("state_code"),
        "status": event.get("status"),
        "attempt": event.get("attempt"),
        "updated_at": event.get("recorded_at"),
        "last_event_seq": event.get("seq"),
    }


def build_link(base_url: str, event: Event) -> str:
    return f"{base_url}/builds/{event['build']['id']}"


def describe_failure(failure: object) -> str | None:
    if not isinstance(failure, Mapping):
        return None
    parts = [str(failure[key]) for key in ("component", "error_code") if failure.get(key)]
    message = str(failure.get("error_message") or "")
    return ": ".join([*parts, message]) if message else ": ".join(parts) or None


def metadata_of(base_url: str, event: Event) -> list[dict[str, str]]:
    """Name/value pairs shown beside the version in the Concourse UI (empty values left out)."""
    build = event["build"]
    pairs = [
        ("build_id", build.get("build_id")),
        ("platform", build.get("platform")),
        ("os_version", build.get("os_version")),
        ("image_type", build.get("image_type")),
        ("event", event.get("type")),
        ("state", event.get("state_code")),
        ("status", event.get("status")),
        ("attempt", event.get("attempt")),
        ("message", event.get("message")),
        ("failure", describe_failure(event.get("failure"))),
        *_moved(event),
        ("reset_reason" if event.get("type") == "reset" else "reason", event.get("reason")),
        ("recorded_at", event.get("recorded_at")),
        ("url", build_link(base_url, event)),
    ]
    return [{"name": name, "value": str(value)} for name, value in pairs if value not in (None, "")]


def _moved(event: Event) -> list[tuple[str, object]]:
    """What a channel move, a revocation or a restore changed (its ``detail``), by build id."""
    detail = event.get("detail")
    if not isinstance(detail, Mapping):
        return []
    if event.get("type") == "channel":
        return [
            ("channel", detail.get("channel")),
            ("moved_from", detail.get("from_build_id") or "none"),
            ("moved_to", detail.get("to_build_id") or "none"),
            ("cause", detail.get("cause")),
        ]
    if event.get("type") in ("revoked", "restored"):
        inherited = detail.get("inherited")
        shown = None if not isinstance(inherited, bool) else str(inherited).lower()
        return [("revoked_by", detail.get("revoked_by_build_id")), ("inherited", shown)]
    return []
