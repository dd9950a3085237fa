// One build: where it stands, its steps and how long each took, and every event of every attempt.

import { ApiError, api, granted } from "../api.js";
import { artifactList, artifactsOf, mergeArtifacts } from "../artifacts.js";
import {
  errorNotice, exactTime, failureBadge, labelChips, loading, progressBar, statusPill, timeAgo,
} from "../components.js";
import { fill, h, safeHref } from "../dom.js";
import { buildAfter, comboLabel, duration, plural } from "../format.js";
import {
  RELEASE_EVENTS, ancestryTree, bucketKey, channelBadge, channelHref, revokedBadge, revokedBanner,
} from "../release.js";
import { describeEvent } from "./matrix.js";
import { releaseControls } from "./release-controls.js";

const RELOAD_MS = 300;

const TITLES = {
  created: () => "Registered",
  state: (e) => (e.state_code === 100 ? `${e.from_state_code ?? "?"} → 100, succeeded` : `${e.from_state_code ?? "?"} → ${e.state_code}`),
  failure: (e) => `Failed at ${e.state_code}`,
  reset: (e) => `Reset: attempt ${e.attempt} starts at 0`,
  artifact: (e) => `Recorded ${plural(artifactsOf(e).length, "artifact")}`,
  channel: (e) => (e.detail?.to === e.build.id ? `Assigned to channel ${e.detail?.channel}` : `Left channel ${e.detail?.channel} (revoked)`),
  revoked: (e) => (e.detail?.inherited ? `Revoked with ${e.detail?.revoked_by_build_id}, which it was built from` : "Revoked"),
  restored: (e) => (e.detail?.inherited ? `Restored with ${e.detail?.revoked_by_build_id}` : "Restored"),
};
// Events whose reason the timeline shows as "Why:" (a failure has its own box).
const EXPLAINED = new Set(["reset", "channel", "revoked", "restored"]);

function provenanceOf(events) {
  for (let i = events.length - 1; i >= 0; i -= 1) {
    const provenance = events[i].provenance;
    if (provenance && safeHref(provenance.build_url)) return provenance;
  }
  return null;
}

function concourseText(provenance) {
  const path = [provenance.team, provenance.pipeline, provenance.job].filter(Boolean).join(" / ");
  const number = provenance.build_name ? ` #${provenance.build_name}` : "";
  return `${path || "Concourse build"}${number}`;
}

function concourseLink(provenance, text) {
  const url = safeHref(provenance?.build_url);
  if (!url) return null;
  return h("a", { class: "external", href: url, target: "_blank", rel: "noopener noreferrer" }, text ?? concourseText(provenance), h("span", { "aria-hidden": "true" }, " ↗"), h("span", { class: "visually-hidden" }, " (opens in a new tab)"));
}

function failureDetails(failure) {
  if (!failure) return null;
  return h(
    "div",
    { class: "failure-box" },
    h(
      "dl",
      { class: "facts" },
      h("div", {}, h("dt", {}, "Error code"), h("dd", {}, h("code", {}, failure.error_code ?? "—"))),
      h("div", {}, h("dt", {}, "Component"), h("dd", {}, failure.component ?? "—")),
      h("div", { class: "wide" }, h("dt", {}, "Message"), h("dd", {}, failure.error_message)),
    ),
    failure.details && Object.keys(failure.details).length > 0
      ? h("details", {}, h("summary", {}, "Details"), h("pre", { class: "json" }, JSON.stringify(failure.details, null, 2)))
      : null,
  );
}

function timelineItem(event) {
  const title = (TITLES[event.type] ?? (() => event.type))(event);
  const showMessage = event.message && event.type !== "failure" && !EXPLAINED.has(event.type);
  return h(
    "li",
    { class: ["tl-item", `tl-${event.type}`], dataset: { seq: event.seq } },
    h(
      "div",
      { class: "tl-head" },
      h("span", { class: "tl-title" }, title),
      exactTime(event.recorded_at),
      event.duration_ms !== null && event.type !== "created" && event.type !== "reset"
        ? h("span", { class: "tl-duration" }, `after ${duration(event.duration_ms)}`)
        : null,
    ),
    showMessage ? h("p", { class: "tl-message" }, event.message) : null,
    event.type === "failure" ? failureDetails(event.failure) : null,
    event.type === "artifact"
      ? h("ul", { class: "tl-artifacts" }, artifactsOf(event).map((a) => h("li", {}, `${a.region || "no region"} · ${a.kind}: `, h("code", {}, a.external_id))))
      : null,
    EXPLAINED.has(event.type) ? h("p", { class: "tl-reason" }, h("strong", {}, "Why: "), event.reason ?? "") : null,
    h(
      "p",
      { class: "tl-meta" },
      EXPLAINED.has(event.type) ? h("strong", {}, "Who: ") : "by ",
      h("span", { class: "actor" }, event.actor),
      event.provenance?.build_url ? [" · ", concourseLink(event.provenance)] : null,
    ),
  );
}

/** "Median, all builds" for a row: the same step (from -> to) of every build; for the state a running build
 * is in, the time any build spent in it before moving on; nothing for a failure (no such statistic). */
function medianCell(medians, key) {
  return h("td", { class: "num muted" }, medians.has(key) ? duration(medians.get(key)) : "—");
}

function stepsTable(events, build, medians) {
  const attemptEvents = events.filter((e) => e.attempt === build.attempt);
  const steps = attemptEvents.filter((e) => (e.type === "state" || e.type === "failure") && e.duration_ms !== null && e.from_state_code !== null);
  if (steps.length === 0 && build.status !== "running") return h("p", { class: "muted" }, "No steps recorded in this attempt.");
  const longest = Math.max(1, ...steps.map((e) => e.duration_ms));
  const rows = steps.map((e) =>
    h(
      "tr",
      {},
      h("th", { scope: "row" }, e.type === "failure" ? `${e.from_state_code} (failed)` : `${e.from_state_code} → ${e.state_code}`),
      h("td", { class: "num" }, duration(e.duration_ms)),
      h("td", { class: "bar-cell", "aria-hidden": "true" }, h("span", { class: ["bar", e.type === "failure" ? "bar-failed" : ""], style: { "--share": (e.duration_ms / longest).toFixed(3) } })),
      medianCell(medians.steps, e.type === "failure" ? null : `${e.from_state_code}->${e.state_code}`),
    ),
  );
  if (build.status === "running") {
    rows.push(
      h(
        "tr",
        { class: "step-current" },
        h("th", { scope: "row" }, `${build.state_code} → …`),
        h("td", { class: "num" }, timeAgo(build.updated_at, "since ")),
        h("td", { class: "bar-cell", "aria-hidden": "true" }),
        medianCell(medians.states, build.state_code),
      ),
    );
  }
  return h(
    "div",
    { class: "table-scroll" },
    h(
      "table",
      { class: "steps" },
      h("caption", {}, `Attempt ${build.attempt}: time spent in each state before moving on`),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Step"), h("th", { scope: "col" }, "Took"), h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Share")), h("th", { scope: "col" }, "Median, all builds"))),
      h("tbody", {}, rows),
    ),
  );
}

function timeline(events) {
  const attempts = new Map();
  for (const event of events) {
    if (!attempts.has(event.attempt)) attempts.set(event.attempt, []);
    attempts.get(event.attempt).push(event);
  }
  const ordered = [...attempts.entries()].sort((a, b) => a[0] - b[0]);
  const current = ordered.at(-1)?.[0];
  return ordered.map(([attempt, list]) =>
    h(
      "section",
      { class: "attempt", "aria-labelledby": `attempt-${attempt}` },
      h("h3", { id: `attempt-${attempt}` }, `Attempt ${attempt}`, attempt === current && ordered.length > 1 ? h("span", { class: "muted" }, " (current)") : null, h("span", { class: "count" }, plural(list.length, "event"))),
      h("ol", { class: "timeline" }, list.map(timelineItem)),
    ),
  );
}

export function buildView({ main, route, announce, setTitle, followLive, isCurrent }) {
  setTitle("Build");
  let build = null;
  let events = [];
  let artifacts = [];
  let lastSeq = 0; // events of other types than state changes leave build.last_event_seq as it was
  let ancestry = null; // GET /builds/{ref}/ancestry, or an Error to show in its section
  let channels = []; // the channels of this build's bucket
  let scheduled = null; // a revocation this page scheduled
  let releaseTimer = null;
  let releaseReads = 0; // only the newest read of ancestry and channels is shown (answers may cross)
  let controls = { key: null, node: null }; // kept across redraws while they fit, so typing survives events
  let medians = { steps: new Map(), states: new Map() };
  const heading = h("h1", { tabindex: "-1" }, route.ref);
  const body = h("div", { class: "build-body" }, loading());
  main.replaceChildren(h("p", { class: "crumbs" }, h("a", { href: "#/" }, "← Build matrix")), heading, body);

  function draw() {
    setTitle(build.build_id);
    heading.textContent = build.build_id;
    const provenance = provenanceOf(events);
    const self = ancestry instanceof Error ? null : ancestry?.nodes.find((n) => n.relation === "self");
    const heads = channels.filter((c) => c.head?.id === build.id).sort((a, b) => a.name.localeCompare(b.name));
    fill(
      body,
      revokedBanner(self?.revocation),
      h(
        "section",
        { class: ["build-status", "card", `card-${build.status}`], "aria-label": "Current state" },
        h("p", { class: "combo" }, comboLabel(build)),
        h("div", { class: "status-line" }, statusPill(build.status), h("span", { class: "big-code" }, `${build.state_code}`, h("span", { class: "muted" }, " / 100")), failureBadge(build.failure), revokedBadge(self?.revocation)),
        progressBar(build),
        build.message ? h("p", { class: "build-message" }, build.message) : null,
        h(
          "dl",
          { class: "facts" },
          h("div", {}, h("dt", {}, "Attempt"), h("dd", {}, String(build.attempt))),
          h("div", {}, h("dt", {}, "Last change"), h("dd", {}, timeAgo(build.updated_at))),
          h("div", {}, h("dt", {}, "Registered"), h("dd", {}, exactTime(build.created_at))),
          h("div", {}, h("dt", {}, "Concourse"), h("dd", {}, provenance ? concourseLink(provenance) : h("span", { class: "muted" }, "no link recorded"))),
          h("div", {}, h("dt", {}, "Channels"), h("dd", {}, heads.length ? h("span", { class: "badges" }, heads.map((c) => h("a", { href: channelHref(c) }, channelBadge(c, true)))) : h("span", { class: "muted" }, "none"))),
          h("div", { class: "wide" }, h("dt", {}, "Id"), h("dd", {}, h("code", {}, build.id))),
        ),
      ),
      build.failure ? h("section", { class: "card card-failed", "aria-labelledby": "failure-title" }, h("h2", { id: "failure-title" }, "Failure"), failureDetails(build.failure)) : null,
      h("section", { class: "card", "aria-labelledby": "artifacts-title" }, h("h2", { id: "artifacts-title" }, "Artifacts", artifacts.length ? h("span", { class: "count" }, plural(artifacts.length, "artifact")) : null), artifactList(artifacts, announce)),
      h("section", { class: "card", "aria-labelledby": "ancestry-title" }, h("h2", { id: "ancestry-title" }, "Ancestry"), ancestry instanceof Error ? errorNotice(ancestry, reloadRelease) : ancestry ? ancestryTree(ancestry) : loading()),
      granted("release") && self
        ? h("section", { class: "card release-card", "aria-labelledby": "release-title" }, h("h2", { id: "release-title", tabindex: "-1", dataset: { focusKey: "release-title" } }, "Revocation"), controlsFor(self))
        : null,
      h("section", { class: "card", "aria-labelledby": "labels-title" }, h("h2", { id: "labels-title" }, "Labels"), labelChips(build.labels)),
      h("section", { class: "card", "aria-labelledby": "steps-title" }, h("h2", { id: "steps-title" }, "Steps"), stepsTable(events, build, medians)),
      h("section", { class: "card", "aria-labelledby": "timeline-title" }, h("h2", { id: "timeline-title" }, "Timeline"), timeline(events)),
    );
  }

  /** The revoke or restore form for the build as it stands; the same node while that does not change. */
  function controlsFor(self) {
    const key = JSON.stringify([self.revocation?.id ?? null, Boolean(self.revocation?.inherited), scheduled?.id ?? null]);
    if (controls.key !== key) {
      controls = { key, node: h("div", {}, releaseControls({ build, revocation: self.revocation, scheduled, done: released, announce })) };
    }
    return controls.node;
  }

  /** Read ancestry and channels; false when a newer read started meanwhile (its answer wins). */
  async function readRelease() {
    releaseReads += 1;
    const mine = releaseReads;
    const ref = encodeURIComponent(route.ref);
    const [family, bucket] = await Promise.all([
      api(`/builds/${ref}/ancestry`).catch((error) => (error.name === "Unauthorized" ? Promise.reject(error) : error)),
      build ? api("/channels", { params: { platform: build.platform, os_version: build.os_version, image_type: build.image_type } }).catch(() => ({ channels: [] })) : { channels: [] },
    ]);
    if (mine !== releaseReads) return false;
    ancestry = family;
    channels = bucket.channels;
    return true;
  }

  async function reloadRelease() {
    try {
      if (!(await readRelease())) return;
    } catch {
      return; // a 401 has already sent the person to sign-in
    }
    if (isCurrent() && build) draw();
  }

  async function released(answer) {
    scheduled = answer?.state === "scheduled" ? answer.revocation : null;
    if (answer?.state) announce(answer.state === "scheduled" ? "Revocation scheduled" : `This build is ${answer.state}`);
    await reloadRelease();
    // The form is gone: keyboard focus goes to what it changed, the banner or the controls' heading.
    if (isCurrent()) body.querySelector("#revoked-title, #release-title")?.focus({ preventScroll: false });
  }

  async function load() {
    fill(body, loading());
    try {
      await followLive();
      const [history, summary] = await Promise.all([
        api(`/builds/${encodeURIComponent(route.ref)}/history`),
        api("/dashboard/summary").catch(() => null),
      ]);
      if (!isCurrent()) return;
      build = history.build;
      events = history.events;
      artifacts = history.artifacts ?? [];
      lastSeq = Math.max(build.last_event_seq, ...events.map((e) => e.seq));
      medians = {
        steps: new Map((summary?.transition_durations ?? []).map((t) => [`${t.from_state_code}->${t.state_code}`, t.median_ms])),
        states: new Map((summary?.step_durations ?? []).map((s) => [s.state_code, s.median_ms])),
      };
      // Ancestry and channels need the build's bucket; events arriving meanwhile apply to what is above.
      await readRelease();
      if (!isCurrent()) return;
      draw();
    } catch (error) {
      if (!isCurrent() || error.name === "Unauthorized") return;
      if (error instanceof ApiError && error.status === 404) {
        setTitle("Build not found");
        heading.textContent = "Build not found";
        fill(body, h("p", {}, `There is no build "${route.ref}". `, h("a", { href: "#/" }, "Back to the matrix"), "."));
        return;
      }
      fill(body, errorNotice(error, load));
    }
  }

  function onEvent(event) {
    if (build && RELEASE_EVENTS.has(event.type) && touches(event)) {
      clearTimeout(releaseTimer);
      releaseTimer = setTimeout(reloadRelease, RELOAD_MS);
    }
    if (!build || event.build.id !== build.id || event.seq <= lastSeq) return;
    lastSeq = event.seq;
    events = [...events, event];
    build = buildAfter(event, build);
    artifacts = mergeArtifacts(artifacts, artifactsOf(event));
    draw();
    body.querySelector(`[data-seq="${event.seq}"]`)?.classList.add("changed");
    announce(`This build ${describeEvent(event)}`);
  }

  /** A release event about this build, one of its relatives, or a channel of its bucket. */
  function touches(event) {
    if (event.build.id === build.id || bucketKey(event.build) === bucketKey(build)) return true;
    return !(ancestry instanceof Error) && Boolean(ancestry?.nodes.some((n) => n.build.id === event.build.id));
  }

  load();
  return {
    onEvent,
    destroy() {
      clearTimeout(releaseTimer);
    },
  };
}
