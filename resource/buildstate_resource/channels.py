"""A channel resource (``source.channel``) and ``put``'s ``assign_channel``.

A channel is a name within one bucket (platform x os_version x image_type) pointing at the build to use
(docs/api.md, "Channels"). Each move is a ``channel`` event in the feed, so the resource's versions are
the channel's **assignments**: the feed's ``channel`` events of the bucket whose ``detail`` names this
channel with ``cause: assign``, formatted by ``events.version_of`` like every other event. A move to no
head (a revocation emptied the channel) is not a version: there is nothing to fetch or deploy, and the
revocation itself is a ``states: [revoked]`` resource's version.
"""

from collections.abc import Mapping

from .client import Client, path_for
from .config import Source
from .errors import ApiError
from .events import Event, require_event


def feed_filters(source: Source) -> dict[str, str]:
    """The ``GET /events`` query of a channel resource: the bucket's channel moves (of every channel name;
    the feed cannot filter on ``detail``, and moves are few: people and pipelines make them)."""
    return {**source.bucket(), "type": "channel"}


def is_assignment(event: Event, name: str) -> bool:
    detail = event.get("detail")
    return (
        event.get("type") == "channel"
        and isinstance(detail, Mapping)
        and detail.get("channel") == name
        and detail.get("cause") == "assign"
    )


def head_event(client: Client, name: str, bucket: Mapping[str, str]) -> Event | None:
    """The event of the assignment that made the current head of channel ``name`` of ``bucket``; None
    without a head (never assigned, or emptied by a revocation)."""
    query: dict[str, str | int] = {**bucket, "limit": 1}
    try:
        answer = client.get(path_for("channels", name), query)
    except ApiError as error:
        if error.status == 404:  # no such channel in this bucket (yet)
            return None
        raise
    channel = answer.get("channel") if isinstance(answer, Mapping) else None
    history = answer.get("history") if isinstance(answer, Mapping) else None
    if not isinstance(channel, Mapping) or not isinstance(history, list):
        raise ApiError(f"GET /channels/{name} did not answer with a channel and its history")
    head = channel.get("head")
    if not isinstance(head, Mapping):
        return None
    # The newest move made the head (a move to no head would have left none).
    latest = history[0] if history else None
    to_build = latest.get("to_build") if isinstance(latest, Mapping) else None
    if (
        not isinstance(latest, Mapping)
        or not isinstance(latest.get("event_seq"), int)
        or not isinstance(to_build, Mapping)
        or to_build.get("id") != head.get("id")
    ):
        raise ApiError(f"GET /channels/{name} named a head without the move that made it")
    return event_at(client, int(latest["event_seq"]))


def event_at(client: Client, seq: int) -> Event:
    return require_event(client.get(path_for("events", seq)), f"GET /events/{seq}")


def assignment_event(client: Client, response: object, name: str, bucket: Mapping[str, str]) -> Event:
    """The event of what ``PUT /channels/{name}`` answered: its move's, or on a replay (the build was the
    head already) the move that made it the head."""
    move = response.get("move") if isinstance(response, Mapping) else None
    if isinstance(move, Mapping) and isinstance(move.get("event_seq"), int):
        return event_at(client, int(move["event_seq"]))
    if isinstance(response, Mapping) and response.get("replayed") is True:
        head = head_event(client, name, bucket)
        if head is not None:
            return head
    raise ApiError(f"PUT /channels/{name} did not answer with the move it made: {str(response)[:200]}")
