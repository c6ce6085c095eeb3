// Tiny DOM helpers. Text always goes in as text nodes; the only HTML that reaches the page is sanitised
// Markdown (markdown.js).

/**
 * h("div", {class: "x", dataset: {testid: "y"}, onclick: fn}, "text", child, [more, children])
 * Attributes: `class`, `dataset`, `style` (an object, applied through CSSOM), `on<event>` handlers, booleans
 * (true sets, false/null/undefined omits), anything else via setAttribute.
 */
export function h(tag, attrs = {}, ...children) {
  const el = tag.includes(":") || SVG_TAGS.has(tag)
    ? document.createElementNS("http://www.w3.org/2000/svg", tag)
    : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "testid") el.dataset.testid = value;
    else if (key === "style" && typeof value === "object") Object.assign(el.style, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "value" && "value" in el) el.value = value;
    else if (key === "checked" && "checked" in el) el.checked = Boolean(value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

const SVG_TAGS = new Set(["svg", "g", "rect", "line", "text", "title", "path", "polyline"]);

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function replace(el, ...children) {
  clear(el);
  return append(el, children);
}

/** A short-lived message at the bottom of the screen. */
export function toast(message, kind = "info") {
  let host = document.querySelector(".toasts");
  if (!host) {
    host = h("div", { class: "toasts", role: "status", "aria-live": "polite" });
    document.body.append(host);
  }
  const item = h("div", { class: ["toast", `toast-${kind}`], testid: "toast" }, message);
  host.append(item);
  setTimeout(() => item.remove(), kind === "error" ? 8000 : 4000);
}

/** Debounce: call fn at most once per `ms`, after the last call. */
export function debounce(fn, ms) {
  let timer = null;
  const wrapped = (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
  wrapped.cancel = () => clearTimeout(timer);
  return wrapped;
}

/** A <details> block with a summary line. */
export function details(summary, body, { open = false, cls = "", testid } = {}) {
  return h("details", { class: cls, open, testid }, h("summary", {}, summary), body);
}
