// Pieces shared by the views.
import { h } from "../dom.js";
import { money, duration, statusOfEvent, TERMINAL_EVENTS } from "../format.js";

export function badge(status, testid) {
  const s = status || "unknown";
  return h("span", { class: ["badge", `badge-${s}`], testid, dataset: { status: s } }, s.replace("_", " "));
}

export function setBadge(el, status) {
  el.className = `badge badge-${status}`;
  el.dataset.status = status;
  el.textContent = String(status).replace("_", " ");
}

export function loading(text = "Loading…") {
  return h("div", { class: "loading muted" }, text);
}

export function errorBox(err, testid = "error") {
  return h("div", { class: "error-box", testid, role: "alert" }, err?.message || String(err));
}

export function empty(text) {
  return h("div", { class: "empty muted" }, text);
}

/** The cost/duration line of a finished task, from its record. */
export function costLine(task) {
  const bits = [];
  if (task.cost_usd !== undefined && task.cost_usd !== null) bits.push(money(task.cost_usd));
  if (task.duration_ms) bits.push(duration(task.duration_ms));
  if (task.num_turns) bits.push(`${task.num_turns} turn${task.num_turns === 1 ? "" : "s"}`);
  return bits.join(" · ");
}

/** Apply a lifecycle event to a task record held by a view; returns true when something changed. */
export function applyLifecycle(task, event) {
  const status = statusOfEvent(event.type);
  if (!status || !task) return false;
  // Never move a finished task back (events may arrive late or twice).
  if (["completed", "failed", "stopped", "timed_out"].includes(task.status) && !TERMINAL_EVENTS.has(event.type)) {
    return false;
  }
  task.status = status;
  const p = event.payload || {};
  if (TERMINAL_EVENTS.has(event.type)) {
    for (const key of ["cost_usd", "duration_ms", "num_turns", "result", "error"]) {
      if (p[key] !== undefined && p[key] !== null) task[key] = p[key];
    }
    task.finished_at = task.finished_at || event.ts;
  } else if (event.type === "task.started") {
    task.started_at = task.started_at || event.ts;
  }
  return true;
}

/** The task record from GET /api/tasks/{id}, whatever the nesting. */
export function unwrapTask(data) {
  if (!data || typeof data !== "object") return { task: null, output: [] };
  const task = data.task && typeof data.task === "object" ? { ...data.task } : { ...data };
  const output = Array.isArray(data.output) ? data.output : Array.isArray(task.output) ? task.output : [];
  delete task.output;
  return { task, output };
}

/**
 * A task and all of its stored output: GET /api/tasks/{id} returns at most one page of output (`has_more`), so
 * keep asking with after_seq until it is all here. Each page goes to `onPage(output, task)` as it arrives (the
 * first one shows at once); returns the task record of the first page.
 */
export async function loadTask(api, taskId, { after = 0, onPage = () => {}, cancelled = () => false, maxPages = 1000 } = {}) {
  let seq = Number(after) || 0;
  let record = null;
  for (let page = 0; page < maxPages; page += 1) {
    const data = await api.get(`/api/tasks/${encodeURIComponent(taskId)}${seq ? `?after_seq=${seq}` : ""}`);
    const { task, output } = unwrapTask(data);
    record = record || task;
    if (cancelled()) break;
    onPage(output, task);
    if (!data || !data.has_more) break;
    const next = Number(data.last_seq ?? (output.length ? output[output.length - 1].seq : seq));
    if (!(next > seq)) break;
    seq = next;
  }
  return record;
}

export function pageHeader(title, ...extra) {
  return h("div", { class: "page-head" }, h("h1", {}, title), h("div", { class: "page-actions" }, extra));
}
