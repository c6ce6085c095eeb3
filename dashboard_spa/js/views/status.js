// Status: the machine's queue depth, running tasks and concurrency limit, and recent webhook deliveries.
import { h, replace } from "../dom.js";
import { listOf } from "../api.js";
import { money, count, ago, dateTime, shortId } from "../format.js";
import { badge, errorBox, loading, empty, pageHeader } from "./common.js";

function pick(data, ...names) {
  for (const n of names) {
    let v = data;
    for (const p of n.split(".")) v = v?.[p];
    if (v !== undefined && v !== null) return v;
  }
  return undefined;
}

function kpi(label, value, testid, sub) {
  const long = String(value ?? "").length > 10;
  return h("div", { class: "kpi", testid }, h("div", { class: "kpi-label" }, label),
    h("div", { class: ["kpi-value", long && "kpi-value-long"] }, value ?? "—"),
    sub ? h("div", { class: "muted small" }, sub) : null);
}

export function statusView(ctx) {
  const { api, live } = ctx;
  let destroyed = false;
  const kpis = h("div", { class: "kpis", testid: "status-kpis" }, loading());
  const running = h("div", { testid: "running-tasks" });
  const deliveries = h("div", { testid: "deliveries" });
  const el = h("div", { class: "page", testid: "status-view" },
    pageHeader("Status", h("button", { class: "btn btn-small btn-ghost", onclick: () => load() }, "Refresh")),
    kpis,
    h("section", { class: "card" }, h("h2", {}, "Running now"), running),
    h("section", { class: "card" }, h("h2", {}, "Recent webhook deliveries"), deliveries));

  async function loadStatus() {
    try {
      const s = (await api.get("/api/status")) || {};
      if (destroyed) return;
      const limit = pick(s, "max_concurrent_tasks", "concurrency_limit");
      const waiting = pick(s, "queue.waiting", "queue_depth");
      const inFlight = pick(s, "queue.in_flight");
      const budgets = s.budgets || {};
      replace(kpis,
        kpi("Machine", pick(s, "machine_id") || ctx.config.machine_id || "—", "status-machine",
          pick(s, "version") ? `version ${s.version}` : null),
        kpi("Queue depth", waiting === undefined || waiting === null ? "—" : count(waiting), "status-queue",
          inFlight !== undefined && inFlight !== null ? `${count(inFlight)} in flight` : null),
        kpi("Running", count(pick(s, "running_tasks", "running") ?? 0), "status-running",
          limit ? `of ${limit} at once` : null),
        kpi("Queued", count(pick(s, "queued_tasks", "queued") ?? 0), "status-queued"),
        kpi("Concurrency limit", limit ?? "—", "status-limit"),
        kpi("Sessions", count(pick(s, "sessions") ?? 0), "status-sessions"),
        kpi("Cost today", money(pick(s, "cost_today_usd") ?? 0), "status-cost",
          budgets.daily_usd ? `of ${money(budgets.daily_usd, 2)} daily cap` : null),
        kpi("Live updates", live.state === "online" ? "Live" : live.state, "status-live"));
    } catch (err) {
      if (!destroyed) replace(kpis, errorBox(err));
    }
  }

  async function loadRunning() {
    try {
      const items = listOf(await api.get("/api/tasks?status=running&limit=50"), "tasks");
      if (destroyed) return;
      replace(running, items.length ? h("ul", { class: "plain-list" }, items.map((t) => h("li", {},
        badge(t.status), " ", h("a", { href: `#/tasks/${encodeURIComponent(t.task_id)}` }, t.title || shortId(t.task_id)),
        h("span", { class: "muted small" }, ` · ${t.agent} · started ${ago(t.started_at || t.created_at)}`)))) : empty("Nothing is running."));
    } catch (err) {
      if (!destroyed) replace(running, errorBox(err));
    }
  }

  async function loadDeliveries() {
    try {
      const items = listOf(await api.get("/api/events"), "events", "deliveries");
      if (destroyed) return;
      replace(deliveries, items.length ? h("div", { class: "table-wrap" }, h("table", { class: "table", testid: "deliveries-table" },
        h("thead", {}, h("tr", {}, ["When", "Sender", "Event", "Decision", "Reason", "Task"].map((c) => h("th", {}, c)))),
        h("tbody", {}, items.map((d) => h("tr", { testid: "delivery-row" },
          h("td", { title: dateTime(d.received_at) }, ago(d.received_at)),
          h("td", {}, d.sender || "—"),
          h("td", {}, [d.event, d.action].filter(Boolean).join(" / ") || "—"),
          h("td", {}, badge(d.decision || "unknown")),
          h("td", { class: "reason" }, d.reason || ""),
          h("td", {}, d.task_id ? h("a", { href: `#/tasks/${encodeURIComponent(d.task_id)}` }, shortId(d.task_id)) : "—")))))) : empty("No webhook deliveries yet."));
    } catch (err) {
      if (!destroyed) replace(deliveries, errorBox(err));
    }
  }

  function load() {
    loadStatus();
    loadRunning();
    loadDeliveries();
  }
  load();
  const timer = setInterval(load, 10000);
  return { el, destroy() { destroyed = true; clearInterval(timer); } };
}
