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

export function pageHeader(title, ...extra) {
  return h("div", { class: "page-head" }, h("h1", {}, title), h("div", { class: "page-actions" }, extra));
}
