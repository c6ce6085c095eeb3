// Renders a task's events (in seq order) as a conversation: assistant text as sanitised Markdown, thinking and
// tool calls collapsed, each tool result inside its call, stderr and system notices small, and a footer with
// the cost and duration when the task ends.
import { h, details } from "./dom.js";
import { renderMarkdown } from "./markdown.js";
import { money, duration } from "./format.js";

const MAX_TOOL_TEXT = 20000;

function clip(text, max = MAX_TOOL_TEXT) {
  const s = String(text ?? "");
  return s.length > max ? `${s.slice(0, max)}\n… (${s.length - max} more characters)` : s;
}

function toolSummary(block) {
  const input = block.input || {};
  const hint = input.command || input.file_path || input.path || input.pattern || input.url || input.description
    || input.prompt || "";
  const line = String(hint).split("\n")[0];
  return line ? `${block.name}: ${line.length > 90 ? `${line.slice(0, 89)}…` : line}` : String(block.name || "tool");
}

function resultText(content) {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content.map((c) => (c?.type === "text" ? c.text : c?.type ? `[${c.type}]` : JSON.stringify(c))).join("\n");
  }
  return content == null ? "" : JSON.stringify(content, null, 2);
}

export class Transcript {
  /**
   * @param {HTMLElement} container
   * @param {{verbose?: boolean, onEnd?: (event) => void}} options  verbose: also system lines and the final result
   */
  constructor(container, { verbose = false, onEnd } = {}) {
    this.el = container;
    this.verbose = verbose;
    this.onEnd = onEnd;
    this.tools = new Map(); // tool_use_id -> element for its result
    this.texts = 0;
    this.ended = null;
  }

  add(event) {
    try {
      this.#add(event);
    } catch (err) {
      console.error("could not render event", event, err);
    }
  }

  #add(event) {
    switch (event.type) {
      case "task.created":
        if (this.verbose) this.#meta("Queued", event);
        break;
      case "task.started":
        if (this.verbose) this.#meta("Started", event);
        break;
      case "task.output":
        this.#output(event.payload || {}, event);
        break;
      case "task.completed":
      case "task.failed":
      case "task.stopped":
        this.#end(event);
        break;
      default:
        break;
    }
  }

  #meta(text, event, cls = "") {
    this.el.append(h("div", { class: ["tx-meta", cls], dataset: { seq: event.seq } }, text));
  }

  #output(payload, event) {
    const kind = payload.kind;
    const data = payload.data || {};
    if (kind === "text" || kind === "stderr") {
      const text = payload.text ?? "";
      if (!text) return;
      const pre = h("pre", { class: kind === "stderr" ? "tx-stderr" : "tx-text", dataset: { seq: event.seq } }, clip(text));
      this.el.append(kind === "stderr" ? details("stderr", pre, { cls: "tx-block tx-stderr-block" }) : pre);
      return;
    }
    const type = kind || data.type;
    if (type === "assistant") this.#assistant(data, event);
    else if (type === "user") this.#user(data, event);
    else if (type === "system") this.#system(data, event);
    else if (type === "result") this.#result(data, event);
  }

  #assistant(data, event) {
    const content = data.message?.content;
    const blocks = Array.isArray(content) ? content : typeof content === "string" ? [{ type: "text", text: content }] : [];
    const sub = data.parent_tool_use_id ? " tx-sub" : "";
    for (const block of blocks) {
      if (block.type === "text" && block.text) {
        this.texts += 1;
        const md = renderMarkdown(block.text, `md tx-assistant${sub}`);
        md.dataset.testid = "assistant-text";
        md.dataset.seq = event.seq;
        this.el.append(md);
      } else if (block.type === "thinking" && (block.thinking || block.text)) {
        this.el.append(details("Thinking", h("pre", { class: "tx-thinking" }, clip(block.thinking || block.text)),
          { cls: `tx-block tx-think${sub}` }));
      } else if (block.type === "tool_use") {
        const result = h("div", { class: "tx-tool-result" }, h("span", { class: "muted" }, "waiting for result…"));
        const body = h("div", {},
          h("div", { class: "tx-label" }, "Input"),
          h("pre", { class: "tx-tool-input" }, clip(JSON.stringify(block.input ?? {}, null, 2))),
          h("div", { class: "tx-label" }, "Result"),
          result);
        const el = details(toolSummary(block), body, { cls: `tx-block tx-tool${sub}`, testid: "tool-call" });
        el.dataset.seq = event.seq;
        this.el.append(el);
        if (block.id) this.tools.set(block.id, { el, result });
      }
    }
  }

  #user(data, event) {
    const content = data.message?.content;
    if (typeof content === "string") {
      if (content.trim()) this.#meta(content, event, "tx-user-note");
      return;
    }
    for (const block of Array.isArray(content) ? content : []) {
      if (block.type === "tool_result") {
        const text = clip(resultText(block.content));
        const pre = h("pre", { class: ["tx-tool-output", block.is_error && "tx-error"] }, text || "(no output)");
        const known = this.tools.get(block.tool_use_id);
        if (known) {
          known.result.replaceChildren(pre);
          if (block.is_error) known.el.classList.add("tx-tool-failed");
        } else {
          this.el.append(details(block.is_error ? "Tool error" : "Tool result", pre,
            { cls: ["tx-block", "tx-tool", block.is_error ? "tx-tool-failed" : ""].join(" ") }));
        }
      } else if (block.type === "text" && block.text && this.verbose) {
        this.#meta(block.text, event, "tx-user-note");
      }
    }
  }

  #system(data, event) {
    const subtype = data.subtype;
    if (subtype === "init") {
      if (this.verbose) {
        const tools = Array.isArray(data.tools) ? data.tools.join(", ") : "";
        this.#meta(`Claude Code ${data.claude_code_version || ""} · ${data.model || ""} · ${data.permissionMode || ""}`
          + (tools ? ` · tools: ${tools}` : ""), event);
      }
    } else if (subtype === "api_retry") {
      this.#meta(`API retry${data.attempt ? ` ${data.attempt}` : ""}${data.error ? `: ${data.error}` : ""}`, event, "tx-warn");
    } else if (subtype === "permission_denied") {
      this.#meta(`Permission denied${data.tool_name ? `: ${data.tool_name}` : ""}`, event, "tx-warn");
    } else if (subtype === "compact_boundary") {
      this.#meta("Conversation compacted", event);
    }
  }

  #result(data, event) {
    // The CLI's last line. Its text repeats the last assistant text; show it only when nothing else was shown.
    if (data.is_error) {
      const errors = Array.isArray(data.errors) ? data.errors.join("\n") : data.result || data.subtype;
      if (errors) this.el.append(h("div", { class: "tx-error-box", dataset: { seq: event.seq } }, String(errors)));
    } else if (data.result && (this.texts === 0 || this.verbose)) {
      if (this.texts === 0) {
        const md = renderMarkdown(data.result, "md tx-assistant");
        md.dataset.testid = "assistant-text";
        this.el.append(md);
        this.texts += 1;
      }
    }
  }

  #end(event) {
    const p = event.payload || {};
    this.ended = event;
    const status = event.type.replace("task.", "");
    const bits = [];
    if (p.cost_usd !== undefined && p.cost_usd !== null) bits.push(money(p.cost_usd));
    if (p.duration_ms) bits.push(duration(p.duration_ms));
    if (p.num_turns) bits.push(`${p.num_turns} turn${p.num_turns === 1 ? "" : "s"}`);
    if (status !== "completed" && p.error) {
      this.el.append(h("div", { class: "tx-error-box", testid: "reply-error" }, String(p.error)));
    }
    if (this.texts === 0 && p.result) {
      const md = renderMarkdown(p.result, "md tx-assistant");
      md.dataset.testid = "assistant-text";
      this.el.append(md);
      this.texts += 1;
    }
    this.el.querySelector(":scope > .tx-footer")?.remove(); // a footer drawn from the task record before
    this.el.append(h("div", { class: ["tx-footer", `tx-${status}`], testid: "reply-footer", dataset: { status } },
      h("span", { class: ["badge", `badge-${status}`] }, status),
      bits.length ? h("span", { class: "tx-cost", testid: "reply-cost" }, bits.join(" · ")) : null));
    this.onEnd?.(event);
  }
}
