// Channels, revocations and ancestry as the pages show them: badges, the banner of a revoked build, and a
// build's family as a small tree (GET /builds/{ref}/ancestry). All data stays text (see dom.js).

import { exactTime, statusPill, timeAgo } from "./components.js";
import { h } from "./dom.js";
import { comboLabel, plural } from "./format.js";
import { href } from "./router.js";

// The event types that can change a build's revocation, a channel's head or whether a build is out of date.
export const RELEASE_EVENTS = new Set(["channel", "revoked", "restored"]);

const buildLink = (build) => h("a", { href: `#/build/${encodeURIComponent(build.id)}` }, build.build_id);

/** "Revoked" (and whose revocation it inherits), the reason on hover; nothing for null. */
export function revokedBadge(revocation) {
  if (!revocation) return null;
  return h(
    "span",
    { class: "badge badge-revoked", title: revocation.reason },
    h("strong", {}, "Revoked"),
    revocation.inherited ? h("span", { class: "badge-component" }, `via ${revocation.revoked_by.build_id}`) : null,
  );
}

/** The build page's banner: what was revoked, why, by whom, since when; for an inherited one, the ancestor. */
export function revokedBanner(revocation) {
  if (!revocation) return null;
  return h(
    "section",
    { class: "card revoked-banner", "aria-labelledby": "revoked-title" },
    h("h2", { id: "revoked-title", tabindex: "-1", dataset: { focusKey: "revoked-title" } }, "Revoked: do not deploy this build"),
    h("p", { class: "revoked-reason" }, h("strong", {}, "Reason: "), revocation.reason),
    h(
      "p",
      { class: "muted" },
      revocation.inherited
        ? ["Inherited from ", h("a", { href: `#/build/${encodeURIComponent(revocation.revoked_by.id)}` }, revocation.revoked_by.build_id), ", which it was built from. "]
        : null,
      "By ",
      h("span", { class: "actor" }, revocation.actor),
      ", ",
      timeAgo(revocation.fired_at ?? revocation.at),
      ".",
    ),
  );
}

/** A channel's name as a badge; `current`: it points at the build shown next to it. */
export function channelBadge(channel, current) {
  const head = channel.head;
  const title = head ? `${channel.name}: ${head.build_id}` : `${channel.name}: no build (its head was revoked)`;
  return h(
    "span",
    { class: ["badge", "badge-channel", current ? "badge-channel-current" : null, head ? null : "badge-channel-empty"], title },
    h("span", { class: "visually-hidden" }, "Channel "),
    channel.name,
    current ? h("span", { class: "visually-hidden" }, " (this build)") : null,
  );
}

export const bucketKey = (item) => `${item.platform}/${item.os_version}/${item.image_type}`;

/** The query that names a channel's bucket, and the channel page's link. */
export const channelHref = (channel) =>
  href(`/channels/${encodeURIComponent(channel.name)}`, { platform: channel.platform, os_version: channel.os_version, image_type: channel.image_type });

/** A channel as a channel event leaves it: its head is the event's `to`, null when it was emptied. */
export function channelAfter(event, channel) {
  const detail = event.detail ?? {};
  const kept = channel?.head && channel.head.id === detail.to;
  return {
    ...(channel ?? {}),
    name: detail.channel,
    platform: event.build.platform,
    os_version: event.build.os_version,
    image_type: event.build.image_type,
    head: detail.to ? (kept ? channel.head : { id: detail.to, build_id: detail.to_build_id }) : null,
    updated_at: event.recorded_at,
  };
}

function nodeLine(node) {
  const { build } = node;
  return h(
    "span",
    { class: "tree-node", dataset: { build: build.id } },
    node.relation === "self" ? h("strong", {}, build.build_id) : buildLink(build),
    h("span", { class: "muted" }, ` ${comboLabel(build)} `),
    statusPill(build.status),
    revokedBadge(node.revocation),
    node.out_of_date ? h("span", { class: "badge badge-stale", title: "A parent no longer heads the channel it was taken from" }, "Out of date") : null,
  );
}

/** Nested lists from `start` along `next` (parents or children), each build once (a diamond shows once). */
function branch(start, next, nodes, seen) {
  const items = [];
  for (const id of next.get(start) ?? []) {
    const node = nodes.get(id);
    if (!node || seen.has(id)) continue;
    seen.add(id);
    const below = branch(id, next, nodes, seen);
    items.push(h("li", {}, nodeLine(node), below.length ? h("ul", {}, below) : null));
  }
  return items;
}

/** The build's ancestors ("Built from") and descendants ("Built on it") as two small trees. */
export function ancestryTree(ancestry) {
  const nodes = new Map(ancestry.nodes.map((n) => [n.build.id, n]));
  const self = ancestry.nodes.find((n) => n.relation === "self");
  const parents = new Map();
  const children = new Map();
  const add = (map, key, value) => {
    if (!map.has(key)) map.set(key, []);
    map.get(key).push(value);
  };
  for (const edge of ancestry.edges) {
    const child = nodes.get(edge.child);
    const parent = nodes.get(edge.parent);
    if (!child || !parent) continue;
    if (parent.relation === "ancestor") add(parents, edge.child, edge.parent);
    if (child.relation === "descendant") add(children, edge.parent, edge.child);
  }
  const up = branch(ancestry.build, parents, nodes, new Set([ancestry.build]));
  const down = branch(ancestry.build, children, nodes, new Set([ancestry.build]));
  if (up.length === 0 && down.length === 0) return h("p", { class: "muted" }, "No parents or children recorded.");
  const ancestors = ancestry.nodes.filter((n) => n.relation === "ancestor").length;
  const descendants = ancestry.nodes.filter((n) => n.relation === "descendant").length;
  return h(
    "div",
    { class: "ancestry" },
    self?.out_of_date ? h("p", { class: "notice" }, "Out of date: a build it was made from no longer heads the channel it was taken from.") : null,
    h(
      "div",
      { class: "tree", role: "group", "aria-label": "Built from" },
      h("h3", {}, "Built from", h("span", { class: "count" }, plural(ancestors, "ancestor"))),
      up.length ? h("ul", { class: "tree-list" }, up) : h("p", { class: "muted" }, "No parents recorded."),
    ),
    h(
      "div",
      { class: "tree", role: "group", "aria-label": "Built on it" },
      h("h3", {}, "Built on it", h("span", { class: "count" }, plural(descendants, "descendant"))),
      down.length ? h("ul", { class: "tree-list" }, down) : h("p", { class: "muted" }, "No builds made from it."),
    ),
    ancestry.truncated ? h("p", { class: "muted" }, "More relatives exist than are shown here.") : null,
  );
}

/** One row of a channel's history: when, who, from which build to which, why. */
export function moveRow(move) {
  const ident = (build) => (build ? h("a", { href: `#/build/${encodeURIComponent(build.id)}` }, build.build_id) : h("span", { class: "muted" }, "none"));
  return h(
    "tr",
    { class: `move-${move.cause}` },
    h("td", {}, exactTime(move.at)),
    h("td", {}, ident(move.from_build), " → ", ident(move.to_build)),
    h("td", {}, move.cause === "revoked" ? h("span", { class: "badge badge-revoked" }, "Revoked") : "Assigned"),
    h("td", { class: "move-reason" }, move.reason),
    h("td", {}, h("span", { class: "actor" }, move.actor)),
  );
}
