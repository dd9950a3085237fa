"""Free-form JSON (a failure's ``details``, ``provenance.instance_vars``) is bounded in depth, values and
text, and refused before it reaches a store's writer (issue 13, finding 8), on both stores.

One write key sent eight ~1 MB bodies of nested empty arrays at once and held a legitimate write on
SQLite's writer thread for 7.3 s. The timings printed here are measurements, not assertions.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from buildstate.models import MAX_JSON_DEPTH, MAX_JSON_TEXT, MAX_JSON_VALUES

Client = TestClient[Any, Any]
BUILD = {"platform": "aws", "os_version": "rhel-9", "image_type": "base"}
MEGABYTE = 1_000_000


def empty_arrays_body(size: int = MEGABYTE - 2048) -> bytes:
    """A failure whose details hold ~``size`` bytes of empty arrays, some nested a few levels."""
    unit = b"[],[[]],[[[]]],"
    inner = unit * (size // len(unit))
    return b'{"error_message": "boom", "details": {"a": [' + inner.rstrip(b",") + b"]}}"


async def make(client: Client, build_id: str) -> str:
    answer = await client.post("/builds", json={**BUILD, "build_id": build_id})
    assert answer.status == 201
    build_id = (await answer.json())["id"]
    return str(build_id)


async def test_eight_megabyte_bodies_of_empty_arrays_are_refused_and_do_not_hold_a_legitimate_write(
    client: Client,
) -> None:
    victims = [await make(client, f"flood-{n}") for n in range(8)]
    legit = await make(client, "legit")
    body = empty_arrays_body()
    assert MEGABYTE - 4096 < len(body) < 1 << 20  # under the body limit: the parser reads all of it

    async def flood(build: str) -> tuple[int, float]:
        started = time.perf_counter()
        answer = await client.post(
            f"/builds/{build}/failure", data=body, headers={"Content-Type": "application/json"}
        )
        await answer.read()
        return answer.status, time.perf_counter() - started

    async def legitimate() -> tuple[int, float]:
        await asyncio.sleep(0.01)  # while the flood is being read
        started = time.perf_counter()
        answer = await client.post(f"/builds/{legit}/state", json={"state_code": 50})
        return answer.status, time.perf_counter() - started

    started = time.perf_counter()
    *floods, (legit_status, legit_seconds) = await asyncio.gather(*map(flood, victims), legitimate())
    total = time.perf_counter() - started
    print(
        f"8 x {len(body)} B of empty arrays: refused in {max(s for _, s in floods):.3f} s at most; "
        f"the legitimate write took {legit_seconds:.3f} s; all done in {total:.3f} s"
    )
    assert [status for status, _ in floods] == [422] * 8
    assert legit_status == 200
    history = await (await client.get(f"/builds/{legit}/history")).json()
    assert [e["state_code"] for e in history["events"]] == [0, 50]  # committed
    for victim in victims:
        assert (await (await client.get(f"/builds/{victim}")).json())["status"] == "running"


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth - 1):
        value = {"n": value}
    return value


@pytest.mark.parametrize(
    ("details", "accepted"),
    [
        (nested(MAX_JSON_DEPTH), True),
        (nested(MAX_JSON_DEPTH + 1), False),
        ({"wide": list(range(MAX_JSON_VALUES - 2))}, True),  # the object, the list and its items
        ({"wide": list(range(MAX_JSON_VALUES - 1))}, False),
        ({"text": "x" * (MAX_JSON_TEXT - 4)}, True),
        ({"text": "x" * (MAX_JSON_TEXT - 3)}, False),
    ],
)
async def test_details_are_stored_up_to_each_limit_and_refused_past_it(
    client: Client, details: Any, accepted: bool
) -> None:
    build = await make(client, "limits")
    answer = await client.post(f"/builds/{build}/failure", json={"error_message": "m", "details": details})
    if accepted:
        assert answer.status == 200, await answer.text()
        stored = await (await client.get(f"/builds/{build}")).json()
        assert stored["failure"]["details"] == details
    else:
        assert answer.status == 422
        problem = await answer.json()
        assert problem["errors"][0]["loc"] == "details", problem
        assert (await (await client.get(f"/builds/{build}")).json())["status"] == "running"


async def test_instance_vars_are_bounded_like_details(client: Client) -> None:
    build = await make(client, "vars")
    too_deep = {"state_code": 5, "provenance": {"instance_vars": nested(MAX_JSON_DEPTH + 1)}}
    answer = await client.post(f"/builds/{build}/state", json=too_deep)
    assert answer.status == 422
    assert (await answer.json())["errors"][0]["loc"] == "provenance.instance_vars"
    fine = {"state_code": 5, "provenance": {"instance_vars": {"branch": "main", "n": [1, 2]}}}
    assert (await client.post(f"/builds/{build}/state", json=fine)).status == 200
    events = (await (await client.get(f"/builds/{build}/history")).json())["events"]
    assert events[-1]["provenance"]["instance_vars"] == {"branch": "main", "n": [1, 2]}
    assert json.dumps(events[-1]).count("leaf") == 0


def test_the_resource_sends_a_details_file_past_the_limit_as_the_tail_of_its_text(tmp_path: Any) -> None:
    from buildstate_resource.put import DETAILS_TEXT_LIMIT, plan_put

    (tmp_path / "out").mkdir()
    (tmp_path / "out/small.json").write_text(json.dumps({"step": "ansible", "rc": 2}))
    (tmp_path / "out/big.json").write_text(json.dumps({"log": ["line"] * 20_000}))
    for name, expected in (("small", {"step": "ansible", "rc": 2}), ("big", None)):
        params = {"build": "b-1", "failure": {"error_message": "x", "details_file": f"out/{name}.json"}}
        (change,) = plan_put(params, tmp_path)
        details = change.body["details"]
        if expected is not None:
            assert details == expected
        else:
            assert set(details) == {"file", "text"}
            assert len(details["text"]) <= DETAILS_TEXT_LIMIT
