// Server-Sent Events over fetch(): a parser that follows the WHATWG rules, and a reader that reconnects.
//
// EventSource cannot send an Authorization header, so the dashboard reads /events/stream with fetch() and a
// ReadableStream and parses the text itself. The parser is deliberately standalone (no DOM, no fetch) so
// tests can feed it chunks split anywhere.

/**
 * Incremental parser for the text/event-stream format.
 *
 * push() takes text in chunks of any size (a line, a CRLF pair or a UTF-8 character may be split across
 * chunks: the caller decodes with a streaming TextDecoder). Each complete event goes to onMessage as
 * {type, data, lastEventId}; comment lines (heartbeats) go to onComment; a valid retry field to onRetry.
 */
export class SseParser {
  constructor({ onMessage = () => {}, onComment = () => {}, onRetry = () => {}, lastEventId = "" } = {}) {
    this.onMessage = onMessage;
    this.onComment = onComment;
    this.onRetry = onRetry;
    this.lastEventId = lastEventId;
    this.pending = "";
    this.data = [];
    this.eventType = "";
    this.started = false;
    this.afterCR = false;
  }

  push(chunk) {
    let text = chunk;
    if (text.length === 0) return; // an empty chunk must not forget a CR that ended the previous one
    if (!this.started) {
      this.started = true;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    if (this.afterCR && text.startsWith("\n")) text = text.slice(1); // the LF of a CRLF split across chunks
    this.afterCR = false;
    const buffer = this.pending + text;
    let start = 0;
    for (let i = 0; i < buffer.length; i += 1) {
      const char = buffer[i];
      if (char !== "\n" && char !== "\r") continue;
      this.line(buffer.slice(start, i));
      if (char === "\r") {
        if (i + 1 === buffer.length) this.afterCR = true;
        else if (buffer[i + 1] === "\n") i += 1;
      }
      start = i + 1;
    }
    this.pending = buffer.slice(start);
  }

  /** The stream ended: an event without its closing blank line is dropped, as the standard says. */
  end() {
    this.pending = "";
    this.data = [];
    this.eventType = "";
    this.afterCR = false;
  }

  line(line) {
    if (line === "") {
      this.dispatch();
      return;
    }
    if (line.startsWith(":")) {
      this.onComment(line.slice(1).replace(/^ /, ""));
      return;
    }
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    switch (field) {
      case "data":
        this.data.push(value);
        break;
      case "event":
        this.eventType = value;
        break;
      case "id":
        if (!value.includes("\0")) this.lastEventId = value;
        break;
      case "retry":
        if (/^[0-9]+$/.test(value)) this.onRetry(Number(value));
        break;
      default:
        break; // unknown fields are ignored
    }
  }

  dispatch() {
    const type = this.eventType || "message";
    this.eventType = "";
    if (this.data.length === 0) return;
    const data = this.data.join("\n");
    this.data = [];
    this.onMessage({ type, data, lastEventId: this.lastEventId });
  }
}

function isEventStream(response) {
  const type = response.headers.get("Content-Type") ?? "";
  return type.split(";")[0].trim().toLowerCase() === "text/event-stream";
}

/**
 * Read an SSE endpoint with fetch() until close(), reconnecting with Last-Event-ID after a drop.
 *
 * Reconnects wait a jittered, doubling delay (from the server's retry: field or initialDelay, up to
 * maxDelay) and start over from the last id seen. A stream silent for longer than idleTimeout (no event,
 * no heartbeat) counts as dropped. A 401 stops for good and calls onUnauthorized; any other 4xx (the
 * endpoint is missing, or this token may not read it) stops with state "unsupported", so the caller can
 * fall back to polling. States: connecting, open, reconnecting, unsupported, closed.
 */
export function openStream(url, options = {}) {
  const {
    headers = () => ({}),
    lastEventId = "",
    onMessage = () => {},
    onComment = () => {},
    onState = () => {},
    onUnauthorized = () => {},
    initialDelay = 1000,
    maxDelay = 30000,
    idleTimeout = 45000,
    fetchImpl = (...args) => fetch(...args),
    random = Math.random,
  } = options;
  let closed = false;
  let controller = null;
  let retryTimer = null;
  let idleTimer = null;
  let failures = 0;
  let baseDelay = initialDelay;
  let last = lastEventId;

  const report = (state, detail) => {
    if (!closed) onState(state, detail);
  };

  const stopIdleWatch = () => clearTimeout(idleTimer);
  const watchIdle = () => {
    stopIdleWatch();
    idleTimer = setTimeout(() => controller?.abort(), idleTimeout);
  };

  function reconnectLater(reason) {
    if (closed) return;
    failures += 1;
    const ceiling = Math.min(maxDelay, baseDelay * 2 ** (failures - 1));
    const delay = Math.round(ceiling / 2 + (random() * ceiling) / 2);
    report("reconnecting", { delay, reason, attempt: failures });
    retryTimer = setTimeout(connect, delay);
  }

  async function connect() {
    if (closed) return;
    controller = new AbortController();
    const requestHeaders = { Accept: "text/event-stream", "Cache-Control": "no-cache", ...headers() };
    if (last !== "") requestHeaders["Last-Event-ID"] = last;
    report(failures === 0 ? "connecting" : "reconnecting", { attempt: failures });
    let response;
    try {
      watchIdle();
      response = await fetchImpl(url, { headers: requestHeaders, signal: controller.signal, cache: "no-store" });
    } catch (error) {
      stopIdleWatch();
      reconnectLater(String(error?.message ?? error));
      return;
    }
    if (closed) {
      response.body?.cancel().catch(() => {});
      return;
    }
    if (response.status === 401) {
      stopIdleWatch();
      response.body?.cancel().catch(() => {});
      report("closed", { status: 401 });
      closed = true;
      onUnauthorized();
      return;
    }
    const retryable = response.status === 408 || response.status === 429 || response.status >= 500;
    if (!response.ok && !retryable) {
      stopIdleWatch();
      response.body?.cancel().catch(() => {});
      report("unsupported", { status: response.status });
      closed = true;
      return;
    }
    if (!response.ok || !isEventStream(response) || !response.body) {
      stopIdleWatch();
      response.body?.cancel().catch(() => {});
      reconnectLater(`HTTP ${response.status}`);
      return;
    }
    failures = 0;
    report("open", { status: response.status });
    const parser = new SseParser({
      lastEventId: last,
      onMessage: (message) => {
        last = message.lastEventId;
        if (!closed) onMessage(message);
      },
      onComment,
      onRetry: (ms) => {
        baseDelay = Math.max(100, ms);
      },
    });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let reason = "the stream ended";
    try {
      for (;;) {
        watchIdle();
        const { value, done } = await reader.read();
        if (done || closed) break;
        parser.push(value);
      }
    } catch (error) {
      reason = controller.signal.aborted ? "no data or heartbeat in time" : String(error?.message ?? error);
    } finally {
      stopIdleWatch();
    }
    last = parser.lastEventId;
    parser.end();
    reconnectLater(reason);
  }

  connect();
  return {
    close() {
      if (closed) return;
      onState("closed", {});
      closed = true;
      clearTimeout(retryTimer);
      stopIdleWatch();
      controller?.abort();
    },
    get lastEventId() {
      return last;
    },
  };
}
