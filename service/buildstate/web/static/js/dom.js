// Building DOM nodes from data without ever parsing data as markup.
//
// Every string handed to h() becomes a text node (or an attribute set through setAttribute), so a build
// message like "<img onerror=...>" shows as those characters. Nothing in the dashboard parses a string as
// HTML; tests/web/test_ui_routes.py checks that no such DOM call creeps in.

const SVG_NS = "http://www.w3.org/2000/svg";

function append(parent, child) {
  if (child === null || child === undefined || child === false || child === true) return;
  if (Array.isArray(child)) {
    for (const item of child) append(parent, item);
  } else if (child instanceof Node) {
    parent.append(child);
  } else {
    parent.append(document.createTextNode(String(child)));
  }
}

function apply(node, props) {
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") {
      node.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    } else if (key === "style") {
      // Through CSSOM, which the Content-Security-Policy allows (style attributes in markup it refuses).
      for (const [property, data] of Object.entries(value)) node.style.setProperty(property, String(data));
    } else if (key === "dataset") {
      for (const [name, data] of Object.entries(value)) node.dataset[name] = String(data);
    } else if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === "value" && "value" in node) {
      node.value = value;
    } else {
      node.setAttribute(key, value === true ? "" : String(value));
    }
  }
  return node;
}

/** An HTML element: h("a", {href: "#/", class: "x"}, "text", otherNode, [more]). */
export function h(tag, props, ...children) {
  const node = apply(document.createElement(tag), props);
  append(node, children);
  return node;
}

/** An SVG element, for the small charts. */
export function s(tag, props, ...children) {
  const node = apply(document.createElementNS(SVG_NS, tag), props);
  append(node, children);
  return node;
}

/** Replace a node's children, keeping keyboard focus on the "same" element if it was inside. */
export function fill(parent, ...children) {
  const key = focusKeyWithin(parent);
  parent.replaceChildren();
  append(parent, children);
  restoreFocus(parent, key);
}

/** Swap one node for another, keeping keyboard focus as fill() does. */
export function swap(oldNode, newNode) {
  const key = focusKeyWithin(oldNode);
  oldNode.replaceWith(newNode);
  restoreFocus(newNode, key);
  return newNode;
}

function focusKeyWithin(node) {
  const active = document.activeElement;
  if (!active || !node.contains(active) || active === node) return null;
  return active.dataset?.focusKey ?? null;
}

function restoreFocus(root, key) {
  if (key === null) return;
  const target = root.querySelector(`[data-focus-key="${CSS.escape(key)}"]`);
  if (target) target.focus({ preventScroll: true });
}

/** An href for a URL taken from data: only http(s) links survive; anything else (javascript:, data:) is dropped. */
export function safeHref(url) {
  if (typeof url !== "string" || url === "") return null;
  try {
    const parsed = new URL(url, window.location.href);
    return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
  } catch {
    return null;
  }
}
