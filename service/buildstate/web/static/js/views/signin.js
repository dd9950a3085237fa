// Sign-in: POST /token with a username and password; the token goes to sessionStorage (see api.js).

import { signIn } from "../api.js";
import { h } from "../dom.js";

/** Where to go after signing in: only a page of this dashboard, never another site or sign-in again. */
function nextPage(params) {
  const next = params.get("next") ?? "";
  return next.startsWith("#/") && !next.startsWith("#/sign-in") ? next : "#/";
}

export function signInView({ main, route, setTitle, navigate }) {
  setTitle("Sign in");
  const error = h("p", { class: "form-error", role: "alert", id: "sign-in-error" });
  const username = h("input", {
    id: "username", name: "username", autocomplete: "username", required: true, autocapitalize: "none",
    spellcheck: "false",
  });
  const password = h("input", {
    id: "password", name: "password", type: "password", autocomplete: "current-password", required: true,
  });
  const submit = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h(
    "form",
    { class: "sign-in-form", "aria-describedby": "sign-in-error", novalidate: true },
    h("div", { class: "field" }, h("label", { for: "username" }, "Username"), username),
    h("div", { class: "field" }, h("label", { for: "password" }, "Password"), password),
    error,
    submit,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    if (!username.value.trim() || !password.value) {
      error.textContent = "Enter your username and password.";
      (username.value.trim() ? password : username).focus();
      return;
    }
    submit.disabled = true;
    submit.textContent = "Signing in…";
    try {
      await signIn(username.value.trim(), password.value);
      navigate(nextPage(route.params));
    } catch (problem) {
      const text = String(problem.message || "Sign-in failed.");
      error.textContent = `${text[0].toUpperCase()}${text.slice(1)}${/[.!?]$/.test(text) ? "" : "."}`;
      password.select();
      password.focus();
    } finally {
      submit.disabled = false;
      submit.textContent = "Sign in";
    }
  });
  const expired = route.params.get("expired") === "1";
  main.replaceChildren(
    h(
      "section",
      { class: "sign-in card", "aria-labelledby": "sign-in-title" },
      h("h1", { id: "sign-in-title", tabindex: "-1" }, "Sign in to buildstate"),
      h(
        "p",
        { class: "muted" },
        expired ? "Your session has ended. Sign in again to continue." : "Where every VM image build stands.",
      ),
      form,
    ),
  );
  username.focus();
  return {};
}
