// The live feed every page listens to: GET /events/stream, or polling GET /events where there is none.
//
// Events arrive in seq order and each is handed on once (a reconnect that replays one is ignored here),
// so the pages can apply them blindly. The feed starts after the newest seq the caller has seen; a page
// that fetched that seq before loading its data misses nothing and at worst sees an event twice, which
// pages ignore by comparing with the build's last_event_seq.

import { api, authHeaders, unauthorized } from "./api.js";
import { openStream } from "./sse.js";

const POLL_MS = 3000;
const POLL_MAX_MS = 30000;

export class LiveFeed {
  constructor({ onEvent, onState }) {
    this.onEvent = onEvent;
    this.onState = onState;
    this.lastSeq = 0;
    this.stream = null;
    this.pollTimer = null;
    this.running = false;
    this.mode = "off";
  }

  /** Start after `seq` (events with a larger seq are delivered). Restarting is cheap. */
  start(seq) {
    this.stop();
    this.running = true;
    this.lastSeq = Math.max(0, seq | 0);
    this.stream = openStream(`/events/stream?after=${this.lastSeq}`, {
      headers: authHeaders,
      lastEventId: "",
      onMessage: (message) => this.receive(message),
      onUnauthorized: () => {
        this.stop();
        unauthorized();
      },
      onState: (state, detail) => {
        if (state === "unsupported") {
          this.stream = null;
          this.poll(POLL_MS);
          return;
        }
        if (state !== "closed") this.state(state === "open" ? "live" : state, detail);
      },
    });
  }

  stop() {
    this.running = false;
    this.stream?.close();
    this.stream = null;
    clearTimeout(this.pollTimer);
    this.state("off");
  }

  state(mode, detail = {}) {
    this.mode = mode;
    this.onState(mode, detail);
  }

  receive(message) {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    this.deliver(event);
  }

  deliver(event) {
    if (!event || typeof event.seq !== "number" || event.seq <= this.lastSeq) return;
    this.lastSeq = event.seq;
    this.onEvent(event);
  }

  /** Fallback for a server without the stream: page through /events after the last seq. */
  async poll(delay) {
    if (!this.running) return;
    this.state("polling");
    let next = POLL_MS;
    try {
      const page = await api("/events", { params: { after: this.lastSeq, limit: 500 } });
      if (!this.running) return;
      for (const event of page.events) this.deliver(event);
      next = page.has_more ? 0 : POLL_MS;
    } catch (error) {
      if (error.name === "Unauthorized") return; // api() already sent the person to sign-in
      next = Math.min(POLL_MAX_MS, delay * 2);
      this.state("reconnecting", { reason: error.message });
    }
    if (this.running) this.pollTimer = setTimeout(() => this.poll(next || POLL_MS), next);
  }
}

/** The newest seq right now, so a page can load its data and then follow from there. */
export async function headSeq() {
  const page = await api("/events", { params: { order: "desc", limit: 1 } });
  return page.events[0]?.seq ?? 0;
}
