// Markdown -> sanitised DOM. Text from webhooks and models is untrusted: marked renders it, DOMPurify strips
// anything active (scripts, handlers, javascript: URLs, forms, styles), and links open in a new tab.
import { Marked } from "../vendor/marked.esm.js";
import DOMPurify from "../vendor/purify.es.mjs";

const marked = new Marked({ gfm: true, breaks: true, async: false });

const CONFIG = {
  USE_PROFILE: { html: true },
  FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select", "iframe", "img", "video", "audio"],
  FORBID_ATTR: ["style", "class", "id"],
  ALLOW_DATA_ATTR: false,
  RETURN_DOM_FRAGMENT: true,
};

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
});

/** A <div class="md"> holding the rendered, sanitised Markdown. */
export function renderMarkdown(text, cls = "md") {
  const div = document.createElement("div");
  div.className = cls;
  let html;
  try {
    html = marked.parse(String(text ?? ""));
  } catch {
    div.textContent = String(text ?? "");
    return div;
  }
  div.append(DOMPurify.sanitize(html, CONFIG));
  return div;
}
