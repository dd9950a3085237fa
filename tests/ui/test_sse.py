"""The dashboard's SSE reader (static/js/sse.js), run in the browser it is written for.

The parser gets the standard's edge cases and every way a chunk boundary can fall. The reconnecting reader
gets a scripted fetch() (no network), so the tests can see each request's headers and timing: resuming
with Last-Event-ID, backing off, stopping on 401, giving up on a missing endpoint, dropping a silent one.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from playwright.sync_api import Page
from ui_harness import Service

pytestmark = pytest.mark.slow  # a real server and a real browser

PARSE = """async ({chunks, end}) => {
  const { SseParser } = await import("/ui/static/js/sse.js");
  const out = [];
  const parser = new SseParser({
    onMessage: (m) => out.push(["message", m.type, m.data, m.lastEventId]),
    onComment: (text) => out.push(["comment", text]),
    onRetry: (ms) => out.push(["retry", ms]),
  });
  for (const chunk of chunks) parser.push(chunk);
  if (end) parser.end();
  return out;
}"""

EVERY_SPLIT = """async (text) => {
  const { SseParser } = await import("/ui/static/js/sse.js");
  const run = (chunks) => {
    const out = [];
    const parser = new SseParser({ onMessage: (m) => out.push([m.type, m.data, m.lastEventId]) });
    for (const chunk of chunks) parser.push(chunk);
    return JSON.stringify(out);
  };
  const whole = run([text]);
  const bad = [];
  for (let i = 0; i <= text.length; i += 1) {
    for (let j = i; j <= text.length; j += 1) {
      if (run([text.slice(0, i), text.slice(i, j), text.slice(j)]) !== whole) bad.push([i, j]);
    }
  }
  if (run([...text]) !== whole) bad.push("one character at a time");
  return { whole: JSON.parse(whole), bad };
}"""

# A scripted fetch(): step i answers request i (the last step repeats). A step is {status, type, chunks,
# open (keep the body open after the chunks), every: [ms, text] (send text every ms while open), error}.
STREAM = """async ({ script, options, want, settle }) => {
  const { openStream } = await import("/ui/static/js/sse.js");
  const requests = [], messages = [], states = [];
  let unauthorized = 0;
  const encoder = new TextEncoder();
  const started = performance.now();
  const fetchImpl = (url, init) => {
    const step = script[Math.min(requests.length, script.length - 1)];
    requests.push({ url, at: performance.now() - started, headers: init.headers });
    if (step.error) return Promise.reject(new TypeError(step.error));
    let timer = null;
    const body = new ReadableStream({
      start(controller) {
        init.signal.addEventListener("abort", () => {
          clearInterval(timer);
          try { controller.error(new DOMException("aborted", "AbortError")); } catch {}
        });
        for (const chunk of step.chunks ?? []) controller.enqueue(encoder.encode(chunk));
        const beat = () => controller.enqueue(encoder.encode(step.every[1]));
        if (step.every) timer = setInterval(beat, step.every[0]);
        if (!step.open && !step.every) controller.close();
      },
    });
    const headers = { "Content-Type": step.type ?? "text/event-stream" };
    return Promise.resolve(new Response(body, { status: step.status ?? 200, headers }));
  };
  const stream = openStream("/events/stream?after=5", {
    fetchImpl,
    headers: () => ({ Authorization: "Bearer t0k3n" }),
    onMessage: (m) => messages.push([m.type, m.data, m.lastEventId]),
    onState: (state) => states.push(state),
    onUnauthorized: () => { unauthorized += 1; },
    random: () => 1,
    ...options,
  });
  const deadline = performance.now() + 3000;
  while (requests.length < want && performance.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  await new Promise((r) => setTimeout(r, settle));
  stream.close();
  return { requests, messages, states, unauthorized, lastEventId: stream.lastEventId };
}"""


@pytest.fixture
def js(page: Page, service: Service) -> Page:
    page.goto("/health")  # any page of the service's origin can import the dashboard's modules
    return page


def parse(page: Page, *chunks: str, end: bool = False) -> list[list[Any]]:
    result: list[list[Any]] = page.evaluate(PARSE, {"chunks": list(chunks), "end": end})
    return result


def stream(page: Page, script: list[dict[str, Any]], want: int, settle: int = 50, **options: Any) -> Any:
    return page.evaluate(STREAM, {"script": script, "options": options, "want": want, "settle": settle})


def event(seq: int, kind: str = "state") -> str:
    return f"id: {seq}\nevent: {kind}\ndata: {json.dumps({'seq': seq, 'type': kind})}\n\n"


def test_fields_make_events_with_type_data_and_id(js: Page) -> None:
    text = 'id: 7\nevent: state\ndata: {"seq": 7}\n\n' + "data: first\ndata: second\n\n"
    assert parse(js, text) == [
        ["message", "state", '{"seq": 7}', "7"],
        ["message", "message", "first\nsecond", "7"],  # no event field: "message"; the id carries over
    ]


def test_every_chunk_boundary_gives_the_same_events(js: Page) -> None:
    text = (
        ': hi\r\nid: 41\r\nevent: state\r\ndata: {"a": "é€😀"}\r\n\r\n'
        "id: 42\revent: reset\rdata: x\r\rdata: y\n\n"
    )
    result = js.evaluate(EVERY_SPLIT, text)
    assert result["bad"] == []
    assert result["whole"] == [["state", '{"a": "é€😀"}', "41"], ["reset", "x", "42"], ["message", "y", "42"]]


def test_line_endings_lf_cr_and_crlf_are_all_one_line_end(js: Page) -> None:
    expected = [["message", "message", "a", ""], ["message", "message", "b", ""]]
    assert parse(js, "data: a\n\ndata: b\n\n") == expected
    assert parse(js, "data: a\r\rdata: b\r\r") == expected
    assert parse(js, "data: a\r\n\r\ndata: b\r\n\r\n") == expected
    assert parse(js, "data: a\r", "\n\r", "\ndata: b\r\n", "\r\n") == expected  # CRLF split across chunks


def test_comments_retry_and_unknown_fields(js: Page) -> None:
    assert parse(js, ": ping\n", "retry: 2500\nretry: 2s\nfoo: bar\ndata\ndata:\n\n") == [
        ["comment", "ping"],
        ["retry", 2500],  # "2s" is not a number of milliseconds: ignored
        ["message", "message", "\n", ""],  # "data" with and without a colon: two empty lines
    ]


def test_value_spacing_and_ids(js: Page) -> None:
    assert parse(js, "data:no space\n\ndata:  two spaces\n\nid: 5\n\nid: bad\u0000id\ndata: z\n\n") == [
        ["message", "message", "no space", ""],
        ["message", "message", " two spaces", ""],  # only the first space after the colon is dropped
        ["message", "message", "z", "5"],  # an id alone updates the last id; one with NUL is ignored
    ]


def test_an_event_without_its_blank_line_is_dropped_when_the_stream_ends(js: Page) -> None:
    assert parse(js, "data: complete\n\ndata: incomplete\n", end=True) == [
        ["message", "message", "complete", ""]
    ]
    assert parse(js, "\ufeffdata: after a byte order mark\n\n") == [
        ["message", "message", "after a byte order mark", ""]
    ]


def test_the_reader_resumes_with_last_event_id_after_the_stream_ends(js: Page) -> None:
    script = [
        {"chunks": [event(7), event(8, "failure")]},
        {"chunks": [event(9, "reset")]},
        {"open": True},
    ]
    result = stream(js, script, want=3, initialDelay=20)
    first, second, third = result["requests"]
    assert first["url"] == "/events/stream?after=5"
    assert first["headers"]["Accept"] == "text/event-stream"
    assert first["headers"]["Authorization"] == "Bearer t0k3n"
    assert "Last-Event-ID" not in first["headers"]
    assert second["headers"]["Last-Event-ID"] == "8"
    assert third["headers"]["Last-Event-ID"] == "9"
    assert [m[0] for m in result["messages"]] == ["state", "failure", "reset"]
    assert json.loads(result["messages"][1][1]) == {"seq": 8, "type": "failure"}
    assert result["lastEventId"] == "9"
    assert result["states"][:3] == ["connecting", "open", "reconnecting"]


def test_the_reader_backs_off_doubling_and_starts_over_after_a_success(js: Page) -> None:
    script = [
        {"status": 503},
        {"status": 503},
        {"error": "connection refused"},
        {"chunks": [event(1)]},  # a good connection resets the delay...
        {"status": 502},
        {"open": True},
    ]
    result = stream(js, script, want=6, initialDelay=40, maxDelay=1000)
    times = [r["at"] for r in result["requests"]]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    expected = [40, 80, 160, 40, 80]  # ...so the stream's end waits 40 ms again, then doubles
    assert len(gaps) == len(expected)
    for gap, wanted in zip(gaps, expected, strict=True):
        assert wanted - 5 <= gap < wanted + 120, (gaps, expected)


def test_the_server_retry_field_sets_the_reconnect_delay(js: Page) -> None:
    result = stream(js, [{"chunks": ["retry: 300\n\n", event(1)]}, {"open": True}], want=2, initialDelay=10)
    first, second = result["requests"]
    assert second["at"] - first["at"] >= 290


def test_a_401_stops_the_reader_and_reports_it(js: Page) -> None:
    result = stream(js, [{"status": 401}], want=1, settle=300, initialDelay=10)
    assert len(result["requests"]) == 1
    assert result["unauthorized"] == 1
    assert result["states"] == ["connecting", "closed"]


def test_a_missing_endpoint_is_reported_as_unsupported_without_retrying(js: Page) -> None:
    result = stream(js, [{"status": 404}], want=1, settle=300, initialDelay=10)
    assert len(result["requests"]) == 1
    assert result["states"] == ["connecting", "unsupported"]


def test_an_answer_that_is_not_an_event_stream_is_retried(js: Page) -> None:
    script = [{"type": "application/json", "chunks": ["{}"]}, {"open": True}]
    result = stream(js, script, want=2, initialDelay=10)
    assert len(result["requests"]) == 2
    assert result["messages"] == []


def test_a_silent_stream_is_dropped_and_resumed_but_heartbeats_keep_it(js: Page) -> None:
    silent = stream(
        js, [{"chunks": [event(3)], "open": True}, {"open": True}], want=2, idleTimeout=150, initialDelay=20
    )
    assert len(silent["requests"]) == 2
    assert silent["requests"][1]["headers"]["Last-Event-ID"] == "3"

    beating = stream(js, [{"every": [40, ": ping\n"]}], want=2, settle=600, idleTimeout=150)
    assert len(beating["requests"]) == 1
    assert beating["states"] == ["connecting", "open", "closed"]
