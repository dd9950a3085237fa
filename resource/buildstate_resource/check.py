"""``check``: the versions Concourse has not seen yet, oldest first.

- No version (the first check): only the newest matching event, or ``[]``.
- A version with a ``seq``: that event and every newer matching event, paged to the end with no
  cap, so ``version: every`` sees them all. If nothing at or after that ``seq`` matches (a reset
  store, a hand-written ``--from``), fall back to the newest event rather than failing.
- A version without a usable ``seq`` (partial or malformed history): the newest event.
- A channel resource (``source.channel``, ``channels.py``): the same over the channel's assignments; the
  newest one is the move that made the current head (``GET /channels/{name}``), none when it has no head.

The filtering (platform, states, types, ...) is done by the service in the same indexed query, so
the answer is deterministic for a given store.
"""

from collections.abc import Mapping
from typing import Any

from . import channels, log
from .client import Client
from .config import parse_source
from .errors import ApiError
from .events import seq_of_version, version_of
from .protocol import run

PAGE_LIMIT = 1000


def check(request: Mapping[str, Any], _args: list[str]) -> list[dict[str, str]]:
    source = parse_source(request.get("source"))
    log.set_debug(source.debug)
    client = Client(source)
    channel = source.channel
    filters = channels.feed_filters(source) if channel else source.event_filters()
    version = request.get("version")
    seq = seq_of_version(version)
    if seq is not None:
        events = events_from(client, filters, seq)
        if channel:
            events = [event for event in events if channels.is_assignment(event, channel)]
        if events:
            return [version_of(event) for event in events]
        log.info(f"no matching event at or after seq {seq}; starting again from the newest event")
    elif version is not None:
        log.info("the given version has no usable 'seq'; returning the newest event")
    if channel:
        head = channels.head_event(client, channel, source.bucket())
        return [] if head is None else [version_of(head)]
    page = client.get("/events", {**filters, "order": "desc", "limit": 1})
    return [version_of(event) for event in _events(page)[:1]]


def events_from(client: Client, filters: Mapping[str, str], seq: int) -> list[Mapping[str, Any]]:
    """Every matching event with ``seq`` at or above ``seq``, oldest first, across all pages."""
    after = seq - 1
    events: list[Mapping[str, Any]] = []
    while True:
        page = client.get("/events", {**filters, "after": after, "limit": PAGE_LIMIT})
        events.extend(_events(page))
        if not page.get("has_more"):
            return events
        next_after = page.get("next_after")
        if isinstance(next_after, bool) or not isinstance(next_after, int) or next_after <= after:
            raise ApiError(f"the event feed did not advance past seq {after} (next_after={next_after!r})")
        after = next_after


def _events(page: object) -> list[Mapping[str, Any]]:
    if not isinstance(page, Mapping) or not isinstance(page.get("events"), list):
        raise ApiError("GET /events answered without an 'events' list")
    events: list[Mapping[str, Any]] = page["events"]
    return events


def main() -> None:
    run("check", check)
