// Costs: today and this month, budget use against the caps, and charts by day, agent, source and session.
import { h, replace } from "../dom.js";
import { listOf } from "../api.js";
import { money, count, shortId } from "../format.js";
import { errorBox, loading, empty, pageHeader } from "./common.js";

const num = (v) => (Number.isFinite(Number(v)) ? Number(v) : 0);
const costOf = (v) => (typeof v === "number" ? v : num(v?.cost_usd ?? v?.cost ?? v?.total_usd ?? v?.total));

/**
 * A breakdown as [{label, cost, tasks}], from a list of records ({day|agent|source|session_id|key|name, cost_usd})
 * or a map ({label: cost | {cost_usd, tasks}}).
 */
export function series(data, labelKeys = ["day", "agent", "source", "session_id", "name", "key", "label"]) {
  if (!data) return [];
  if (Array.isArray(data)) {
    return data.map((r) => {
      const key = labelKeys.find((k) => r?.[k] !== undefined && r?.[k] !== null);
      const label = key ? String(r[key]).replace(/^(AGENT|SOURCE|SESSION)#/, "") : "?";
      return { label, cost: costOf(r), tasks: r?.tasks, title: r?.title };
    });
  }
  if (typeof data === "object") {
    return Object.entries(data).map(([label, v]) => ({ label, cost: costOf(v), tasks: v?.tasks, title: v?.title }));
  }
  return [];
}

function pick(data, ...names) {
  for (const n of names) {
    const parts = n.split(".");
    let v = data;
    for (const p of parts) v = v?.[p];
    if (v !== undefined && v !== null) return v;
  }
  return undefined;
}

function barList(rows, { testid, link } = {}) {
  if (!rows.length) return empty("Nothing spent yet.");
  const max = Math.max(...rows.map((r) => r.cost), 1e-9);
  return h("ul", { class: "bars", testid }, rows.map((r) => {
    const fill = h("span", { class: "bar-fill" });
    fill.style.width = `${Math.max(1, (r.cost / max) * 100).toFixed(1)}%`;
    const label = link ? h("a", { href: link(r) }, r.title || r.label) : (r.title || r.label);
    return h("li", { class: "bar-row" },
      h("span", { class: "bar-label", title: r.label }, label),
      h("span", { class: "bar-track" }, fill),
      h("span", { class: "bar-value" }, money(r.cost), r.tasks !== undefined ? h("span", { class: "muted small" }, ` · ${count(r.tasks)} tasks`) : null));
  }));
}

/** Vertical bars per day (the last 31 days with data), drawn with CSS: crisp at any width, no library. */
function dayChart(rows) {
  if (!rows.length) return empty("No spending recorded yet.");
  const days = rows.slice().sort((a, b) => a.label.localeCompare(b.label)).slice(-31);
  const max = Math.max(...days.map((d) => d.cost), 1e-9);
  const every = Math.ceil(days.length / 8);
  const last = days.length - 1;
  const showLabel = (i) => i % every === 0 ? last - i >= every / 2 || i === last : i === last;
  return h("div", { class: "day-chart", role: "img", "aria-label": "Cost by day", testid: "cost-by-day" },
    h("div", { class: "day-max muted small" }, money(max)),
    h("div", { class: "day-bars" }, days.map((d, i) => {
      const bar = h("span", { class: "day-bar", title: `${d.label}: ${money(d.cost)}` });
      bar.style.height = `${d.cost > 0 ? Math.max(1.5, (d.cost / max) * 100) : 0}%`;
      return h("div", { class: "day-col", testid: "cost-day", dataset: { day: d.label } }, bar,
        h("span", { class: "day-label" }, showLabel(i) ? d.label.slice(5) : ""));
    })));
}

function meter(label, spent, cap, testid) {
  const ratio = cap > 0 ? spent / cap : 0;
  const fill = h("span", { class: ["meter-fill", ratio >= 1 ? "over" : ratio >= 0.8 ? "warn" : ""] });
  fill.style.width = `${spent > 0 ? Math.max(0.6, Math.min(100, ratio * 100)) : 0}%`;
  return h("div", { class: "meter", testid },
    h("div", { class: "meter-head" }, h("span", {}, label),
      h("span", {}, `${money(spent)} of ${money(cap)} (${Math.round(ratio * 100)}%)`)),
    h("div", { class: "meter-track" }, fill));
}

export function costsView(ctx) {
  const { api } = ctx;
  let destroyed = false;
  const content = h("div", {}, loading());
  const el = h("div", { class: "page", testid: "costs-view" },
    pageHeader("Costs", h("button", { class: "btn btn-small btn-ghost", onclick: () => load() }, "Refresh")), content);

  async function load() {
    let data;
    const titles = new Map();
    try {
      const [costs, sessions] = await Promise.all([
        api.get("/api/costs"),
        api.get("/api/sessions?limit=200").catch(() => null),
      ]);
      data = costs || {};
      for (const s of listOf(sessions, "sessions")) titles.set(s.session_id, s.title);
    } catch (err) {
      if (!destroyed) replace(content, errorBox(err));
      return;
    }
    if (destroyed) return;
    const today = costOf(pick(data, "today", "today_usd", "totals.today"));
    const month = costOf(pick(data, "month", "this_month", "month_usd", "totals.month"));
    const budget = pick(data, "budgets", "budget", "caps") || {};
    const dailyCap = num(pick(budget, "daily_usd", "daily_cap", "daily_budget_usd", "daily") ?? pick(data, "daily_budget_usd"));
    const taskCap = num(pick(budget, "task_usd", "task_cap", "task_budget_usd", "per_task") ?? pick(data, "task_budget_usd"));
    const monthCap = num(pick(budget, "monthly_usd", "monthly_cap", "monthly_budget_usd") ?? pick(data, "monthly_budget_usd"));
    const byDay = series(pick(data, "by_day", "daily"), ["day", "date", "key", "label"]);
    const byAgent = series(pick(data, "by_agent", "agents"), ["agent", "name", "key", "label"]);
    const bySource = series(pick(data, "by_source", "sources"), ["source", "name", "key", "label"]);
    const bySession = series(pick(data, "by_session", "sessions"), ["session_id", "name", "key", "label"])
      .sort((a, b) => b.cost - a.cost).slice(0, 15);
    for (const row of bySession) row.title = row.title || titles.get(row.label) || shortId(row.label);
    const todayTasks = pick(data, "today.tasks", "today_tasks");
    const days = pick(data, "days");
    replace(content,
      h("div", { class: "kpis" },
        h("div", { class: "kpi", testid: "cost-today" }, h("div", { class: "kpi-label" }, "Today"), h("div", { class: "kpi-value" }, money(today)),
          todayTasks !== undefined ? h("div", { class: "muted small" }, `${count(todayTasks)} tasks`) : null),
        h("div", { class: "kpi", testid: "cost-month" }, h("div", { class: "kpi-label" }, "This month"), h("div", { class: "kpi-value" }, money(month))),
        taskCap ? h("div", { class: "kpi", testid: "cost-task-cap" }, h("div", { class: "kpi-label" }, "Cap per task"), h("div", { class: "kpi-value" }, money(taskCap, 2))) : null),
      h("section", { class: "card", testid: "budget" }, h("h2", {}, "Budget"),
        dailyCap ? meter("Today against the daily cap", today, dailyCap, "budget-daily") : h("p", { class: "muted" }, "No daily cap set."),
        monthCap ? meter("This month against the monthly cap", month, monthCap, "budget-monthly") : null),
      h("section", { class: "card" }, h("h2", {}, days ? `By day (last ${days} days)` : "By day"), dayChart(byDay)),
      h("div", { class: "grid-2" },
        h("section", { class: "card" }, h("h2", {}, days ? `By agent (${days} days)` : "By agent"), barList(byAgent.sort((a, b) => b.cost - a.cost), { testid: "cost-by-agent" })),
        h("section", { class: "card" }, h("h2", {}, days ? `By source (${days} days)` : "By source"), barList(bySource.sort((a, b) => b.cost - a.cost), { testid: "cost-by-source" }))),
      h("section", { class: "card" }, h("h2", {}, "By session"),
        barList(bySession, { testid: "cost-by-session", link: (r) => `#/chat/${encodeURIComponent(r.label)}` })));
  }

  load();
  return { el, destroy() { destroyed = true; } };
}
