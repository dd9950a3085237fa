// Channels: every channel's head (GET /channels), and one channel's head with its assignment history
// (GET /channels/{name}?platform=&os_version=&image_type=). Both re-read themselves after a channel move
// or a revocation arrives on the feed.

import { ApiError, api } from "../api.js";
import { dataTable, errorNotice, labelChips, loading, statusPill, timeAgo } from "../components.js";
import { fill, h } from "../dom.js";
import { comboLabel, plural } from "../format.js";
import { RELEASE_EVENTS, bucketKey, channelHref, moveRow } from "../release.js";

const RELOAD_MS = 300; // a revocation comes with its channel moves: one re-read for the burst
const HISTORY = 100;

/** Re-read after feed events that may change what a page shows; `matches(event)` says which do. */
function reloader(load, matches) {
  let timer = null;
  return {
    onEvent(event) {
      if (!RELEASE_EVENTS.has(event.type) || !matches(event)) return;
      clearTimeout(timer);
      timer = setTimeout(() => load({ quiet: true }), RELOAD_MS);
    },
    destroy() {
      clearTimeout(timer);
    },
  };
}

function headCell(head) {
  if (!head) return h("td", { class: "muted" }, "none");
  return h("td", {}, h("a", { href: `#/build/${encodeURIComponent(head.id)}` }, head.build_id), " ", statusPill(head.status));
}

function channelsTable(channels) {
  return dataTable({
    className: ["listing", "channels"],
    caption: "Channels and the build each points at",
    columns: ["Channel", "Platform / OS version / image type", "Head", "Moves", "Last move"],
    rows: channels.map((channel) =>
      h(
        "tr",
        { dataset: { channel: `${channel.name}@${bucketKey(channel)}` } },
        h("th", { scope: "row" }, h("a", { href: channelHref(channel) }, channel.name)),
        h("td", {}, comboLabel(channel)),
        headCell(channel.head),
        h("td", { class: "num" }, String(channel.moves)),
        h("td", {}, timeAgo(channel.updated_at)),
      ),
    ),
  });
}

export function channelsView({ main, setTitle, followLive, isCurrent }) {
  setTitle("Channels");
  const body = h("div", {}, loading());
  main.replaceChildren(h("div", { class: "page-head" }, h("h1", { tabindex: "-1" }, "Channels")), body);

  async function load({ quiet = false } = {}) {
    if (!quiet) fill(body, loading());
    try {
      await followLive();
      const { channels } = await api("/channels", { params: { limit: 1000 } });
      if (!isCurrent()) return;
      if (channels.length === 0) {
        fill(body, h("div", { class: "empty card" }, h("p", {}, "No channels yet."), h("p", { class: "muted" }, "A channel appears here when a build is first assigned to it (PUT /channels/{name}).")));
        return;
      }
      const ordered = [...channels].sort((a, b) => a.name.localeCompare(b.name) || bucketKey(a).localeCompare(bucketKey(b)));
      fill(body, h("p", { class: "muted" }, `${plural(channels.length, "channel")}; each names the build to deploy for one platform, OS version and image type.`), h("section", { class: "card" }, channelsTable(ordered)));
    } catch (error) {
      if (!isCurrent() || error.name === "Unauthorized") return;
      fill(body, errorNotice(error, load));
    }
  }

  load();
  return reloader(load, () => true);
}

export function channelView({ main, route, setTitle, followLive, isCurrent }) {
  const name = route.parts[1];
  const bucket = { platform: route.params.get("platform") ?? "", os_version: route.params.get("os_version") ?? "", image_type: route.params.get("image_type") ?? "" };
  setTitle(`Channel ${name}`);
  const heading = h("h1", { tabindex: "-1" }, name, h("span", { class: "count" }, comboLabel(bucket)));
  const body = h("div", {}, loading());
  main.replaceChildren(h("p", { class: "crumbs" }, h("a", { href: "#/channels" }, "← Channels")), heading, body);

  function draw({ channel, history }) {
    const head = channel.head;
    fill(
      body,
      h(
        "section",
        { class: "card", "aria-labelledby": "head-title" },
        h("h2", { id: "head-title" }, "Head"),
        head
          ? h("p", { class: "channel-head" }, h("a", { href: `#/build/${encodeURIComponent(head.id)}` }, head.build_id), " ", statusPill(head.status), h("span", { class: "muted" }, " · moved ", timeAgo(channel.updated_at)))
          : h("p", { class: "channel-head muted" }, "No build: nothing may be deployed from this channel until one is assigned."),
        Object.keys(channel.requires?.labels ?? {}).length
          ? [h("h3", {}, "Requires"), labelChips(channel.requires.labels, "Required labels")]
          : null,
      ),
      h(
        "section",
        { class: "card", "aria-labelledby": "history-title" },
        h("h2", { id: "history-title" }, "History", h("span", { class: "count" }, plural(channel.moves, "move"))),
        dataTable({
          className: ["listing", "history"],
          caption: "Assignments, newest first",
          columns: ["When", "From → to", "What", "Reason", "Who"],
          rows: history.map(moveRow),
        }),
        channel.moves > history.length ? h("p", { class: "muted" }, `The newest ${history.length} are shown.`) : null,
      ),
    );
  }

  async function load({ quiet = false } = {}) {
    if (!quiet) fill(body, loading());
    try {
      await followLive();
      const answer = await api(`/channels/${encodeURIComponent(name)}`, { params: { ...bucket, limit: HISTORY } });
      if (!isCurrent()) return;
      draw(answer);
    } catch (error) {
      if (!isCurrent() || error.name === "Unauthorized") return;
      if (error instanceof ApiError && (error.status === 404 || error.status === 422 || error.status === 400)) {
        fill(body, h("p", {}, `There is no channel "${name}" for ${comboLabel(bucket)}. `, h("a", { href: "#/channels" }, "All channels"), "."));
        return;
      }
      fill(body, errorNotice(error, load));
    }
  }

  load();
  // A move of this channel, or a revocation that may have emptied it.
  return reloader(load, (event) => event.type !== "channel" || (event.detail?.channel === name && bucketKey(event.build) === bucketKey(bucket)));
}
