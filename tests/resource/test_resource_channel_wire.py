"""A channel resource and ``assign_channel`` over the wire (scripted server): what is asked, what is kept.

The flows run against the real service in ``test_resource_channels.py``; here the requests themselves.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import resource_harness as harness
from resource_fake_server import FakeServer, Reply, event, problem

BUCKET = {"platform": "aws", "os_version": "rhel-8.8", "image_type": "base"}
HEAD = "6f1c0000-0000-4000-8000-000000000001"  # the scripted events' build


def move(seq: int, channel: str = "production", cause: str = "assign") -> dict[str, Any]:
    detail = {"channel": channel, "cause": cause, "from_build_id": None, "to_build_id": "rhel-8.8-base-1"}
    return event(seq, 100, type="channel", status="succeeded", detail=detail)


def channel_source(server: FakeServer) -> dict[str, Any]:
    return {"url": server.url, "channel": "production", **BUCKET}


def test_check_reads_the_buckets_moves_and_keeps_this_channels_assignments(fake_server: FakeServer) -> None:
    moves = [move(10), move(11, channel="staging"), move(12, cause="revoked"), move(13)]
    fake_server.queue(Reply(200, {"events": moves, "next_after": 13, "has_more": False}))

    versions = harness.check(channel_source(fake_server), {"seq": "10"}).result()

    assert versions == [
        {"seq": "10", "build": "rhel-8.8-base-1", "state": "channel"},
        {"seq": "13", "build": "rhel-8.8-base-1", "state": "channel"},
    ]
    (request,) = fake_server.requests
    assert (request.path, request.query) == (
        "/events",
        {**BUCKET, "type": "channel", "after": "9", "limit": "1000"},
    )


def test_a_first_check_asks_the_channel_for_its_heads_move(fake_server: FakeServer) -> None:
    channel = {"name": "production", **BUCKET, "head": {"id": HEAD, "build_id": "rhel-8.8-base-1"}}
    history = [{"id": 3, "event_seq": 42, "cause": "assign", "to_build": {"id": HEAD, "build_id": "x"}}]
    fake_server.queue(Reply(200, {"channel": channel, "history": history}), Reply(200, move(42)))

    versions = harness.check(channel_source(fake_server)).result()

    assert versions == [{"seq": "42", "build": "rhel-8.8-base-1", "state": "channel"}]
    lookup, fetch = fake_server.requests
    assert (lookup.path, lookup.query) == ("/channels/production", {**BUCKET, "limit": "1"})
    assert fetch.path == "/events/42"


def test_a_first_check_of_a_channel_without_a_head_or_not_there_yet_is_empty(fake_server: FakeServer) -> None:
    emptied = {"name": "production", **BUCKET, "head": None}
    fake_server.queue(
        Reply(200, {"channel": emptied, "history": [{"id": 4, "event_seq": 43, "cause": "revoked"}]}),
        problem(404, "Not Found", "no channel 'production' of aws/rhel-8.8/base"),
    )

    assert harness.check(channel_source(fake_server)).result() == []
    assert harness.check(channel_source(fake_server)).result() == []
    assert len(fake_server.requests) == 2


def _assign(server: FakeServer, tmp_path: Path, **env: str | None) -> tuple[dict[str, Any], Any]:
    answer = {"channel": {"name": "production"}, "move": {"id": 7, "event_seq": 50}, "replayed": False}
    server.queue(Reply(200, answer), Reply(200, move(50)))
    params = {"build": "rhel-8.8-base-1", "assign_channel": {"reason": "approved"}}
    out = harness.put(channel_source(server), params, tmp_path, env=harness.build_env(**env)).result()
    return out, server.requests[-2]


def test_out_puts_the_assignment_with_the_concourse_builds_key(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    out, sent = _assign(fake_server, tmp_path)

    assert out["version"] == {"seq": "50", "build": "rhel-8.8-base-1", "state": "channel"}
    assert (sent.method, sent.path) == ("PUT", "/channels/production")
    assert json.loads(sent.body) == {"build": "rhel-8.8-base-1", "reason": "approved", **BUCKET}
    assert fake_server.requests[-1].path == "/events/50"
    assert _assign(fake_server, tmp_path)[1].headers["idempotency-key"] == sent.headers["idempotency-key"]
    other = _assign(fake_server, tmp_path, BUILD_ID="4300", BUILD_NAME="21")[1]
    assert other.headers["idempotency-key"] != sent.headers["idempotency-key"]


def test_a_bucket_the_source_lacks_comes_from_the_build(fake_server: FakeServer, tmp_path: Path) -> None:
    build = {**event(1)["build"], "state_code": 100, "status": "succeeded", "attempt": 1}
    answer = {"channel": {"name": "staging"}, "move": {"id": 8, "event_seq": 51}, "replayed": False}
    fake_server.queue(Reply(200, build), Reply(200, answer), Reply(200, move(51, channel="staging")))
    params = {"build": "rhel-8.8-base-1", "assign_channel": {"name": "staging", "reason": "tested"}}

    harness.put({"url": fake_server.url, "platform": "aws"}, params, tmp_path).result()

    lookup, sent, _fetch = fake_server.requests
    assert (lookup.method, lookup.path) == ("GET", "/builds/rhel-8.8-base-1")
    assert json.loads(sent.body) == {"build": "rhel-8.8-base-1", "reason": "tested", **BUCKET}
