// What a build made: its artifacts grouped by region with a copy button per external id (the build page),
// and how many regions they are in (the matrix). Events of type `artifact` carry the new ones in `detail`.

import { copyText } from "./clipboard.js";
import { dataTable, labelChips, timeAgo } from "./components.js";
import { h } from "./dom.js";
import { plural } from "./format.js";

const COPIED_MS = 2500;

const artifactKey = (a) => JSON.stringify([a.platform, a.region, a.kind, a.external_id]);

/** The artifacts an `artifact` event recorded, shaped as GET /builds/{ref}/artifacts lists them. */
export function artifactsOf(event) {
  if (event.type !== "artifact" || !Array.isArray(event.detail?.artifacts)) return [];
  return event.detail.artifacts.map((a) => ({
    labels: {},
    ...a,
    region: a.region ?? "",
    attempt: event.attempt,
    event_seq: event.seq,
    recorded_at: event.recorded_at,
    actor: event.actor,
  }));
}

/** `known` and then those of `added` it does not hold yet (a replayed event adds nothing). */
export function mergeArtifacts(known, added) {
  const seen = new Set(known.map(artifactKey));
  const fresh = added.filter((a) => {
    const key = artifactKey(a);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
  return fresh.length ? [...known, ...fresh] : known;
}

/** The summary's region -> count, with what an event added. */
export function countByRegion(counts, added) {
  const next = { ...(counts ?? {}) };
  for (const artifact of added) next[artifact.region] = (next[artifact.region] ?? 0) + 1;
  return next;
}

/** The matrix cell's line: "3 regions" (or "2 artifacts" when none has a region), nothing without any. */
export function regionBadge(counts) {
  const entries = Object.entries(counts ?? {}).filter(([, n]) => n > 0);
  if (entries.length === 0) return null;
  const regions = entries.map(([region]) => region).filter(Boolean).sort();
  const total = entries.reduce((sum, [, n]) => sum + n, 0);
  const text = regions.length ? plural(regions.length, "region") : plural(total, "artifact");
  return h(
    "span",
    { class: "cell-artifacts", title: `${plural(total, "artifact")}${regions.length ? `: ${regions.join(", ")}` : ""}` },
    h("span", { class: "visually-hidden" }, "Artifacts in "),
    text,
  );
}

function copyButton(artifact, source, announce) {
  const hidden = () => h("span", { class: "visually-hidden" }, ` ${artifact.external_id}`);
  const button = h("button", { type: "button", class: ["quiet", "copy"], title: "Copy the external id" }, "Copy", hidden());
  let timer = null;
  button.addEventListener("click", async () => {
    const result = await copyText(artifact.external_id, source);
    button.replaceChildren(result === "copied" ? "Copied" : "Selected", hidden());
    announce(result === "copied" ? "Copied to the clipboard" : "Selected: press Ctrl+C to copy");
    clearTimeout(timer);
    timer = setTimeout(() => button.replaceChildren("Copy", hidden()), COPIED_MS);
  });
  return button;
}

function artifactRow(artifact, announce) {
  const id = h("code", { class: "external-id" }, artifact.external_id);
  return h(
    "tr",
    { dataset: { kind: artifact.kind } },
    h("td", {}, artifact.kind),
    h("td", { class: "id-cell" }, h("span", { class: "id-with-copy" }, id, copyButton(artifact, id, announce))),
    h("td", {}, artifact.platform),
    h("td", {}, Object.keys(artifact.labels ?? {}).length ? labelChips(artifact.labels, "Artifact labels") : h("span", { class: "muted" }, "—")),
    h(
      "td",
      { class: "recorded" },
      timeAgo(artifact.recorded_at),
      " by ",
      h("span", { class: "actor" }, artifact.actor),
      artifact.attempt > 1 ? ` · attempt ${artifact.attempt}` : null,
    ),
  );
}

/** The build page's list: one table per region (region-less ones last), in the order they were recorded. */
export function artifactList(artifacts, announce) {
  if (artifacts.length === 0) return h("p", { class: "muted" }, "No artifacts recorded.");
  const regions = new Map();
  for (const artifact of artifacts) {
    if (!regions.has(artifact.region)) regions.set(artifact.region, []);
    regions.get(artifact.region).push(artifact);
  }
  const order = [...regions.keys()].sort((a, b) => (a === "") - (b === "") || a.localeCompare(b));
  return order.map((region, index) => {
    const list = regions.get(region);
    const headingId = `artifacts-region-${index}`;
    return h(
      "section",
      { class: "artifact-region", "aria-labelledby": headingId, dataset: { region } },
      h("h3", { id: headingId }, region || "No region", h("span", { class: "count" }, plural(list.length, "artifact"))),
      dataTable({
        className: "artifacts",
        columns: ["Kind", "External id", "Platform", "Labels", "Recorded"],
        rows: list.map((artifact) => artifactRow(artifact, announce)),
      }),
    );
  });
}
