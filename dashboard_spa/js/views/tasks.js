// Tasks: a live list with filters (status, agent, source), newest first, paged with the API's cursor.
import { h, replace, debounce } from "../dom.js";
import { listOf, query } from "../api.js";
import { ago, money, duration, sourceLabel, statusOfEvent } from "../format.js";
import { badge, setBadge, applyLifecycle, errorBox, empty, pageHeader } from "./common.js";

const STATUSES = ["", "queued", "running", "completed", "failed", "stopped", "timed_out"];
const SOURCES = ["", "chat", "github", "jira", "sentry", "webhook", "agent"];

export function tasksView(ctx, params) {
  const { api, live, streams } = ctx;
  const filters = {
    status: params.query?.get("status") || "",
    agent: params.query?.get("agent") || "",
    source: params.query?.get("source") || "",
    session_id: params.query?.get("session_id") || "",
  };
  let cursor = null;
  let destroyed = false;
  const rows = new Map(); // task_id -> {task, tr, statusEl, costEl}

  const select = (name, options) => h("select", { name, testid: `filter-${name}`, onchange: (e) => setFilter(name, e.target.value) },
    options.map((o) => h("option", { value: o, selected: filters[name] === o }, o ? o.replace("_", " ") : `any ${name}`)));
  const agentInput = h("input", { name: "agent", placeholder: "agent", value: filters.agent, testid: "filter-agent", size: 10,
    oninput: debounce((e) => setFilter("agent", e.target.value.trim()), 400) });
  const tbody = h("tbody", {});
  const table = h("table", { class: "table tasks-table", testid: "tasks-table" },
    h("thead", {}, h("tr", {}, ["Status", "Task", "Agent", "Source", "Cost", "Duration", "Created"].map((c) => h("th", {}, c)))),
    tbody);
  const more = h("button", { class: "btn btn-ghost", testid: "tasks-more", hidden: true, onclick: () => load(true) }, "Load more");
  const status = h("div", {});
  const el = h("div", { class: "page", testid: "tasks-view" },
    pageHeader("Tasks", h("button", { class: "btn btn-small btn-ghost", testid: "tasks-refresh", onclick: () => load() }, "Refresh")),
    h("div", { class: "filters", testid: "task-filters" }, select("status", STATUSES), agentInput, select("source", SOURCES),
      filters.session_id ? h("span", { class: "chip" }, `session ${filters.session_id.slice(0, 8)}`,
        h("button", { class: "chip-x", onclick: () => setFilter("session_id", "") }, "×")) : null),
    status, h("div", { class: "table-wrap" }, table), more);

  function setFilter(name, value) {
    filters[name] = value;
    const q = query(filters);
    history.replaceState(null, "", `#/tasks${q}`);
    load();
  }

  function row(task) {
    const statusEl = badge(task.status, "task-row-status");
    const costEl = h("td", { class: "num" }, money(task.cost_usd || 0));
    const durEl = h("td", { class: "num" }, task.duration_ms ? duration(task.duration_ms) : "—");
    const tr = h("tr", { testid: "task-row", dataset: { taskId: task.task_id, status: task.status } },
      h("td", {}, statusEl),
      h("td", { class: "task-title" }, h("a", { href: `#/tasks/${encodeURIComponent(task.task_id)}`, testid: "task-link" },
        task.title || task.prompt?.slice(0, 80) || task.task_id),
      task.parent_task_id ? h("span", { class: "muted small" }, " ↳ sub-task") : null),
      h("td", {}, task.agent || "—"),
      h("td", {}, sourceLabel(task)),
      costEl, durEl,
      h("td", { class: "muted", title: task.created_at || "" }, ago(task.created_at)));
    return { task, tr, statusEl, costEl, durEl };
  }

  async function load(append = false) {
    if (!append) cursor = null;
    replace(status);
    try {
      const data = await api.get(`/api/tasks${query({ ...filters, limit: 50, cursor: append ? cursor : null })}`);
      if (destroyed) return;
      const items = listOf(data, "tasks");
      cursor = data?.cursor || data?.next_cursor || null;
      if (!append) {
        rows.clear();
        replace(tbody);
      }
      for (const task of items) {
        if (rows.has(task.task_id)) continue;
        const r = row(task);
        rows.set(task.task_id, r);
        tbody.append(r.tr);
      }
      more.hidden = !cursor;
      if (!rows.size) status.append(empty("No tasks match."));
    } catch (err) {
      replace(status, errorBox(err));
    }
  }
  const reload = debounce(() => load(), 1000);

  const offAny = streams.onAny((event) => {
    const r = rows.get(event.task_id);
    if (r) {
      if (applyLifecycle(r.task, event)) {
        setBadge(r.statusEl, r.task.status);
        r.tr.dataset.status = r.task.status;
        r.costEl.textContent = money(r.task.cost_usd || 0);
        if (r.task.duration_ms) r.durEl.textContent = duration(r.task.duration_ms);
        if (filters.status && r.task.status !== filters.status) reload();
      }
    } else if (event.type === "task.created" || statusOfEvent(event.type)) {
      reload(); // a task we do not list yet: it may belong on this page
    }
  });
  const releaseAll = live.subscribe({ kind: "all" });
  // Without the socket, poll.
  const poll = setInterval(() => { if (live.state !== "online") load(); }, 15000);

  load();
  return {
    el,
    destroy() {
      destroyed = true;
      offAny();
      releaseAll();
      reload.cancel();
      clearInterval(poll);
    },
  };
}
