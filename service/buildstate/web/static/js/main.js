// The dashboard shell: routing, the live feed, the sign-in guard, announcements and ticking clocks.

import { forgetToken, token, unauthorized } from "./api.js";
import { relativeTime } from "./format.js";
import { LiveFeed, headSeq } from "./live.js";
import { currentRoute, href, navigate } from "./router.js";
import { buildView } from "./views/build.js";
import { channelView, channelsView } from "./views/channels.js";
import { failuresView } from "./views/failures.js";
import { matrixView } from "./views/matrix.js";
import { notFoundView } from "./views/not-found.js";
import { signInView } from "./views/signin.js";

const VIEWS = {
  matrix: matrixView,
  build: buildView,
  failures: failuresView,
  channels: channelsView,
  channel: channelView,
  "not-found": notFoundView,
};
const LIVE_TEXT = {
  off: "Not live",
  connecting: "Connecting…",
  live: "Live",
  polling: "Live (polling)",
  reconnecting: "Reconnecting…",
};

const main = document.getElementById("main");
const liveStatus = document.getElementById("live-status");
const announcer = document.getElementById("announcer");
const signOut = document.getElementById("sign-out");

let current = null;
let renderCount = 0;

const live = new LiveFeed({
  onEvent: (event) => current?.onEvent?.(event),
  onState: (mode, detail) => {
    liveStatus.dataset.state = mode;
    liveStatus.textContent = LIVE_TEXT[mode] ?? mode;
    liveStatus.title = detail?.reason ? `Last problem: ${detail.reason}` : "";
  },
});

/** Say something to screen readers (aria-live), without moving focus. */
function announce(text) {
  announcer.textContent = "";
  // Set it a moment later, so that the same words twice in a row are announced twice.
  window.setTimeout(() => {
    announcer.textContent = text;
  }, 50);
}

/** Follow the feed from the newest event; called by a page before it loads its data. */
async function followLive() {
  if (live.running) return;
  const seq = await headSeq();
  live.start(seq);
}

function setTitle(text) {
  document.title = text ? `${text} · buildstate` : "buildstate";
}

function markNav(name) {
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

async function render() {
  const route = currentRoute();
  if (route.name !== "sign-in" && token() === null) {
    // No session: every page's data needs one, so go to sign-in before any API call (which would be a 401).
    unauthorized();
    return;
  }
  renderCount += 1;
  const mine = renderCount;
  current?.destroy?.();
  current = null;
  markNav(route.name === "channel" ? "channels" : route.name);
  const signedOut = route.name === "sign-in";
  document.body.classList.toggle("signed-out", signedOut);
  signOut.hidden = signedOut || token() === null;
  if (signedOut) live.stop();
  const view = signedOut ? signInView : VIEWS[route.name];
  const context = {
    main,
    route,
    announce,
    setTitle,
    followLive,
    isCurrent: () => mine === renderCount,
    navigate,
  };
  current = view(context);
  // Focus the new page's heading, so keyboard and screen-reader users start at the top of what changed.
  const focused = document.activeElement;
  if (renderCount > 1 && (!main.contains(focused) || focused === main)) main.querySelector("h1")?.focus();
}

window.addEventListener("hashchange", render);

window.addEventListener("buildstate:unauthorized", (event) => {
  live.stop();
  const route = currentRoute();
  if (route.name === "sign-in") return;
  const params = { next: route.hash, expired: event.detail?.expired ? "1" : "" };
  navigate(href("/sign-in", params), { replace: true });
  render();
});

signOut.addEventListener("click", () => {
  forgetToken();
  live.stop();
  navigate(href("/sign-in"));
});

document.querySelector("[data-skip]")?.addEventListener("click", (event) => {
  event.preventDefault();
  main.querySelector("h1")?.focus();
});

// Relative times ("3 min ago") stay true while the page is open.
window.setInterval(() => {
  for (const node of document.querySelectorAll("time[data-relative]")) {
    node.textContent = relativeTime(node.dateTime);
  }
}, 15000);

render();
