// Small pieces several pages share: status pills, progress bars, failure badges, times, filter fields.

import { h } from "./dom.js";
import { absoluteTime, relativeTime } from "./format.js";

export const STATUSES = ["running", "failed", "succeeded"];
const STATUS_TEXT = { running: "Running", failed: "Failed", succeeded: "Succeeded" };

export function statusPill(status) {
  return h("span", { class: ["pill", `pill-${status}`] }, STATUS_TEXT[status] ?? status);
}

/** A 0..100 bar coloured by status; the number is in the text next to it, the bar repeats it visually. */
export function progressBar(build, label) {
  return h("progress", {
    class: ["progress", `progress-${build.status}`],
    max: "100",
    value: String(build.state_code),
    "aria-label": label ?? `Progress ${build.state_code} of 100`,
  });
}

export function failureBadge(failure) {
  if (!failure) return null;
  const code = failure.error_code || "failed";
  return h(
    "span",
    { class: "badge badge-failure", title: failure.error_message || "" },
    h("span", { class: "visually-hidden" }, "Failure: "),
    h("strong", { class: "badge-code" }, code),
    failure.component ? h("span", { class: "badge-component" }, failure.component) : null,
  );
}

/** A <time> that shows "5 min ago" (kept current by main.js) and the exact time on hover. */
export function timeAgo(iso, prefix = "") {
  return h(
    "time",
    { datetime: iso, title: absoluteTime(iso), dataset: { relative: "" }, class: "time-ago" },
    prefix,
    relativeTime(iso),
  );
}

export function exactTime(iso) {
  return h("time", { datetime: iso }, absoluteTime(iso));
}

/** A labelled <select> with an "All" choice; options are [value, text] pairs or plain values. */
export function selectField({ id, label, name, value, options, allText = "All" }) {
  const select = h(
    "select",
    { id, name },
    allText === null ? null : h("option", { value: "" }, allText),
    options.map((option) => {
      const [optionValue, text] = Array.isArray(option) ? option : [option, option];
      return h("option", { value: optionValue }, text);
    }),
  );
  select.value = value ?? "";
  if (select.value !== (value ?? "")) {
    // A value from a shared link that no longer exists: keep it visible rather than silently dropping it.
    select.append(h("option", { value }, `${value} (none now)`));
    select.value = value;
  }
  return h("div", { class: "field" }, h("label", { for: id }, label), select);
}

export function loading(text = "Loading…") {
  return h("p", { class: "loading", role: "status" }, text);
}

export function errorNotice(error, retry) {
  return h(
    "div",
    { class: "notice notice-error", role: "alert" },
    h("p", {}, h("strong", {}, "Could not load this page. "), error.message),
    retry ? h("button", { type: "button", onclick: retry }, "Try again") : null,
  );
}

export function labelChips(labels, name = "Labels") {
  const entries = Object.entries(labels ?? {});
  if (entries.length === 0) return h("p", { class: "muted" }, "No labels");
  return h(
    "ul",
    { class: "chips", "aria-label": name },
    entries.map(([key, value]) =>
      h("li", { class: "chip" }, h("span", { class: "chip-key" }, key), h("span", { class: "chip-value" }, value)),
    ),
  );
}

/** A table in a sideways-scrolling box: column headings, then the rows (<tr> nodes). */
export function dataTable({ className, caption, columns, rows }) {
  return h(
    "div",
    { class: "table-scroll" },
    h(
      "table",
      { class: className },
      caption ? h("caption", { class: "visually-hidden" }, caption) : null,
      h("thead", {}, h("tr", {}, columns.map((text) => h("th", { scope: "col" }, text)))),
      h("tbody", {}, rows),
    ),
  );
}
