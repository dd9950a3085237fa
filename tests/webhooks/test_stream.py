"""``GET /events/stream``: Server-Sent Events that resume with Last-Event-ID, on both stores."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from tests.conftest import make_settings

from buildstate.config import Settings

Client = TestClient[Any, Any]
BUILD = {"platform": "aws", "os_version": "rhel-9", "image_type": "base", "build_id": "live-1"}


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    # Quick heartbeats so a test can see one; the SQLite poll stays at its default.
    return make_settings(database_url, tmp_path, stream_heartbeat_seconds=0.3)


async def read_events(response: Any, count: int, seconds: float = 10) -> list[dict[str, str]]:
    """Parse SSE messages until ``count`` events arrived; comments (heartbeats) are counted apart."""
    events: list[dict[str, str]] = []
    current: dict[str, str] = {}

    async def pump() -> None:
        nonlocal current
        while len(events) < count:
            line = (await response.content.readline()).decode().rstrip("\r\n")
            if line == "":
                if current:
                    events.append(current)
                    current = {}
                continue
            if line.startswith(":"):
                events_comments.append(line)
                continue
            name, _, value = line.partition(":")
            current[name] = value.removeprefix(" ")

    events_comments: list[str] = []
    await asyncio.wait_for(pump(), seconds)
    return events


async def post_state(client: Client, code: int) -> None:
    response = await client.post("/builds/live-1/state", json={"state_code": code})
    assert response.status == 200


async def test_stream_resumes_with_last_event_id_without_gap_or_duplicate(client: Client) -> None:
    assert (await client.post("/builds", json=BUILD)).status == 201
    first = await client.get("/events/stream?after=0", headers={"Accept": "text/event-stream"})
    assert first.status == 200
    assert first.headers["Content-Type"].startswith("text/event-stream")
    seen = await read_events(first, 1)
    await post_state(client, 10)
    await post_state(client, 20)
    seen += await read_events(first, 2)
    first.close()  # the dashboard's laptop goes to sleep...

    for code in (30, 40, 50):  # ...while the build moves on
        await post_state(client, code)
    again = await client.get("/events/stream", headers={"Last-Event-ID": seen[-1]["id"]})
    seen += await read_events(again, 3)
    await post_state(client, 60)
    seen += await read_events(again, 1)
    again.close()

    feed = await (await client.get("/events?build_id=live-1")).json()
    assert [int(e["id"]) for e in seen] == [e["seq"] for e in feed["events"]]
    assert [e["event"] for e in seen] == ["created"] + ["state"] * 6
    import json

    assert [json.loads(e["data"])["state_code"] for e in seen] == [0, 10, 20, 30, 40, 50, 60]


async def test_stream_without_a_cursor_starts_at_now_and_applies_filters(client: Client) -> None:
    assert (await client.post("/builds", json=BUILD)).status == 201
    await post_state(client, 10)
    stream = await client.get("/events/stream?states=100,failed")
    await post_state(client, 50)  # filtered out
    await post_state(client, 100)
    [event] = await read_events(stream, 1)
    assert event["event"] == "state"
    assert '"state_code":100' in event["data"]
    stream.close()


async def test_stream_sends_heartbeats_and_needs_read_access(client: Client, anon_client: Client) -> None:
    stream = await client.get("/events/stream")
    raw = await asyncio.wait_for(stream.content.readuntil(b"\r\n\r\n"), 5)
    assert raw.startswith(b": ping")
    stream.close()
    refused = await anon_client.get("/events/stream")
    assert refused.status == 401
    assert refused.content_type == "application/problem+json"
    bad = await client.get("/events/stream", headers={"Last-Event-ID": "yesterday"})
    assert bad.status == 400
