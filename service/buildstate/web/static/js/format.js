// Numbers and times as people read them.

const absolute = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
});
const dayLabel = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric" });
const hourLabel = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });

export function absoluteTime(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : absolute.format(date);
}

export function bucketLabel(date, hourly) {
  return hourly ? hourLabel.format(date) : dayLabel.format(date);
}

/** "just now", "42 s ago", "5 min ago", "3 h ago", "2 d ago" (future clock skew reads as "just now"). */
export function relativeTime(iso, now = Date.now()) {
  const seconds = Math.round((now - new Date(iso).getTime()) / 1000);
  if (!Number.isFinite(seconds)) return "";
  if (seconds < 5) return "just now";
  if (seconds < 60) return `${seconds} s ago`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ago`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h ago`;
  return `${Math.floor(hours / 24)} d ago`;
}

/** 412000 -> "6m 52s"; 950 -> "950 ms"; 2 h 5 min -> "2h 05m". */
export function duration(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return "";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const total = Math.round(ms / 1000);
  if (total < 60) return `${(ms / 1000).toFixed(ms < 10000 ? 1 : 0)} s`;
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const sec = total % 60;
  if (h > 0) return `${h}h ${String(m).padStart(2, "0")}m`;
  return `${m}m ${String(sec).padStart(2, "0")}s`;
}

export function plural(count, word, many = `${word}s`) {
  return `${count} ${count === 1 ? word : many}`;
}

// The events that move a build; the others (artifact, channel, revoked, restored) copy its state and leave
// the build row, its message, failure, updated_at and last_event_seq, as they were.
const MOVES = new Set(["created", "state", "failure", "reset"]);

export function changesState(event) {
  return MOVES.has(event.type);
}

/** The build as of an event: the event carries the build's code, status and attempt right after it. */
export function buildAfter(event, previous = null) {
  if (previous && !changesState(event)) {
    return { ...previous, ...event.build, state_code: event.state_code, status: event.status, attempt: event.attempt };
  }
  return {
    ...(previous ?? {}),
    ...event.build,
    state_code: event.state_code,
    status: event.status,
    attempt: event.attempt,
    // The store sets both from every event: a reset's message is its reason; only a failure carries one.
    message: event.message,
    failure: event.failure,
    updated_at: event.recorded_at,
    last_event_seq: event.seq,
  };
}

export function comboLabel(build) {
  return `${build.platform} / ${build.os_version} / ${build.image_type}`;
}
