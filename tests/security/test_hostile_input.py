"""Hostile input, on both stores: kept verbatim when it is valid text, refused with a 4xx problem when it is
not, and never a 500 (tests/web/test_api.py has the basic cases: a bad body, one hostile message, a NUL in
a body, a bad X-Request-ID; these go through every field, the path, the query and the limits)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

Client = TestClient[Any, Any]
PROBLEM = "application/problem+json"
BUILD = {"platform": "aws", "os_version": "rhel-8.8", "image_type": "base", "build_id": "b-1"}
SQL = "'; DROP TABLE builds; -- \" OR 1=1 /* */ UNION SELECT * FROM api_keys; \\'"
CONTROL = "".join(chr(c) for c in range(1, 32)) + "\x7f\u2028\u2029\u202e\ufeff\U0001f680 <script>x</script>"


async def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status == status, await response.text()
    assert response.content_type == PROBLEM
    body: dict[str, Any] = await response.json(content_type=None)
    assert body["status"] == status
    return body


async def created(client: Client, **fields: Any) -> dict[str, Any]:
    response = await client.post("/builds", json={**BUILD, **fields})
    assert response.status == 201, await response.text()
    body: dict[str, Any] = await response.json()
    return body


@pytest.mark.parametrize("text", [SQL, CONTROL], ids=["sql", "control-characters"])
async def test_text_in_every_free_field_is_stored_and_returned_verbatim(client: Client, text: str) -> None:
    provenance = {
        "team": text[:200],
        "pipeline": text[:200],
        "job": text[:200],
        "instance_vars": {text: text},
    }
    await created(client, labels={"note": text}, provenance=provenance)
    steps = [
        ("state", {"state_code": 5, "message": text, "provenance": provenance}),
        ("failure", {"error_message": text, "error_code": text[:200], "component": text[:200],
                     "details": {text: [text, {"nested": text}]}}),
        ("reset", {"reason": text}),
    ]  # fmt: skip
    for path, body in steps:
        response = await client.post(f"/builds/b-1/{path}", json=body)
        assert response.status == 200, await response.text()
    history = await (await client.get("/builds/b-1/history")).json()
    created_event, state, failure, reset = history["events"]
    assert history["build"]["labels"] == {"note": text}
    assert created_event["provenance"]["instance_vars"] == {text: text}
    assert (state["message"], state["provenance"]["team"]) == (text, text[:200])
    assert failure["failure"] == {"error_message": text, "error_code": text[:200], "component": text[:200],
                                  "details": {text: [text, {"nested": text}]}}  # fmt: skip
    assert reset["reason"] == text
    # Hostile text in a filter is a value to compare, not SQL: nothing matches, nothing breaks.
    for query in ("build_id", "platform"):
        response = await client.get("/events", params={query: text[:200]})
        assert response.status in {200, 422}, await response.text()
    assert len((await (await client.get("/builds")).json())["builds"]) == 1


# Each documented limit: at the limit is accepted, one past it is a 422 naming the field.
LIMITS = [
    ("build_id", lambda n: {**BUILD, "build_id": "b" * n}, 200, "build_id"),
    ("platform", lambda n: {**BUILD, "platform": "p" * n}, 64, "platform"),
    ("label value", lambda n: {**BUILD, "labels": {"k": "v" * n}}, 1024, "labels.k"),
    ("label count", lambda n: {**BUILD, "labels": {f"k{i}": "v" for i in range(n)}}, 64, "labels"),
    ("provenance job", lambda n: {**BUILD, "provenance": {"job": "j" * n}}, 200, "provenance.job"),
    ("build_url", lambda n: {**BUILD, "provenance": {"build_url": "u" * n}}, 2000, "provenance.build_url"),
]


@pytest.mark.parametrize(("name", "body", "limit", "loc"), LIMITS, ids=[limit[0] for limit in LIMITS])
async def test_create_fields_are_refused_one_past_their_documented_limit(
    client: Client, name: str, body: Any, limit: int, loc: str
) -> None:
    del name
    assert (await client.post("/builds", json=body(limit))).status == 201
    refused = await problem(await client.post("/builds", json=body(limit + 1)), 422)
    assert loc in [error["loc"] for error in refused["errors"]]


@pytest.mark.parametrize(
    ("path", "field", "limit", "extra"),
    [
        ("state", "message", 4000, {"state_code": 5}),
        ("failure", "error_message", 4000, {}),
        ("failure", "error_code", 200, {"error_message": "m"}),
        ("reset", "reason", 2000, {}),
    ],
)
async def test_write_fields_are_refused_one_past_their_documented_limit(
    client: Client, path: str, field: str, limit: int, extra: dict[str, Any]
) -> None:
    await created(client)
    refused = await problem(
        await client.post(f"/builds/b-1/{path}", json={**extra, field: "x" * (limit + 1)}), 422
    )
    assert [error["loc"] for error in refused["errors"]] == [field]
    accepted = await client.post(f"/builds/b-1/{path}", json={**extra, field: "x" * limit})
    assert accepted.status == 200, await accepted.text()


@pytest.mark.parametrize(
    "path",
    ["/builds/a%00b", "/builds/a%00b/history", "/builds/a%00b/state", "/events/1%00",
     "/admin/users/a%00b/disable", "/admin/keys/bs_%00/revoke", "/admin/webhooks/1%00"],
)  # fmt: skip
async def test_a_nul_in_the_path_is_404_never_500(client: Client, path: str) -> None:
    method = client.post if path.endswith(("disable", "revoke")) else client.get
    assert (await problem(await method(path), 404))["type"].endswith("/nul-character")


@pytest.mark.parametrize(
    "query",
    ["/events?build_id=a%00b", "/builds?platform=%00", "/audit?actor=a%00", "/events/stream?type=%00"],
)
async def test_a_nul_in_the_query_is_422_never_500(client: Client, query: str) -> None:
    assert (await problem(await client.get(query), 422))["type"].endswith("/nul-character")


async def test_invalid_utf8_in_the_path_and_query_finds_nothing(client: Client) -> None:
    await created(client)
    await problem(await client.get("/builds/%ff%fe"), 404)
    assert (await (await client.get("/events?build_id=%ff")).json())["events"] == []
    await problem(await client.get("/builds?cursor=%ff"), 400)
    headers = {"Content-Type": "application/json"}
    await problem(
        await client.post("/builds/b-1/reset", data=b'{"reason": "\xc3\x28"}', headers=headers), 400
    )


@pytest.mark.parametrize("number", ["1e999", "-1e999", "NaN", "Infinity", "-Infinity"])
async def test_numbers_json_cannot_carry_are_422(client: Client, number: str) -> None:
    await created(client)
    body = f'{{"error_message": "m", "details": {{"x": [{number}]}}}}'.encode()
    response = await client.post(
        "/builds/b-1/failure", data=body, headers={"Content-Type": "application/json"}
    )
    assert (await problem(response, 422))["type"].endswith("/non-finite-number")
    assert (await (await client.get("/builds/b-1")).json())["status"] == "running"


async def test_huge_but_finite_numbers_round_trip_exactly(client: Client) -> None:
    await created(client)
    raw = '{"big": 1' + "0" * 300 + ', "small": -1.5e308, "precise": 0.1, "neg": -' + "9" * 40 + "}"
    body = f'{{"error_message": "m", "details": {raw}}}'.encode()
    response = await client.post(
        "/builds/b-1/failure", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status == 200, await response.text()
    # Compared as decimal values: PostgreSQL's jsonb keeps -1.5e308 exactly, written out in plain digits.
    exact = {"parse_float": Decimal, "parse_int": Decimal}
    stored = json.loads(await (await client.get("/builds/b-1")).text(), **exact)["failure"]["details"]
    assert stored == json.loads(raw, **exact)
    for query in ("/events?after=" + "9" * 30, "/events?limit=1e3", "/builds?limit=" + "9" * 25):
        await problem(await client.get(query), 422)
    await problem(await client.get("/events/" + "9" * 25), 400)


async def test_deep_and_wide_json_is_refused_or_stored_never_500(client: Client) -> None:
    await created(client)
    headers = {"Content-Type": "application/json"}
    deep = b'{"error_message": "m", "details": {"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    response = await client.post("/builds/b-1/failure", data=deep, headers=headers)
    assert response.status in {400, 422}
    assert response.content_type == PROBLEM
    nested: Any = "leaf"
    for _ in range(15):  # 31 levels with the details object: within models.MAX_JSON_DEPTH
        nested = {"n": [nested]}
    wide = {"error_message": "m", "details": {"nested": nested, "wide": list(range(5_000))}}
    too_wide = {"error_message": "m", "details": {"wide": list(range(50_000))}}
    response = await client.post("/builds/b-1/failure", json=too_wide)
    assert response.status == 422  # tests/security/test_bounded_json.py has the limits
    response = await client.post("/builds/b-1/failure", json=wide)
    assert response.status == 200, await response.text()
    assert (await (await client.get("/builds/b-1")).json())["failure"]["details"] == wide["details"]


async def test_a_form_sign_in_with_a_nul_in_the_username_is_422_never_500(anon_client: Client) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    body = b"grant_type=password&username=a%00b&password=whatever-it-is"
    assert (await anon_client.post("/token", data=body, headers=form)).status == 422


@pytest.mark.parametrize("path", ["/audit", "/admin/webhooks/1/deliveries"])
async def test_cursors_past_64_bits_are_422_never_500(client: Client, path: str) -> None:
    # A database id is a 64-bit integer: PostgreSQL answered a larger "before" with a 500.
    await problem(await client.get(f"{path}?before=" + "9" * 25), 422)
    assert (await client.get(f"{path}?before={2**62}")).status in {200, 404}
