"""``source`` and ``params``: what a pipeline may write, checked before any request is sent.

Unknown keys are errors (a typo such as ``plaform`` would otherwise silently widen a filter), and
the message lists the allowed keys. The ``*_KEYS`` tuples are the single list of what is allowed:
the pipeline tests import them, so documentation, pipelines and code cannot drift apart.
``version`` is the exception: it may come from older history, so it is read leniently elsewhere.
"""

import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from . import log
from .errors import ConfigError
from .numbers import ascii_int

SOURCE_KEYS = (
    "url",
    "api_key",
    "platform",
    "os_version",
    "image_type",
    "build_id",
    "states",
    "event_types",
    "channel",
    "ca_certs",
    "timeout",
    "debug",
    "retry_seconds",
)
FILTER_KEYS = ("platform", "os_version", "image_type", "build_id")
# A channel is a name within one bucket, so a channel resource names all three.
BUCKET_KEYS = ("platform", "os_version", "image_type")
GET_PARAMS_KEYS: tuple[str, ...] = ()
PUT_PARAMS_KEYS = (
    "create",
    "build",
    "build_file",
    "state",
    "message",
    "message_file",
    "failure",
    "reset",
    "artifacts",
    "artifacts_file",
    "assign_channel",
)
ASSIGN_CHANNEL_KEYS = ("name", "reason", "reason_file")
ARTIFACT_KEYS = ("platform", "region", "kind", "external_id", "labels")
CREATE_KEYS = ("platform", "os_version", "image_type", "build_id", "build_id_file", "labels")
FAILURE_FIELDS = ("error_message", "error_code", "component", "details")
FAILURE_KEYS = tuple(key for field in FAILURE_FIELDS for key in (field, f"{field}_file"))
RESET_KEYS = ("reason", "reason_file")

STATE_NAMES = ("failed", "succeeded", "reset", "channel", "revoked", "restored")
EVENT_TYPES = ("created", "state", "failure", "reset", "artifact", "channel", "revoked", "restored")
# The service's rule for every name (a slug), channel names included.
_SLUG = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
DEFAULT_TIMEOUT_SECONDS = 15.0
DEFAULT_RETRY_SECONDS = 50.0


@dataclass(frozen=True)
class Source:
    url: str
    api_key: str | None = None
    filters: tuple[tuple[str, str], ...] = ()
    states: tuple[str, ...] = ()
    event_types: tuple[str, ...] = ()
    # A channel resource: its versions are that channel's assignments (``check.py``).
    channel: str | None = None
    ca_certs: tuple[str, ...] = ()
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    debug: bool = False
    retry_seconds: float = DEFAULT_RETRY_SECONDS

    def event_filters(self) -> dict[str, str]:
        """The ``GET /events`` query parameters that make the server do the filtering."""
        query = dict(self.filters)
        if self.states:
            query["states"] = ",".join(self.states)
        if self.event_types:
            query["type"] = ",".join(self.event_types)
        return query

    def bucket(self) -> dict[str, str]:
        """The source's platform, OS version and image type, those it names."""
        given = dict(self.filters)
        return {key: given[key] for key in BUCKET_KEYS if key in given}


def reject_unknown_keys(given: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(str(key) for key in given if key not in allowed)
    if not unknown:
        return
    allowed_text = ", ".join(sorted(allowed)) if allowed else "none"
    hint = ""
    if len(unknown) == 1:
        import difflib  # noqa: PLC0415 - only on the error path

        close = difflib.get_close_matches(unknown[0], allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
    names = ", ".join(repr(key) for key in unknown)
    plural = "s" if len(unknown) > 1 else ""
    raise ConfigError(f"unknown key{plural} {names} in {where}{hint}; allowed keys: {allowed_text}")


def require_mapping(value: object, where: str, *, allow_missing: bool = False) -> Mapping[str, Any]:
    if value is None and allow_missing:
        return {}
    if not isinstance(value, Mapping):
        shown = "null" if value is None else type(value).__name__
        raise ConfigError(f"{where} must be a mapping, got {shown}")
    return value


def string(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where} must be a non-empty string (quote numbers in YAML), got {value!r}")
    return value.strip()


def optional_string(mapping: Mapping[str, Any], key: str, where: str) -> str | None:
    value = mapping.get(key)
    return None if value is None else string(value, f"{where}.{key}")


def state_code(value: object, where: str) -> int:
    if isinstance(value, str) and ascii_int(value.strip(), max_digits=3) is not None:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100 or value % 5:
        raise ConfigError(f"{where} must be a state code 0..100 in steps of 5, got {value!r}")
    return value


def parse_source(raw: object) -> Source:
    if raw is None:
        raise ConfigError(
            "source is empty: the resource needs at least `url` (e.g. source: {url: https://buildstate.example.com})"
        )
    source = require_mapping(raw, "source")
    api_key = _api_key(source.get("api_key"))
    reject_unknown_keys(source, SOURCE_KEYS, "source")
    if "url" not in source:
        raise ConfigError(
            "source.url is required (the buildstate service, e.g. https://buildstate.example.com)"
        )
    url = string(source["url"], "source.url").rstrip("/")
    _register_url_credentials(url)
    try:
        parts = urlsplit(url)
    except ValueError as error:  # e.g. an unclosed IPv6 bracket
        raise ConfigError(f"source.url is not a URL ({error}), got {url!r}") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"source.url must be an http:// or https:// URL, got {url!r}")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            f"source.url may not hold a user or password (got {url!r}): put the API key in source.api_key"
        )
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ConfigError(
            f"source.url is the service's base URL, without a query or fragment (got {url!r}): "
            "put the API key in source.api_key"
        )
    filters = tuple(
        (key, string(source[key], f"source.{key}")) for key in FILTER_KEYS if source.get(key) is not None
    )
    return Source(
        url=url,
        api_key=api_key,
        filters=filters,
        states=_states(source.get("states")),
        event_types=_event_types(source.get("event_types")),
        channel=_channel(source, filters),
        ca_certs=_ca_certs(source.get("ca_certs")),
        timeout=_seconds(source.get("timeout"), "source.timeout", DEFAULT_TIMEOUT_SECONDS, minimum=0.1),
        debug=_flag(source.get("debug"), "source.debug"),
        retry_seconds=_seconds(
            source.get("retry_seconds"), "source.retry_seconds", DEFAULT_RETRY_SECONDS, minimum=0.0
        ),
    )


def _api_key(value: object) -> str | None:
    """The key, registered for redaction before anything can echo it (never shown in errors)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError("source.api_key must be a non-empty string (quote it in YAML)")
    log.add_secret(value)
    log.add_secret(value.strip())
    return value.strip()


# A user part or a query value shorter than this ("ci", "v=1") is not hidden: it would blank ordinary words.
MIN_SECRET_LENGTH = 4
_USERINFO = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://(?P<userinfo>[^/?#]*)@")


def _register_url_credentials(url: str) -> None:
    """What may be a credential in ``source.url`` (the userinfo, a user part alone included, as in
    ``https://TOKEN@host``, every query value and the fragment) is a secret like the API key: redacted
    from every line before any line can show the URL (read without ``urlsplit``, which may refuse the URL
    before saying why)."""
    match = _USERINFO.match(url)
    userinfo = match["userinfo"] if match is not None else ""
    user, _, password = userinfo.partition(":")
    query = url.partition("?")[2].partition("#")[0]
    values = [part.partition("=")[2] or part for part in query.split("&")] + [url.partition("#")[2]]
    for secret in (password, *(piece for piece in (user, *values) if len(piece) >= MIN_SECRET_LENGTH)):
        log.add_secret(secret)
        log.add_secret(unquote(secret))


def _as_list(value: object) -> list[object]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _states(value: object) -> tuple[str, ...]:
    states: list[str] = []
    for item in _as_list(value):
        if isinstance(item, str) and item.strip().lower() in STATE_NAMES:
            states.append(item.strip().lower())
        else:
            try:
                states.append(str(state_code(item, "source.states")))
            except ConfigError:
                raise ConfigError(
                    f"source.states entries must be state codes 0..100 in steps of 5 or one of "
                    f"{', '.join(STATE_NAMES)}; got {item!r}"
                ) from None
    return tuple(dict.fromkeys(states))


def channel_name(value: object, where: str) -> str:
    name = string(value, where)
    if _SLUG.fullmatch(name) is None:
        raise ConfigError(
            f"{where} must be a channel name: 1 to 64 lower-case letters, digits, '.', '_' and '-', "
            f"starting with a letter or a digit; got {name!r}"
        )
    return name


def _channel(source: Mapping[str, Any], filters: tuple[tuple[str, str], ...]) -> str | None:
    """``source.channel``: a name within one bucket, whose versions are its moves, so the other filters,
    which pick events of any kind, do not go with it."""
    if source.get("channel") is None:
        return None
    name = channel_name(source["channel"], "source.channel")
    missing = [key for key in BUCKET_KEYS if key not in dict(filters)]
    if missing:
        raise ConfigError(
            f"source.channel {name!r} needs source.{', source.'.join(missing)}: a channel is a name within "
            "one platform x os_version x image_type"
        )
    clashing = [key for key in ("states", "event_types", "build_id") if source.get(key) is not None]
    if clashing:
        raise ConfigError(
            "source.channel makes the versions the channel's assignments; drop "
            f"source.{', source.'.join(clashing)} (a resource with states: [revoked] watches revocations)"
        )
    return name


def _event_types(value: object) -> tuple[str, ...]:
    types: list[str] = []
    for item in _as_list(value):
        if not isinstance(item, str) or item.strip().lower() not in EVENT_TYPES:
            raise ConfigError(
                f"source.event_types entries must be one of {', '.join(EVENT_TYPES)}; got {item!r}"
            )
        types.append(item.strip().lower())
    return tuple(dict.fromkeys(types))


def _ca_certs(value: object) -> tuple[str, ...]:
    certs = []
    for item in _as_list(value):
        if not isinstance(item, str) or "-----BEGIN CERTIFICATE-----" not in item:
            raise ConfigError(
                "source.ca_certs must be a list of PEM certificates (-----BEGIN CERTIFICATE-----)"
            )
        certs.append(item)
    return tuple(certs)


def _seconds(value: object, where: str, default: float, *, minimum: float) -> float:
    if value is None:
        return default
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise ConfigError(f"{where} must be a number of seconds >= {minimum:g}, got {value!r}")
    return float(value)


def _flag(value: object, where: str) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ConfigError(f"{where} must be true or false, got {value!r}")
