// The build matrix: the latest build of every platform x OS version x image type, kept live.

import { api } from "../api.js";
import { artifactsOf, countByRegion, regionBadge } from "../artifacts.js";
import {
  STATUSES, errorNotice, failureBadge, loading, progressBar, selectField, statusPill, timeAgo,
} from "../components.js";
import { fill, h, swap } from "../dom.js";
import { buildAfter, changesState, comboLabel, plural } from "../format.js";
import { RELEASE_EVENTS, bucketKey, channelAfter, channelBadge, revokedBadge } from "../release.js";
import { href } from "../router.js";

export const WINDOWS = [
  ["1", "Last hour"],
  ["6", "Last 6 hours"],
  ["24", "Last 24 hours"],
  ["168", "Last 7 days"],
  ["720", "Last 30 days"],
];
const FILTERS = ["platform", "os_version", "image_type", "status", "window"];
const ACTIVITY_SIZE = 12;
const RECONCILE_MS = 2500;
const CHANNELS = 1000; // GET /channels answers at most this many: the badges of the first 1000

// Slugs never hold "/", so it separates them unambiguously (and is safe in attributes and selectors).
const comboKey = (build) => `${build.platform}/${build.os_version}/${build.image_type}`;
const distinct = (values) => [...new Set(values)].sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));

/** Which of two builds for one cell is the latest (the matrix shows the newest-created build). */
function newer(existing, incoming) {
  if (!existing) return incoming;
  if (existing.id === incoming.id) return incoming.last_event_seq > existing.last_event_seq ? incoming : existing;
  return new Date(incoming.created_at) >= new Date(existing.created_at) ? incoming : existing;
}

/** A summary cell's build, with the cell's artifact count per region and revocation. */
const cellBuild = (item) => ({ ...item.build, artifacts_by_region: item.artifacts_by_region ?? {}, revocation: item.revocation ?? null });

export function describeEvent(event) {
  switch (event.type) {
    case "created":
      return "registered at 0";
    case "state":
      return event.state_code === 100 ? "succeeded" : `moved to ${event.state_code}`;
    case "failure": {
      const failure = event.failure ?? {};
      const where = [failure.error_code, failure.component].filter(Boolean).join(" in ");
      return `failed at ${event.state_code}${where ? `: ${where}` : ""}`;
    }
    case "reset":
      return `reset to attempt ${event.attempt}`;
    case "artifact":
      return `recorded ${plural(artifactsOf(event).length, "artifact")}`;
    case "channel":
      return event.detail?.to ? `assigned to channel ${event.detail.channel}` : `left channel ${event.detail?.channel} (revoked)`;
    case "revoked":
      return event.detail?.inherited ? `revoked with ${event.detail.revoked_by_build_id}` : `revoked: ${event.reason ?? ""}`;
    case "restored":
      return "restored";
    default:
      return event.type;
  }
}

/** What a revoked or restored event leaves of a build's revocation (the summary re-read corrects the rare
 * build that had two in force). */
function revocationAfter(event, previous) {
  if (event.type === "restored") return null;
  if (event.type !== "revoked") return previous ?? null;
  const detail = event.detail ?? {};
  return { reason: event.reason ?? detail.reason ?? "", inherited: Boolean(detail.inherited), revoked_by: { id: detail.revoked_by, build_id: detail.revoked_by_build_id } };
}

function cell(build, key, channels) {
  const label = comboLabel(build);
  const named = [...(channels?.values() ?? [])].sort((a, b) => a.name.localeCompare(b.name));
  return h(
    "td",
    { class: ["cell", `cell-${build.status}`, build.revocation ? "cell-revoked" : null], dataset: { combo: key, status: build.status } },
    h(
      "a",
      {
        class: "cell-link",
        href: `#/build/${encodeURIComponent(build.id)}`,
        dataset: { focusKey: key },
      },
      h("span", { class: "visually-hidden" }, `${label}: `),
      h("span", { class: "cell-head" }, statusPill(build.status), h("span", { class: "cell-code" }, `${build.state_code}%`)),
      progressBar(build),
      h("span", { class: "cell-build", title: build.build_id }, build.build_id),
      build.message ? h("span", { class: "cell-message", title: build.message }, build.message) : null,
      failureBadge(build.failure),
      revokedBadge(build.revocation),
      regionBadge(build.artifacts_by_region),
      named.length ? h("span", { class: "badges cell-channels" }, named.map((c) => channelBadge(c, c.head?.id === build.id))) : null,
      h(
        "span",
        { class: "cell-meta" },
        timeAgo(build.updated_at),
        build.attempt > 1 ? h("span", {}, ` · attempt ${build.attempt}`) : null,
      ),
    ),
  );
}

/** One platform's rows; every platform has the same image-type columns, so the tables line up. */
function platformTable(platform, builds, imageTypes, keyOf, channelsOf) {
  const osVersions = distinct(builds.map((b) => b.os_version));
  const byCell = new Map(builds.map((b) => [`${b.os_version}/${b.image_type}`, b]));
  const headingId = `platform-${platform}`;
  return h(
    "section",
    { class: "platform", "aria-labelledby": headingId },
    h("h2", { id: headingId }, platform, h("span", { class: "count" }, plural(builds.length, "build"))),
    h(
      "div",
      { class: "table-scroll" },
      h(
        "table",
        { class: "matrix" },
        h("caption", { class: "visually-hidden" }, `${platform}: OS versions by image type`),
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "OS version"), imageTypes.map((t) => h("th", { scope: "col" }, t)))),
        h(
          "tbody",
          {},
          osVersions.map((os) =>
            h(
              "tr",
              {},
              h("th", { scope: "row" }, os),
              imageTypes.map((type) => {
                const build = byCell.get(`${os}/${type}`);
                if (!build) return h("td", { class: "cell cell-empty", dataset: { label: type } }, h("span", { class: "visually-hidden" }, "no build"), "—");
                const node = cell(build, keyOf(build), channelsOf(keyOf(build)));
                node.dataset.label = type;
                return node;
              }),
            ),
          ),
        ),
      ),
    ),
  );
}

export function matrixView({ main, route, announce, setTitle, followLive, isCurrent, navigate }) {
  setTitle("Build matrix");
  const filters = Object.fromEntries(FILTERS.map((name) => [name, route.params.get(name) ?? ""]));
  const cells = new Map();
  const channels = new Map(); // bucket -> channel name -> channel, from GET /channels and channel events
  let activity = [];
  let counts = null;
  let reconcileTimer = null;

  const countsNode = h("div", { class: "counts", role: "group", "aria-label": "Builds by status" });
  const filterNode = h("form", { class: "filters", "aria-label": "Filter the matrix", role: "search" });
  const matrixNode = h("div", { class: "matrix-area" }, loading());
  const activityList = h("ol", { class: "activity-list" });
  main.replaceChildren(
    h("div", { class: "page-head" }, h("h1", { tabindex: "-1" }, "Build matrix"), countsNode),
    filterNode,
    h(
      "div",
      { class: "matrix-layout" },
      matrixNode,
      h("aside", { class: "activity card", "aria-labelledby": "activity-title" }, h("h2", { id: "activity-title" }, "Latest changes"), activityList),
    ),
  );

  function visible(build) {
    if (filters.platform && build.platform !== filters.platform) return false;
    if (filters.os_version && build.os_version !== filters.os_version) return false;
    if (filters.image_type && build.image_type !== filters.image_type) return false;
    if (filters.status && build.status !== filters.status) return false;
    if (filters.window) {
      const since = Date.now() - Number(filters.window) * 3600 * 1000;
      if (new Date(build.updated_at).getTime() < since) return false;
    }
    return true;
  }

  function drawCounts() {
    if (!counts) return;
    fill(
      countsNode,
      STATUSES.map((status) =>
        h(
          "a",
          { class: ["count-chip", `count-${status}`], href: href("/", { ...filters, status }), dataset: { focusKey: `count-${status}` } },
          h("span", { class: "count-value" }, String(counts[status] ?? 0)),
          ` ${status}`,
        ),
      ),
      h("span", { class: "count-total" }, plural(counts.total ?? 0, "build"), " in all"),
    );
  }

  function drawFilters() {
    const all = [...cells.values()];
    const field = (name, label, options, allText) =>
      selectField({ id: `filter-${name}`, name, label, value: filters[name], options, allText });
    fill(
      filterNode,
      field("platform", "Platform", distinct(all.map((b) => b.platform))),
      field("os_version", "OS version", distinct(all.map((b) => b.os_version))),
      field("image_type", "Image type", distinct(all.map((b) => b.image_type))),
      field("status", "Status", STATUSES.map((s) => [s, s[0].toUpperCase() + s.slice(1)])),
      field("window", "Changed in", WINDOWS, "Any time"),
      h("a", { class: "button-link", href: "#/", dataset: { focusKey: "clear" } }, "Clear filters"),
    );
  }

  filterNode.addEventListener("change", (event) => {
    const { name, value } = event.target;
    if (!FILTERS.includes(name)) return;
    filters[name] = value;
    navigate(href("/", filters), { replace: true }); // shareable without a reload or a history entry per click
    drawMatrix();
  });
  filterNode.addEventListener("submit", (event) => event.preventDefault());

  function drawMatrix() {
    const all = [...cells.values()];
    const shown = all.filter(visible);
    if (all.length === 0) {
      fill(matrixNode, h("div", { class: "empty card" }, h("p", {}, "No builds yet."), h("p", { class: "muted" }, "A build appears here as soon as a pipeline registers it (POST /builds).")));
      return;
    }
    if (shown.length === 0) {
      fill(matrixNode, h("div", { class: "empty card" }, h("p", {}, `No builds match these filters (${plural(all.length, "build")} in total).`), h("a", { href: "#/" }, "Clear filters")));
      return;
    }
    const platforms = distinct(shown.map((b) => b.platform));
    const imageTypes = distinct(shown.map((b) => b.image_type));
    fill(
      matrixNode,
      h("p", { class: "visually-hidden" }, `${plural(shown.length, "build")} shown`),
      platforms.map((platform) =>
        platformTable(platform, shown.filter((b) => b.platform === platform), imageTypes, comboKey, (key) => channels.get(key)),
      ),
    );
  }

  function setChannel(channel) {
    const key = bucketKey(channel);
    if (!channels.has(key)) channels.set(key, new Map());
    channels.get(key).set(channel.name, channel);
  }

  function redrawCell(key, build) {
    const old = matrixNode.querySelector(`td[data-combo="${CSS.escape(key)}"]`);
    if (old && visible(build)) {
      const fresh = cell(build, key, channels.get(key));
      fresh.dataset.label = old.dataset.label;
      swap(old, fresh).classList.add("changed");
    } else {
      drawMatrix();
      matrixNode.querySelector(`td[data-combo="${CSS.escape(key)}"]`)?.classList.add("changed");
    }
  }

  function activityItem(event) {
    return h(
      "li",
      { class: ["activity-item", `activity-${event.type}`] },
      h("a", { href: `#/build/${encodeURIComponent(event.build.id)}`, title: event.build.build_id }, comboLabel(event.build)),
      timeAgo(event.recorded_at),
      h("span", { class: "activity-what" }, describeEvent(event)),
    );
  }

  function drawActivity() {
    if (activity.length === 0) fill(activityList, h("li", { class: "muted" }, "Nothing yet."));
    else fill(activityList, activity.map(activityItem));
  }

  async function reconcile() {
    // Counts by status cover every build, not only the matrix's: re-read them after a burst of events.
    try {
      const summary = await api("/dashboard/summary", { params: { window_hours: filters.window || 168 } });
      if (!isCurrent()) return;
      counts = { ...summary.counts, total: summary.total };
      for (const item of summary.matrix) {
        const key = comboKey(item.build);
        const current = cells.get(key);
        const fresh = cellBuild(item);
        // Artifact and release events leave last_event_seq alone: for the same build the summary's counts
        // and revocation are the truth.
        const same = current?.id === fresh.id && newer(current, fresh) === current;
        cells.set(key, same ? { ...current, artifacts_by_region: fresh.artifacts_by_region, revocation: fresh.revocation } : newer(current, fresh));
      }
      drawCounts();
    } catch {
      // the next event retries; a 401 has already sent the person to sign-in
    }
  }

  async function load() {
    fill(matrixNode, loading());
    try {
      await followLive();
      const [summary, recent, named] = await Promise.all([
        api("/dashboard/summary", { params: { window_hours: filters.window || 168 } }),
        api("/events", { params: { order: "desc", limit: ACTIVITY_SIZE } }),
        api("/channels", { params: { limit: CHANNELS } }).catch((error) => (error.name === "Unauthorized" ? Promise.reject(error) : { channels: [] })),
      ]);
      if (!isCurrent()) return;
      for (const channel of named.channels) setChannel(channel);
      counts = { ...summary.counts, total: summary.total };
      for (const item of summary.matrix) cells.set(comboKey(item.build), cellBuild(item));
      activity = recent.events;
      drawCounts();
      drawFilters();
      drawMatrix();
      drawActivity();
    } catch (error) {
      if (!isCurrent() || error.name === "Unauthorized") return;
      fill(matrixNode, errorNotice(error, load));
    }
  }

  function onEvent(event) {
    activity = [event, ...activity.filter((e) => e.seq !== event.seq)].slice(0, ACTIVITY_SIZE);
    drawActivity();
    const key = comboKey(event.build);
    const existing = cells.get(key);
    const sameBuild = existing?.id === event.build.id;
    let candidate;
    if (changesState(event)) {
      candidate = buildAfter(event, sameBuild ? existing : null);
      if (newer(existing, candidate) !== candidate) return; // an older build of this cell, or a replay
    } else {
      if (event.type === "channel") setChannel(channelAfter(event, channels.get(key)?.get(event.detail?.channel)));
      if (!sameBuild) {
        // About an older build of this cell (or one the matrix has not read yet): a channel badge may move.
        if (event.type === "channel" && existing) redrawCell(key, existing);
        return;
      }
      candidate = buildAfter(event, existing);
      candidate.artifacts_by_region = countByRegion(existing.artifacts_by_region, artifactsOf(event));
      if (RELEASE_EVENTS.has(event.type)) candidate.revocation = revocationAfter(event, existing.revocation);
    }
    const newCombo = !existing;
    cells.set(key, candidate);
    if (newCombo) drawFilters();
    redrawCell(key, candidate);
    announce(`${comboLabel(event.build)} ${describeEvent(event)}`);
    clearTimeout(reconcileTimer);
    reconcileTimer = setTimeout(reconcile, RECONCILE_MS);
  }

  load();
  return {
    onEvent,
    destroy() {
      clearTimeout(reconcileTimer);
    },
  };
}
