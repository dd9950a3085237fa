// Recent failures grouped by component and error code, with counts and a trend over the window.
// Computed here from GET /events?type=failure so the trend can be drawn per hour or per day.

import { api } from "../api.js";
import { errorNotice, loading, selectField, timeAgo } from "../components.js";
import { fill, h, s } from "../dom.js";
import { bucketLabel, comboLabel, plural } from "../format.js";
import { href } from "../router.js";

const WINDOWS = [
  ["24", "Last 24 hours"],
  ["72", "Last 3 days"],
  ["168", "Last 7 days"],
  ["336", "Last 14 days"],
  ["720", "Last 30 days"],
];
const DEFAULT_WINDOW = "168";
const FILTERS = ["platform", "os_version", "image_type", "window"];
const PAGE = 1000;
const MAX_PAGES = 10;
const HOUR = 3600 * 1000;

/** Buckets covering the window: hourly up to two days, else by local calendar day. */
export function makeBuckets(hours, now = new Date()) {
  if (hours <= 48) {
    const end = new Date(now);
    end.setMinutes(0, 0, 0);
    const start = end.getTime() - (hours - 1) * HOUR;
    return {
      hourly: true,
      starts: Array.from({ length: hours }, (_, i) => new Date(start + i * HOUR)),
      index: (date) => Math.floor((date.getTime() - start) / HOUR),
    };
  }
  const days = Math.ceil(hours / 24);
  const today = new Date(now.getFullYear(), now.getMonth(), now.getDate());
  const starts = Array.from({ length: days }, (_, i) => new Date(today.getFullYear(), today.getMonth(), today.getDate() - (days - 1 - i)));
  return {
    hourly: false,
    starts,
    index: (date) => {
      const day = new Date(date.getFullYear(), date.getMonth(), date.getDate());
      return Math.round((day - starts[0]) / (24 * HOUR)); // round: a DST day is 23 or 25 hours long
    },
  };
}

const groupKey = (failure) => `${encodeURIComponent(failure.component ?? "")}|${encodeURIComponent(failure.error_code ?? "")}`;

export function groupFailures(events, buckets) {
  const groups = new Map();
  for (const event of events) {
    const failure = event.failure ?? {};
    const key = groupKey(failure);
    let group = groups.get(key);
    if (!group) {
      group = { key, component: failure.component ?? null, errorCode: failure.error_code ?? null, count: 0, builds: new Set(), latest: event, trend: buckets.starts.map(() => 0) };
      groups.set(key, group);
    }
    group.count += 1;
    group.builds.add(event.build.id);
    if (event.seq > group.latest.seq) group.latest = event;
    const index = buckets.index(new Date(event.recorded_at));
    if (index >= 0 && index < group.trend.length) group.trend[index] += 1;
  }
  return [...groups.values()].sort((a, b) => b.count - a.count || b.latest.seq - a.latest.seq);
}

function barChart(values, buckets, { width, height, label, className }) {
  const max = Math.max(1, ...values);
  const step = width / values.length;
  const gap = values.length > 60 ? 0 : Math.min(2, step * 0.2);
  const words = values.map((v, i) => `${bucketLabel(buckets.starts[i], buckets.hourly)}: ${v}`).join(", ");
  return s(
    "svg",
    { class: className, viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", role: "img", "aria-label": `${label}. ${words}` },
    values.map((value, i) => {
      const barHeight = value === 0 ? 1 : Math.max(2, (value / max) * height);
      return s(
        "rect",
        { x: (i * step + gap / 2).toFixed(2), y: (height - barHeight).toFixed(2), width: Math.max(0.5, step - gap).toFixed(2), height: barHeight.toFixed(2), class: value === 0 ? "bar-zero" : "bar-some" },
        s("title", {}, `${bucketLabel(buckets.starts[i], buckets.hourly)}: ${plural(value, "failure")}`),
      );
    }),
  );
}

async function fetchFailures(filters) {
  const since = new Date(Date.now() - Number(filters.window) * HOUR).toISOString();
  const events = [];
  let before;
  for (let page = 0; page < MAX_PAGES; page += 1) {
    const params = { type: "failure", updated_since: since, order: "desc", limit: PAGE, before, platform: filters.platform, os_version: filters.os_version, image_type: filters.image_type };
    const result = await api("/events", { params });
    events.push(...result.events);
    if (result.events.length < PAGE) return { events, truncated: false };
    before = result.events.at(-1).seq;
  }
  return { events, truncated: true };
}

export function failuresView({ main, route, announce, setTitle, followLive, isCurrent, navigate }) {
  setTitle("Failures");
  const filters = Object.fromEntries(FILTERS.map((name) => [name, route.params.get(name) ?? ""]));
  if (!WINDOWS.some(([value]) => value === filters.window)) filters.window = DEFAULT_WINDOW;
  let events = [];
  let truncated = false;
  let options = { platform: [], os_version: [], image_type: [] };

  const filterNode = h("form", { class: "filters", role: "search", "aria-label": "Filter failures" });
  const content = h("div", { class: "failures-area" }, loading());
  main.replaceChildren(h("div", { class: "page-head" }, h("h1", { tabindex: "-1" }, "Failures")), filterNode, content);

  function drawFilters() {
    const field = (name, label, list, allText) => selectField({ id: `filter-${name}`, name, label, value: filters[name], options: list, allText });
    fill(
      filterNode,
      field("window", "Window", WINDOWS, null),
      field("platform", "Platform", options.platform),
      field("os_version", "OS version", options.os_version),
      field("image_type", "Image type", options.image_type),
    );
  }

  filterNode.addEventListener("change", (event) => {
    const { name, value } = event.target;
    if (!FILTERS.includes(name)) return;
    filters[name] = value;
    navigate(href("/failures", filters), { replace: true });
    load();
  });
  filterNode.addEventListener("submit", (event) => event.preventDefault());

  function matches(event) {
    return event.type === "failure"
      && (!filters.platform || event.build.platform === filters.platform)
      && (!filters.os_version || event.build.os_version === filters.os_version)
      && (!filters.image_type || event.build.image_type === filters.image_type);
  }

  function draw() {
    const hours = Number(filters.window);
    const buckets = makeBuckets(hours);
    const groups = groupFailures(events, buckets);
    const unit = buckets.hourly ? "hour" : "day";
    const windowText = WINDOWS.find(([value]) => value === filters.window)?.[1].toLowerCase() ?? `last ${hours} hours`;
    if (events.length === 0) {
      fill(content, h("div", { class: "empty card" }, h("p", {}, `No failures in the ${windowText}.`), h("p", { class: "muted" }, "New ones appear here as they happen.")));
      return;
    }
    const totals = buckets.starts.map((_, i) => groups.reduce((sum, g) => sum + g.trend[i], 0));
    const builds = new Set(events.map((e) => e.build.id));
    fill(
      content,
      h(
        "section",
        { class: "card", "aria-labelledby": "trend-title" },
        h("h2", { id: "trend-title" }, `Failures per ${unit}`),
        h("p", { class: "summary-line" }, h("strong", {}, plural(events.length, "failure")), ` in ${plural(builds.size, "build")}, ${plural(groups.length, "kind")}, ${windowText}`, truncated ? " (newest only; narrow the filters to see all)" : ""),
        h(
          "figure",
          { class: "trend" },
          barChart(totals, buckets, { width: 600, height: 80, label: `Failures per ${unit}`, className: "trend-chart" }),
          buckets.starts.length <= 14
            ? h("div", { class: "axis axis-each", "aria-hidden": "true" }, buckets.starts.map((start, i) => h("span", {}, h("strong", {}, String(totals[i])), bucketLabel(start, buckets.hourly))))
            : h("div", { class: "axis", "aria-hidden": "true" }, h("span", {}, bucketLabel(buckets.starts[0], buckets.hourly)), h("span", {}, bucketLabel(buckets.starts.at(-1), buckets.hourly))),
          h("figcaption", { class: "muted" }, `Peak: ${plural(Math.max(...totals), "failure")} in one ${unit}.`),
        ),
      ),
      h(
        "section",
        { class: "card", "aria-labelledby": "groups-title" },
        h("h2", { id: "groups-title" }, "By component and error code"),
        h(
          "div",
          { class: "table-scroll" },
          h(
            "table",
            { class: "groups" },
            h("thead", {}, h("tr", {}, ["Component", "Error code", "Failures", "Builds", `Trend per ${unit}`, "Last seen", "Latest"].map((text) => h("th", { scope: "col" }, text)))),
            h(
              "tbody",
              {},
              groups.map((group) =>
                h(
                  "tr",
                  { dataset: { group: group.key } },
                  h("th", { scope: "row", "data-label": "Component" }, group.component ?? h("span", { class: "muted" }, "unknown")),
                  h("td", { "data-label": "Error code" }, group.errorCode ? h("code", { class: "badge badge-failure" }, group.errorCode) : h("span", { class: "muted" }, "none")),
                  h("td", { class: "num group-count", "data-label": "Failures" }, String(group.count)),
                  h("td", { class: "num", "data-label": "Builds" }, String(group.builds.size)),
                  h("td", { "data-label": "Trend" }, barChart(group.trend, buckets, { width: 120, height: 24, label: `Trend of ${group.errorCode ?? "failures"}`, className: "spark" })),
                  h("td", { "data-label": "Last seen" }, timeAgo(group.latest.recorded_at)),
                  h(
                    "td",
                    { class: "latest", "data-label": "Latest" },
                    h("a", { href: `#/build/${encodeURIComponent(group.latest.build.id)}`, dataset: { focusKey: `latest-${group.key}` } }, comboLabel(group.latest.build)),
                    h("span", { class: "latest-message", title: group.latest.failure?.error_message ?? "" }, group.latest.failure?.error_message ?? ""),
                  ),
                ),
              ),
            ),
          ),
        ),
      ),
    );
  }

  async function load() {
    fill(content, loading());
    drawFilters();
    try {
      await followLive();
      const [found, summary] = await Promise.all([fetchFailures(filters), api("/dashboard/summary", { params: { window_hours: filters.window } })]);
      if (!isCurrent()) return;
      ({ events, truncated } = found);
      const builds = summary.matrix.map((m) => m.build);
      const distinct = (name) => [...new Set(builds.map((b) => b[name]))].sort();
      options = { platform: distinct("platform"), os_version: distinct("os_version"), image_type: distinct("image_type") };
      drawFilters();
      draw();
    } catch (error) {
      if (!isCurrent() || error.name === "Unauthorized") return;
      fill(content, errorNotice(error, load));
    }
  }

  function onEvent(event) {
    if (!matches(event) || events.some((e) => e.seq === event.seq)) return;
    events = [event, ...events];
    draw();
    content.querySelector(`tr[data-group="${CSS.escape(groupKey(event.failure ?? {}))}"]`)?.classList.add("changed");
    const failure = event.failure ?? {};
    announce(`New failure ${failure.error_code ?? ""} ${failure.component ? `in ${failure.component}` : ""} on ${comboLabel(event.build)}`);
  }

  load();
  return { onEvent };
}
