// Routes live in the URL hash (#/path?query), so any view, filters included, is a link to share, and the
// service only has to serve one page.

/** A path segment as typed: a malformed escape ("%E0") is kept as it is rather than breaking the page. */
function decodePart(part) {
  try {
    return decodeURIComponent(part);
  } catch {
    return part;
  }
}

export function currentRoute() {
  const raw = window.location.hash.replace(/^#/, "") || "/";
  const [path, search = ""] = raw.split("?", 2);
  const params = new URLSearchParams(search);
  const parts = path.split("/").filter(Boolean).map(decodePart);
  if (parts.length === 0) return { name: "matrix", params, parts, hash: `#${raw}` };
  if (parts[0] === "sign-in") return { name: "sign-in", params, parts, hash: `#${raw}` };
  if (parts[0] === "failures") return { name: "failures", params, parts, hash: `#${raw}` };
  if (parts[0] === "channels" && parts[1]) return { name: "channel", params, parts, hash: `#${raw}` };
  if (parts[0] === "channels") return { name: "channels", params, parts, hash: `#${raw}` };
  if (parts[0] === "build" && parts[1]) return { name: "build", ref: parts[1], params, parts, hash: `#${raw}` };
  return { name: "not-found", params, parts, hash: `#${raw}` };
}

export function href(path, params = {}) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") search.set(key, String(value));
  }
  const text = search.toString();
  return `#${path}${text ? `?${text}` : ""}`;
}

export function navigate(target, { replace = false } = {}) {
  if (replace) {
    const url = new URL(window.location.href);
    url.hash = target;
    window.history.replaceState(null, "", url);
  } else {
    window.location.hash = target;
  }
}
