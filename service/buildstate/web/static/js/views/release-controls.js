// Revoke and restore on the build page, for a session granted the `release` scope (operators and admins).
// The service checks the scope on every request; a refusal is shown in the service's words.

import { api } from "../api.js";
import { exactTime } from "../components.js";
import { h } from "../dom.js";

let forms = 0;

/** A form with one required reason (and `extra` fields) that POSTs to `path`; `done(answer)` after. */
function reasonForm({ path, title, action, hint, extra = [], bodyOf, done, announce }) {
  forms += 1;
  const id = `release-form-${forms}`;
  const reason = h("textarea", { id: `${id}-reason`, name: "reason", required: true, maxlength: "2000", rows: "2", dataset: { focusKey: "release-reason" } });
  const error = h("p", { class: "form-error", role: "alert", id: `${id}-error` });
  const submit = h("button", { type: "submit", class: "primary danger", dataset: { focusKey: `release-${action}` } }, action);
  const form = h(
    "form",
    { class: "release-form", "aria-labelledby": `${id}-title`, "aria-describedby": `${id}-error`, novalidate: true },
    h("h3", { id: `${id}-title` }, title),
    hint ? h("p", { class: "muted" }, hint) : null,
    h("div", { class: "field" }, h("label", { for: reason.id }, "Reason"), reason),
    extra.map((field) => field.node),
    error,
    submit,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    if (!reason.value.trim()) {
      error.textContent = "Say why: the reason is kept with the revocation and shown to everyone.";
      reason.focus();
      return;
    }
    submit.disabled = true;
    try {
      const answer = await api(path, { method: "POST", body: bodyOf(reason.value.trim()) });
      announce(`${action}: done`);
      done(answer);
    } catch (problem) {
      if (problem.name === "Unauthorized") return;
      error.textContent = String(problem.message || `${action} failed.`);
      submit.disabled = false;
    }
  });
  return form;
}

/** The controls for one build: revoke it (now or at a time) when it is not revoked, restore it when its own
 * revocation is in force; an inherited revocation is lifted by restoring the ancestor. */
export function releaseControls({ build, revocation, scheduled, done, announce }) {
  const path = (verb) => `/builds/${encodeURIComponent(build.id)}/${verb}`;
  if (revocation?.inherited) {
    return h(
      "p",
      {},
      "This build is revoked because ",
      h("a", { href: `#/build/${encodeURIComponent(revocation.revoked_by.id)}` }, revocation.revoked_by.build_id),
      " is; restoring that build lifts it.",
    );
  }
  if (revocation) {
    return reasonForm({
      path: path("restore"),
      title: "Restore this build",
      action: "Restore",
      hint: "It may be deployed and assigned to channels again; the builds made from it that inherited this revocation are restored with it.",
      bodyOf: (reason) => ({ reason }),
      done,
      announce,
    });
  }
  const at = h("input", { id: "revoke-at", name: "at", type: "datetime-local", step: "1", dataset: { focusKey: "release-at" } });
  return [
    scheduled
      ? h("p", { class: "notice" }, "A revocation is scheduled for ", exactTime(scheduled.at), `: ${scheduled.reason}`)
      : null,
    reasonForm({
      path: path("revoke"),
      title: "Revoke this build",
      action: "Revoke",
      hint: "It leaves every channel it heads, its artifacts are refused to deployers, and every build made from it is revoked with it.",
      extra: [{ node: h("div", { class: "field" }, h("label", { for: "revoke-at" }, "At (optional, your local time; empty: now)"), at) }],
      bodyOf: (reason) => (at.value ? { reason, at: new Date(at.value).toISOString() } : { reason }),
      done,
      announce,
    }),
  ];
}
