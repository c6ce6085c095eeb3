// Formatting of money, durations, times and statuses.

export function money(value, digits) {
  const n = Number(value);
  if (!Number.isFinite(n)) return "—";
  const d = digits ?? (n !== 0 && Math.abs(n) < 0.1 ? 4 : 2);
  return `$${n.toFixed(d)}`;
}

export function duration(ms) {
  const n = Number(ms);
  if (!Number.isFinite(n) || n < 0) return "—";
  if (n < 1000) return `${Math.round(n)} ms`;
  const s = n / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function parseTime(value) {
  if (!value) return null;
  const t = typeof value === "number" ? (value > 1e12 ? value : value * 1000) : Date.parse(value);
  return Number.isFinite(t) ? new Date(t) : null;
}

export function ago(value) {
  const t = parseTime(value);
  if (!t) return "—";
  const s = Math.round((Date.now() - t.getTime()) / 1000);
  if (s < 5) return "just now";
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return t.toLocaleDateString();
}

export function dateTime(value) {
  const t = parseTime(value);
  return t ? t.toLocaleString() : "—";
}

export function count(n) {
  const v = Number(n);
  return Number.isFinite(v) ? v.toLocaleString() : "—";
}

export const ACTIVE = new Set(["queued", "running"]);
export const TERMINAL_EVENTS = new Set(["task.completed", "task.failed", "task.stopped"]);

export function isActive(status) {
  return ACTIVE.has(status);
}

export function statusOfEvent(type) {
  return {
    "task.created": "queued",
    "task.started": "running",
    "task.completed": "completed",
    "task.failed": "failed",
    "task.stopped": "stopped",
  }[type];
}

export function sourceLabel(task) {
  if (!task) return "—";
  const source = task.source || "chat";
  const names = { github: "GitHub", jira: "Jira", sentry: "Sentry", chat: "Chat", agent: "Agent" };
  if (source === "webhook") return task.source_name ? `webhook: ${task.source_name}` : "webhook";
  return names[source] || source;
}

export function shortId(id) {
  return id ? String(id).slice(0, 8) : "—";
}
